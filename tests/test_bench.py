"""The benchmark's own arithmetic: FLOP counts, the goal summary and the memory probe. (Speed
itself is measured, never asserted: `python -m fastlstm bench`, `pytest benchmarks`.)"""
import importlib.util
import pathlib
import sys

import numpy as np
import pytest

import fastlstm
from fastlstm import bench


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm", "lstmp"])
def test_gemm_flops_count_every_product_of_a_training_step(cell):
    # Counted independently: the shapes of the weights each product multiplies by.
    T, B, H = 7, 3, 8
    layer = bench.CELLS[cell][0](H, H, **bench.CELLS[cell][2](H))
    params = dict(layer.named_parameters())
    weights = ["weight_ih_l0", "weight_hh_l0"] + (["weight_hr_l0"] if cell == "lstmp" else [])
    forward = sum(2 * T * B * params[w].size for w in weights)
    assert bench.Case(cell, T, B, H, mode="infer").gemm_flops() == forward
    # backward: the gradients with respect to the inputs of each product, and to its weights
    assert bench.Case(cell, T, B, H).gemm_flops() == 3 * forward


def test_median_times_lets_the_systems_take_turns():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "ab"}
    medians = bench.median_times(fns, repeat=3, min_time=0)
    assert set(medians) == {"a", "b"} and all(t >= 0 for t in medians.values())
    # a warm-up and a first timed loop each, then the rounds: a, b, a, b, a, b
    assert calls == ["a", "a", "b", "b"] + ["a", "b"] * 3


def goal_report(goal, peak_goal=None):
    lines = []
    case = bench.Case("gru", 3, 2, 4, goal=goal, peak_goal=peak_goal)
    report = bench.run([case], sections=["goals"], repeat=1, bar=False, out=lines.append)
    return report, lines


def test_the_summary_names_the_cases_below_their_goals():
    pytest.importorskip("torch")
    report, lines = goal_report(goal=1e6)
    row = report["rows"][0]
    assert report["geomean_speedup"] == pytest.approx(row["speedup"])
    assert any(line.startswith("below goal: GRU f32 train T=3") for line in lines)
    report, lines = goal_report(goal=1e-6)
    assert "below goal: none" in lines
    report, lines = goal_report(goal=None, peak_goal=1.0)   # a tiny case is far from the peak
    assert any("of peak, goal 100%" in line for line in lines)


def test_each_goal_row_has_the_matrix_peak_measured_beside_it():
    """The peak takes its turns with the systems of each row (a slow phase of the machine
    falls on both); the report keeps the best, and % peak is the row's own."""
    cases = [bench.Case("gru", 3, 2, 4), bench.Case("rnn", 3, 2, 4, mode="infer")]
    lines = []
    report = bench.run(cases, sections=["goals"], repeat=2, bar=False, out=lines.append,
                       with_torch=False)
    rows = report["rows"]
    assert all(r["peak_gflops"] > 0 and "matrix" not in r for r in rows)
    assert report["peak_gflops"] == {"float32": max(r["peak_gflops"] for r in rows)}
    for r in rows:
        assert r["peak_share"] == pytest.approx(r["gflops"] / r["peak_gflops"])
    assert any(line.startswith("Matrix peak beside the cases, GFLOP/s: float32 ")
               for line in lines)


def test_perf_tables_renders_a_report(tmp_path):
    """tools/perf_tables.py, which writes docs/performance.md and the README's table from the
    reports, reads every field the bench writes."""
    spec = importlib.util.spec_from_file_location(
        "perf_tables", pathlib.Path(__file__).parents[1] / "tools" / "perf_tables.py")
    perf_tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(perf_tables)
    report = bench.run([bench.Case("lstm", 3, 2, 4)], sections=["goals"], repeat=1, bar=False,
                       out=lambda line: None, with_torch=False)
    path = tmp_path / "report.json"
    bench.save_json(report, path)
    page = "\n".join(perf_tables.section(str(path), "a title"))
    row = report["rows"][0]
    assert "## a title" in page
    assert (f"| LSTM f32 train T=3 B=2 I=H=4 | {row['gflops']:.0f} | "
            f"{row['peak_gflops']:.0f} | {row['peak_share'] * 100:.0f}% |") in page
    assert "hidden" not in page
    # A report made under tools/avx2_machine says so.
    report["machine"]["cpuid_hides_avx512"] = True
    bench.save_json(report, path)
    assert ("; AVX-512 hidden from every library's CPUID (tools/avx2_machine)."
            in "\n".join(perf_tables.section(str(path), "a title")))
    block = perf_tables.readme(str(path), "a CPU")
    assert block[0].startswith("`python -m fastlstm bench` on ") and "a CPU" in block[0]
    assert block[-1].startswith(f"| LSTM f32 T=3 B=2 H=4 | {row['native'] * 1e3:.2f} ms |")


def test_saved_for_backward_is_what_a_training_forward_keeps():
    T, B, H = 5, 3, 4
    x = np.zeros((T, B, H), np.float32)
    for cell in ("rnn", "gru", "lstm"):
        layer = bench.CELLS[cell][0](H, H)
        layer.train()(x)
        ctx = layer._saved[0][0]
        kept = [ctx.gates, ctx.cs, ctx.hn]
        # the states after each step (hs also holds h0 in its first B rows)
        nbytes = ctx.hs[B:].nbytes + sum(a.nbytes if cell != "lstm" or a is not ctx.cs
                                         else a[B:].nbytes for a in kept if a is not None)
        assert bench.saved_for_backward(cell, T, B, H) == nbytes, cell


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc")
def test_the_memory_probe_sees_at_least_what_a_step_must_keep():
    T, B, H = 100, 32, 256
    peak = bench.peak_step_memory("native", "lstm", T, B, H)
    assert bench.saved_for_backward("lstm", T, B, H) <= peak < 8 * bench.saved_for_backward(
        "lstm", T, B, H)


def test_matrix_peak_multiplies_through_fastlstms_blas():
    rng = np.random.default_rng(0)
    for dtype, tol in ((np.float32, 1e-5), (np.float64, 1e-13)):
        a, b = rng.standard_normal((37, 19)).astype(dtype), rng.standard_normal((23, 19))
        b = b.astype(dtype)
        np.testing.assert_allclose(fastlstm.native.matmul_t(a, b), a @ b.T, rtol=tol, atol=tol)
    assert fastlstm.native.matmul_t(np.ones((2, 0)), np.ones((3, 0))).tolist() == [[0] * 3] * 2
    with pytest.raises(TypeError, match="a and b must both be float32 or both float64"):
        fastlstm.native.matmul_t(np.ones((2, 2), np.float32), np.ones((2, 2)))
    with pytest.raises(ValueError, match="b must be a C-contiguous 2-D array"):
        fastlstm.native.matmul_t(np.ones((2, 2)), np.ones((2, 2)).T)


@pytest.mark.parametrize("cell", list(bench.CELLS))
def test_stream_steps_run_the_cell_of_their_case(cell):
    """make_stream_step builds the case's own cell, options included (the projection, the
    peepholes): fastlstm's step is the layer of CELLS[cell] run for one step, and each torch
    system offered for the cell returns an h of that cell's width."""
    B, I, H = 2, 3, 4
    layer_cls, _, options = bench.CELLS[cell]
    x = np.random.default_rng(0).standard_normal((B, I)).astype(np.float64)  # the bench's x
    layer = layer_cls(I, H, dtype=np.float64, seed=0, **options(H)).eval()
    expected = layer(x[None])[0][0]
    got = bench.make_stream_step("native", cell, B, I, H, np.float64)()
    # to roundoff: a stream's step sums its products in another order than a forward call does
    # (test_stream.py); another cell or option would differ in the first digits
    np.testing.assert_allclose(got, expected, rtol=1e-13, atol=1e-13)
    torch_systems = bench.stream_systems(cell, with_torch=True)[1:]
    assert torch_systems == ([] if bench.CELLS[cell][1] is None else
                             ["torch", "torch-inference"])
    if torch_systems:
        pytest.importorskip("torch")
    for system in torch_systems:
        h = bench.make_stream_step(system, cell, B, I, H, np.float64)()
        assert tuple(h.shape) == expected.shape, system


@pytest.mark.parametrize("with_torch", [False, True])
def test_the_feedback_section_times_the_stack_beside_the_plain_one(with_torch):
    if with_torch:
        pytest.importorskip("torch")
    lines = []
    rows = bench.run(sections=["feedback"], repeat=1, bar=False, out=lines.append,
                     with_torch=with_torch,
                     feedback_cases=[("lstm", 3, 2, 4), ("rnn", 2, 1, 4)])["rows"]
    assert [(r["cell"], r["T"], r["B"]) for r in rows] == [("lstm", 3, 2), ("rnn", 2, 1)]
    for r in rows:
        assert r["feedback"] > 0 and r["plain"] > 0
        assert r["plain_share"] == pytest.approx(r["plain"] / r["feedback"])
        assert r["stream_ratio"] == pytest.approx(r["stream_feedback"] / r["stream_plain"])
        assert ("torch_speedup" in r) == with_torch
    assert sum(line.startswith(("LSTM", "RNN")) for line in lines) == 2


@pytest.mark.parametrize("with_torch", [False, True])
def test_the_layernorm_section_times_the_cell_beside_the_plain_lstm(with_torch):
    if with_torch:
        pytest.importorskip("torch")
    lines = []
    rows = bench.run(sections=["layernorm"], repeat=1, bar=False, out=lines.append,
                     with_torch=with_torch, layer_norm_cases=[(3, 2, 4)])["rows"]
    assert [(r["cell"], r["T"], r["B"], r["H"]) for r in rows] == [("lnlstm", 3, 2, 4)]
    r = rows[0]
    assert r["layer_norm"] > 0 and r["plain"] > 0
    assert r["plain_ratio"] == pytest.approx(r["layer_norm"] / r["plain"])
    assert ("torch_speedup" in r) == with_torch
    assert sum(line.startswith("T=3") for line in lines) == 1
