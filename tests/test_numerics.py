"""The native gate nonlinearities against NumPy, over their whole input range.

The kernels compute tanh and the sigmoid with an exp of their own (csrc/kernels_impl.h), which
vectorizes where libm's would not. A one-unit layer exposes each function directly: an Elman
layer with w_ih = 1, w_hh = 0 and no bias outputs tanh(x); a GRU whose candidate is pinned at 1
(b_in = 50) from h0 = 0 outputs 1 - z = sigmoid(-x). Both are compared with NumPy's functions,
in absolute terms (a few units of roundoff of 1: the layers sum these values with others of
order one), on a fine grid through the region where they vary, on huge and tiny inputs, and on
inf and NaN, which must come out as the limits and NaN.
"""
import numpy as np
import pytest

from fastlstm import native

GRID = np.concatenate([np.linspace(-30, 30, 60001), [0.0, 1e-30, -1e-30, 1e-8, -1e-8, 88.5,
                                                     -88.5, 200, -200, 1e4, -1e4, 1e30, -1e30]])
# 4 units of roundoff of 1 (float32: 2^-24 = 6e-8)
ABS_TOL = {np.float32: 4 * 2.0**-24, np.float64: 4 * 2.0**-53}


def native_tanh(x):
    x = np.asarray(x)
    one = np.ones((1, 1), x.dtype)
    y, _, _ = native.rnn_forward(x.reshape(1, -1, 1), None, one, 0 * one, None, None)
    return y.reshape(-1)


def native_sigmoid(x):
    x = np.asarray(x)
    w_ih = np.array([[0], [-1], [0]], x.dtype)           # gates r, z, n: z = sigmoid(-x)
    b_ih = np.array([0, 0, 50], x.dtype)                 # n = tanh(50) = 1
    y, _, _ = native.gru_forward(x.reshape(1, -1, 1), None, w_ih, np.zeros((3, 1), x.dtype),
                                 b_ih, np.zeros(3, x.dtype))
    return y.reshape(-1)                                  # (1 - z) n + z h0 = sigmoid(x)


def numpy_sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ours, theirs", [(native_tanh, np.tanh),
                                          (native_sigmoid, numpy_sigmoid)],
                         ids=["tanh", "sigmoid"])
def test_gate_functions_match_numpy(ours, theirs, dtype):
    x = GRID.astype(dtype)
    with np.errstate(over="ignore"):
        expected = theirs(x.astype(np.float64))
    got = ours(x)
    assert got.dtype == dtype and np.isfinite(got).all()
    err = np.abs(got - expected)
    assert err.max() <= ABS_TOL[dtype], f"max error {err.max():.3g} at x = {x[err.argmax()]}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_limits_and_nan(dtype):
    x = np.array([np.inf, -np.inf, np.nan], dtype)
    assert np.array_equal(native_tanh(x), [1, -1, np.nan], equal_nan=True)
    # A GRU whose every gate sees x (a zero weight would make 0 * inf = NaN): from h0 = 0,
    # h = (1 - z) n = sigmoid(x) tanh(x), which is 1 at +inf and 0 at -inf.
    w_ih, zeros = np.array([[1], [-1], [1]], dtype), np.zeros(3, dtype)
    y, _, _ = native.gru_forward(x.reshape(1, -1, 1), None, w_ih, np.zeros((3, 1), dtype),
                                 zeros, zeros)
    assert np.array_equal(y.reshape(-1), [1, 0, np.nan], equal_nan=True)
