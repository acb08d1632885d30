"""pytest-benchmark suites: a training step and a forward pass, native against the NumPy
reference and PyTorch (when installed), for each cell and dtype.

Run them (never as part of the test suite) with::

    pytest benchmarks --benchmark-group-by=param:case --benchmark-columns=median,iqr

and compare the systems within each group: they run in one session on the same inputs.
"""
import numpy as np
import pytest

from fastlstm import LSTM, RNN, get_num_threads

CASES = {  # name: (cell, T, B, I = H)
    "lstm-T100-B1-H64": ("lstm", 100, 1, 64),
    "lstm-T100-B32-H256": ("lstm", 100, 32, 256),
    "rnn-T100-B32-H256": ("rnn", 100, 32, 256),
}
DTYPES = [np.float32, np.float64]
SYSTEMS = ["native", "reference", "torch"]


def make(system, cell, T, B, H, dtype):
    """A (forward, training step) pair of callables for one system."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    if system == "torch":
        torch = pytest.importorskip("torch")
        torch.set_num_threads(get_num_threads())
        layer = (torch.nn.LSTM if cell == "lstm" else torch.nn.RNN)(H, H).to(
            torch.float32 if dtype == np.float32 else torch.float64)
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
        txg = tx.clone().requires_grad_()

        def forward():
            with torch.no_grad():
                layer(tx)

        def train_step():
            layer(txg)[0].backward(tdy)
        return forward, train_step
    layer = (LSTM if cell == "lstm" else RNN)(H, H, dtype=dtype, backend=system, seed=0)

    def forward():
        layer.eval()(x)

    def train_step():
        layer.train()(x)
        layer.backward(dy)
    return forward, train_step


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
