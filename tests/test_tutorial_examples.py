"""Quick runs of examples/adding_problem.py and examples/gradient_flow.py at tiny sizes: they run
end to end, return their metrics and save their plots. (Learning quality is not asserted at these
sizes; the README quotes full runs.)"""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adding_problem_example(tmp_path):
    plot = tmp_path / "adding.png"
    results = load("adding_problem").main(["--lengths", "6", "8", "--hidden", "4", "--batch",
                                           "4", "--steps", "3", "--plot", str(plot)])
    assert set(results) == {(T, name) for T in (6, 8) for name in ("LSTM", "Elman RNN")}
    assert all(np.isfinite(mse) and mse >= 0 for mse in results.values())
    if importlib.util.find_spec("matplotlib"):
        assert plot.read_bytes()[:4] == b"\x89PNG"


def test_gradient_flow_example(tmp_path):
    plot = tmp_path / "flow.png"
    ratios = load("gradient_flow").main(["--steps", "30", "--hidden", "16", "--plot", str(plot)])
    assert ratios["tanh RNN |dL/dh|"] < 1e-3 < ratios["LSTM |dL/dc|"]
    if importlib.util.find_spec("matplotlib"):
        assert plot.read_bytes()[:4] == b"\x89PNG"
    else:
        pytest.skip("matplotlib is not installed: the plot was skipped")
