"""pytest-benchmark suites: a training step and a forward pass, native against the NumPy
reference and PyTorch (when installed), for each cell and dtype; the training step on packed
batches of different lengths; and one streaming step.

Run them (never as part of the test suite) with::

    pytest benchmarks --benchmark-group-by=param:case --benchmark-columns=median,iqr

and compare the systems within each group: they run in one session on the same inputs.
"""
import numpy as np
import pytest

from fastlstm.bench import (CELLS, CONVERT_CASES, PACKED_CASES, STREAM_CASES, make_step,
                            make_stream_step, make_torch_model_step)

CASES = {  # name: (cell, T, B, I = H): the sizes of bench.GOALS, and the other cells
    "lstm-T100-B1-H64": ("lstm", 100, 1, 64),
    "lstm-T100-B16-H128": ("lstm", 100, 16, 128),
    "lstm-T100-B32-H256": ("lstm", 100, 32, 256),
    "lstm-T50-B64-H512": ("lstm", 50, 64, 512),
    "rnn-T100-B32-H256": ("rnn", 100, 32, 256),
    "gru-T100-B32-H256": ("gru", 100, 32, 256),
    "lstmp-T100-B32-H256": ("lstmp", 100, 32, 256),
    "peephole-T100-B32-H256": ("peephole", 100, 32, 256),
}
DTYPES = [np.float32, np.float64]
SYSTEMS = ["native", "reference", "torch"]


def make(system, cell, T, B, H, dtype, packed=False):
    if system == "torch":
        pytest.importorskip("torch")
        if CELLS[cell][1] is None:
            pytest.skip(f"torch has no {cell} cell")
    return make_step(system, cell, T, B, H, dtype, packed)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("case", CASES)
def test_train_step(benchmark, case, system, dtype):
    _, train_step = make(system, *CASES[case], dtype)
    benchmark.extra_info.update(case=case, system=system)
    benchmark(train_step)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("case", CASES)
def test_forward(benchmark, case, system, dtype):
    forward, _ = make(system, *CASES[case], dtype)
    benchmark(forward)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("system", SYSTEMS)
@pytest.mark.parametrize("case", PACKED_CASES, ids=lambda c: "{}-T{}-B{}-H{}-packed".format(*c))
def test_packed_train_step(benchmark, case, system, dtype):
    _, train_step = make(system, *case, dtype, packed=True)
    benchmark.extra_info.update(case="{}-T{}-B{}-H{}-packed".format(*case), system=system)
    benchmark(train_step)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("system", ["native", "reference", "torch", "torch-inference"])
@pytest.mark.parametrize("case", STREAM_CASES, ids=lambda c: "{}-B{}-I{}-H{}-stream".format(*c))
def test_stream_step(benchmark, case, system, dtype):
    if system.startswith("torch"):
        pytest.importorskip("torch")
    benchmark.extra_info.update(case="{}-B{}-I{}-H{}-stream".format(*case), system=system)
    benchmark(make_stream_step(system, *case, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("system", ["torch.nn", "fastlstm.torch"])
@pytest.mark.parametrize("case", CONVERT_CASES, ids=lambda c: "{}-T{}-B{}-H{}-model".format(*c))
def test_torch_model_train_step(benchmark, case, system, dtype):
    """A PyTorch model's training step before and after fastlstm.torch.convert()."""
    pytest.importorskip("torch")
    train_step = make_torch_model_step(*case, dtype, converted=system == "fastlstm.torch")
    benchmark.extra_info.update(case="{}-T{}-B{}-H{}-model".format(*case), system=system)
    benchmark(train_step)
