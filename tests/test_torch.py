"""fastlstm layers against torch.nn.RNN / LSTM (with and without proj_size) / GRU, same weights.

torch has no peepholes, so the peephole kinds are checked against finite differences and the
reference instead (test_gradcheck.py, test_native_vs_reference.py).

Tolerances, relative to max(1, max |torch's value|): float64 1e-10 (both sides are exact to a few
units of 1e-16, they only sum in different orders). float32 1e-5: the unit roundoff is 6e-8, torch's
CPU kernels sum in yet another order than either fastlstm backend, and each dot product of K <= 20
terms differs by ~sqrt(K) u ~ 3e-7; carried through T = 5 steps and 2 layers (and through the
backward pass once more) that stays around 1e-6, so 1e-5 leaves a margin of ten while any wrong
term (an O(1) error) is caught.
"""
import sys

import numpy as np
import pytest
from helpers import (KINDS, assert_close, assert_layer_run_close, cell_of, has_peephole,
                     layer_backward, layer_forward, layer_problem, make_layer, make_torch,
                     run_python, torch_run)

import fastlstm

torch = pytest.importorskip("torch")

# torch says so each time it runs a projected LSTM; it is about torch's speed, not its results.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

TOLS = {np.float32: 1e-5, np.float64: 1e-10}
TORCH_KINDS = tuple(k for k in KINDS if not has_peephole(k))
I, H = 3, 4


@pytest.fixture(autouse=True, scope="module")
def torch_on_one_thread():
    """The machine is shared: keep torch on one thread for these tiny problems."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def load_into_torch(module, layer):
    result = module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
    assert not result.missing_keys and not result.unexpected_keys


CASES = [
    dict(num_layers=1),
    dict(num_layers=2),
    dict(num_layers=1, bidirectional=True),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(num_layers=2, bias=False),
    dict(num_layers=1, batch_first=True, bias=False),
]


def case_id(case):
    return "-".join(f"{k}={v}" for k, v in case.items())


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_matches_torch(kind, case, dtype, backend, rng):
    layer = make_layer(kind, I, H, dtype=dtype, backend=backend, seed=13, **case)
    module = make_torch(kind, I, H, dtype, **case)
    ours, theirs = layer.state_dict(), module.state_dict()
    assert list(ours) == list(theirs), "same parameter names in the same order"
    for name in ours:
        assert ours[name].shape == tuple(theirs[name].shape), name
        assert ours[name].dtype == dtype
    load_into_torch(module, layer)

    x, states, dy, dstates = layer_problem(rng, layer, T=5, B=3)
    y, finals = layer_forward(layer, x, states)
    dx, dinits = layer_backward(layer, dy, dstates)
    y_t, finals_t, dx_t, dinits_t, grads_t = torch_run(module, kind, x, states, dy, dstates)

    assert_layer_run_close(layer, (y, finals, dx, dinits),
                           (y_t, finals_t, dx_t, dinits_t, grads_t), TOLS[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_load_a_torch_state_dict(kind, dtype, rng):
    torch.manual_seed(0)
    module = make_torch(kind, I, H, dtype, num_layers=2, bidirectional=True)
    layer = make_layer(kind, I, H, num_layers=2, bidirectional=True, dtype=dtype, seed=1)
    layer.load_state_dict(module.state_dict())   # tensors, not arrays
    for name, p in module.state_dict().items():
        assert np.array_equal(layer.state_dict()[name], p.numpy()), name
        assert layer.state_dict()[name].dtype == dtype
    x, states, dy, dstates = layer_problem(rng, layer, T=4, B=2)
    y, finals = layer_forward(layer, x, states)
    y_t, finals_t, *_ = torch_run(module, kind, x, states, dy, dstates)
    assert_close(y, y_t, TOLS[dtype], "y")
    for a, b in zip(finals, finals_t):
        assert_close(a, b, TOLS[dtype], "final state")


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_dropout_in_eval_mode_matches_torch_eval(kind, backend, rng):
    layer = make_layer(kind, I, H, num_layers=3, dropout=0.5, dtype=np.float64, backend=backend,
                       seed=6).eval()
    module = make_torch(kind, I, H, np.float64, num_layers=3, dropout=0.5).eval()
    load_into_torch(module, layer)
    x, states, dy, dstates = layer_problem(rng, layer, T=5, B=3)
    y, finals = layer_forward(layer, x, states)
    with torch.no_grad():
        if cell_of(kind) == "lstm":
            y_t, finals_t = module(torch.from_numpy(x), tuple(map(torch.from_numpy, states)))
        else:
            y_t, h_t = module(torch.from_numpy(x), torch.from_numpy(states[0]))
            finals_t = (h_t,)
    assert_close(y, y_t.numpy(), TOLS[np.float64], "y")
    for a, b in zip(finals, finals_t):
        assert_close(a, b.numpy(), TOLS[np.float64], "final state")


def native_lstm_run(rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    x = rng.standard_normal((6, 16, 8))
    w = [rng.standard_normal(s) * 0.3 for s in [(64, 8), (64, 16), (64,), (64,)]]
    y, h, c, ctx = fastlstm.native.lstm_forward(x, None, None, *w)
    return [y, h, c, *fastlstm.native.lstm_backward(ctx, np.ones_like(y), None, None).values()]


def test_native_kernels_on_two_threads_with_torch_loaded(restore_threads):
    """torch brings its own OpenMP runtime (torch/lib/libgomp); fastlstm's kernels must still
    work beside it. Here fastlstm was imported first (conftest); the next test does the other
    order in a fresh process."""
    assert "torch" in sys.modules
    torch.ones(64, 64) @ torch.ones(64, 64)     # torch's runtime has started its threads
    fastlstm.set_num_threads(1)
    one = native_lstm_run()
    fastlstm.set_num_threads(2)
    two = native_lstm_run()
    for a, b in zip(one, two):
        assert np.array_equal(a, b)


def test_torch_imported_first_then_fastlstm_on_two_threads():
    """The same in a fresh process with torch loaded (and running threads) before fastlstm."""
    code = (
        "import torch\n"
        "torch.set_num_threads(2)\n"
        "a = torch.randn(200, 200) @ torch.randn(200, 200)\n"
        "import numpy as np, fastlstm\n"
        "fastlstm.set_num_threads(2)\n"
        "assert fastlstm.get_num_threads() == 2\n"
        "x = np.random.default_rng(0).standard_normal((5, 8, 3))\n"
        "layer = fastlstm.LSTM(3, 6, num_layers=2, dtype=np.float64, seed=0)\n"
        "y, _ = layer(x)\n"
        "layer.backward(np.ones_like(y))\n"
        "b = torch.randn(200, 200) @ torch.randn(200, 200)\n"
        "assert np.isfinite(y).all()\n"
        "print('ok')\n"
    )
    result = run_python(["-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
