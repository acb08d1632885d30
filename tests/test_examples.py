"""Smoke runs of the example scripts at a tiny size: they run end to end, return finite metrics
and save their plots. How well they learn is for their full runs (the README quotes them), not
for these."""
import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HAS_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None


def load_example(name):
    """The module examples/<name>.py, imported by its path (examples/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_char_lm(tmp_path):
    char_lm = load_example("char_lm")
    plot = tmp_path / "char_lm.png"
    metrics = char_lm.main(["--steps", "3", "--hidden", "8", "--seq-len", "10", "--batch", "4",
                            "--eval-every", "2", "--sample-every", "2", "--sample-len", "20",
                            "--plot", str(plot)])
    assert metrics["steps"] == 3
    for name in ("train_bits", "heldout_bits", "unigram_bits", "seconds"):
        assert math.isfinite(metrics[name]), name
    vocab, _ = char_lm.encode(char_lm.load_text())
    # a unigram model can do no worse than the uniform distribution over the vocabulary
    assert 0 < metrics["unigram_bits"] < math.log2(len(vocab))
    assert len(metrics["sample"]) == 20 and set(metrics["sample"]) <= set(vocab)
    assert plot.exists() == HAS_MATPLOTLIB


def test_forecast(tmp_path):
    pytest.importorskip("matplotlib")
    forecast = load_example("forecast")
    plot = tmp_path / "forecast.png"
    metrics = forecast.main(["--steps", "3", "--hidden", "4", "--seq-len", "20", "--batch", "4",
                             "--plot", str(plot)])
    assert metrics["steps"] == 3
    for name in ("model_mse", "naive_mse", "ratio", "seconds"):
        assert math.isfinite(metrics[name]), name
    assert metrics["naive_mse"] > 0
    assert metrics["ratio"] == pytest.approx(metrics["model_mse"] / metrics["naive_mse"])
    assert plot.exists()


def test_adding_problem(tmp_path):
    plot = tmp_path / "adding.png"
    results = load_example("adding_problem").main(
        ["--lengths", "6", "8", "--hidden", "4", "--batch", "4", "--steps", "3",
         "--plot", str(plot)])
    assert set(results) == {(T, name) for T in (6, 8) for name in ("LSTM", "Elman RNN")}
    assert all(math.isfinite(mse) and mse >= 0 for mse in results.values())
    assert plot.exists() == HAS_MATPLOTLIB


def test_gradient_flow(tmp_path):
    """Not trained, so this one's behaviour is deterministic and checked: the signal vanishes
    through the RNN and survives in the LSTM's cell."""
    plot = tmp_path / "flow.png"
    ratios = load_example("gradient_flow").main(["--steps", "30", "--hidden", "16",
                                                 "--plot", str(plot)])
    assert ratios["tanh RNN |dL/dh|"] < 1e-3 < ratios["LSTM |dL/dc|"]
    assert plot.exists() == HAS_MATPLOTLIB


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_feedback_lm(backend):
    results = load_example("feedback_lm").main(
        ["--steps", "3", "--hidden", "16", "--seq-len", "10", "--batch", "4",
         "--heldout-chars", "200", "--backend", backend])
    stacked, feedback = results["stacked"], results["feedback"]
    assert feedback["hidden"] < stacked["hidden"]       # smaller, to pay for weight_fb_l0
    assert abs(feedback["parameters"] - stacked["parameters"]) <= 0.1 * stacked["parameters"]
    for r in (stacked, feedback):
        assert math.isfinite(r["heldout_bits"]) and r["heldout_bits"] > 0
