"""The gate nonlinearities over their whole input range, and what non-finite input does.

The native kernels compute tanh and the sigmoid with an exp of their own (csrc/kernels_impl.h),
which vectorizes where libm's would not; the reference computes them with NumPy, the sigmoid as
``exp(-|a|)`` ratios that cannot overflow. A one-unit layer exposes each function directly: an
Elman layer with w_ih = 1, w_hh = 0 and no bias outputs tanh(x); a GRU whose candidate is pinned
at 1 (b_in = 50) from h0 = 0 outputs 1 - z = sigmoid(-x). Both backends are compared with NumPy's
functions (the sigmoid as exp(-logaddexp(0, -x)), which cannot overflow either), in absolute terms
(a few units of roundoff of 1: the layers sum these values with others of order one), on a fine
grid through the region where they vary and on huge and tiny inputs, with NumPy's overflow,
invalid-operation and division warnings raised as errors; inf and NaN must come out as the limits
and NaN.

Whole layers of every cell, on both backends: finite inputs of any magnitude (pre-activations up
to 1e4, and up to 1e30 in float32 and 1e300 in float64, short of overflowing the products
themselves) give finite outputs and gradients, with no floating-point warning, and the backends
agree. A NaN in x reaches only its own sequence, which is NaN from that step on; an infinite input
saturates the gates it reaches, and the backends agree on the results, NaN where IEEE arithmetic
gives NaN (0 * inf in the weight gradients).

Underflow is not an error: exp(-1000) is 0, the correct result to within the smallest
subnormal, and so are the products of saturated gates' derivatives.
"""
import numpy as np
import pytest
from helpers import (F32_MAX, KINDS, TOL64, assert_close, f_backward, f_forward, random_problem,
                     run_functional, weight_names)

from fastlstm import native, reference

BACKENDS = {"native": native, "reference": reference}
GRID = np.concatenate([np.linspace(-30, 30, 60001), [0.0, 1e-30, -1e-30, 1e-8, -1e-8, 88.5,
                                                     -88.5, 200, -200, 1e4, -1e4, 1e30, -1e30]])
# 4 units of roundoff of 1 (float32: 2^-24 = 6e-8)
ABS_TOL = {np.float32: 4 * 2.0**-24, np.float64: 4 * 2.0**-53}
# NumPy's warnings that mean something went wrong; underflow (see above) does not
STRICT = dict(over="raise", invalid="raise", divide="raise")


def layer_tanh(backend, x):
    x = np.asarray(x)
    one = np.ones((1, 1), x.dtype)
    y, _, _ = BACKENDS[backend].rnn_forward(x.reshape(1, -1, 1), None, one, 0 * one, None, None)
    return y.reshape(-1)


def layer_sigmoid(backend, x):
    x = np.asarray(x)
    w_ih = np.array([[0], [-1], [0]], x.dtype)           # gates r, z, n: z = sigmoid(-x)
    b_ih = np.array([0, 0, 50], x.dtype)                 # n = tanh(50) = 1
    y, _, _ = BACKENDS[backend].gru_forward(x.reshape(1, -1, 1), None, w_ih,
                                            np.zeros((3, 1), x.dtype), b_ih, np.zeros(3, x.dtype))
    return y.reshape(-1)                                  # (1 - z) n + z h0 = sigmoid(x)


def numpy_sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("ours, theirs", [(layer_tanh, np.tanh),
                                          (layer_sigmoid, numpy_sigmoid)],
                         ids=["tanh", "sigmoid"])
def test_gate_functions_match_numpy(ours, theirs, dtype, backend):
    x = GRID.astype(dtype)
    with np.errstate(over="ignore"):
        expected = theirs(x.astype(np.float64))
    with np.errstate(**STRICT):
        got = ours(backend, x)
    assert got.dtype == dtype and np.isfinite(got).all()
    err = np.abs(got - expected)
    assert err.max() <= ABS_TOL[dtype], f"max error {err.max():.3g} at x = {x[err.argmax()]}"


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_limits_and_nan(dtype, backend):
    x = np.array([np.inf, -np.inf, np.nan], dtype)
    assert np.array_equal(layer_tanh(backend, x), [1, -1, np.nan], equal_nan=True)
    # A GRU whose every gate sees x (a zero weight would make 0 * inf = NaN): from h0 = 0,
    # h = (1 - z) n = sigmoid(x) tanh(x), which is 1 at +inf and 0 at -inf.
    w_ih, zeros = np.array([[1], [-1], [1]], dtype), np.zeros(3, dtype)
    y, _, _ = BACKENDS[backend].gru_forward(x.reshape(1, -1, 1), None, w_ih,
                                            np.zeros((3, 1), dtype), zeros, zeros)
    assert np.array_equal(y.reshape(-1), [1, 0, np.nan], equal_nan=True)


# Pre-activations up to ~1e4 (x by 200, the weights by 50), and x by a factor that takes them
# close to the largest finite number while its products with the weights stay finite.
MAGNITUDES = {"1e4": lambda dtype: (200, 50),
              "near overflow": lambda dtype: (1e30 if dtype == np.float32 else 1e300, 1)}


@pytest.mark.parametrize("magnitude", list(MAGNITUDES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", KINDS)
def test_huge_finite_inputs_stay_finite_and_agree(kind, dtype, magnitude, rng):
    """The sigmoid and tanh saturate; nothing may become inf or NaN, NumPy must not warn of an
    overflow, invalid operation or division by zero, and the backends must agree: to 1e-10 in
    float64; in float32 to F32_MAX only, as 1 - tanh(a)^2 of a saturated unit is a
    cancellation. Near overflow, the native sigmoid of a huge negative pre-activation is
    1 / (1 + exp(709)) ~ 1e-308 rather than 0 (its exp clamps its argument,
    csrc/kernels_impl.h), which the weight gradient dw_ih multiplies by inputs of 1e300: ~1e-8,
    so there dw_ih is checked for finiteness only."""
    x_scale, w_scale = MAGNITUDES[magnitude](dtype)
    x, states, weights, dy, dstates = random_problem(rng, kind, 6, 3, 4, 5, dtype=dtype)
    x = (x_scale * x).astype(dtype)
    weights = tuple(None if w is None else (w_scale * w).astype(dtype) for w in weights)
    with np.errstate(**STRICT):
        names, nat = run_functional("native", kind, (x, states, weights, dy, dstates))
        _, ref = run_functional("reference", kind, (x, states, weights, dy, dstates))
    for name, n, r in zip(names, nat, ref, strict=True):
        assert np.isfinite(n).all() and np.isfinite(r).all(), name
        if not (magnitude == "near overflow" and name == "w_ih"):
            assert_close(n, r, TOL64 if dtype == np.float64 else F32_MAX, name)


# ---------------------------------------------------------------- non-finite input

T0, B0 = 2, 1     # where the non-finite value goes: step 2 of sequence 1 (of 3), feature 0


def run_with(backend, kind, problem, value):
    """Forward and backward of ``problem`` with x[T0, B0, 0] = value: (y, finals, dx, dinits,
    dweights)."""
    x, states, weights, dy, dstates = problem
    x = x.copy()
    x[T0, B0, 0] = value
    with np.errstate(invalid="ignore"):     # 0 * inf and inf - inf are NaN, as IEEE says
        y, finals, ctx = f_forward(backend, kind, x, states, weights)
        dx, dinits, dweights = f_backward(backend, kind, ctx, dy, dstates)
    return y, finals, dx, dinits, dweights


def assert_only_its_sequence_changed(run, clean):
    """Everything of the other sequences, and the sequence's own outputs before T0, bitwise as
    in the run with a finite x[T0, B0]."""
    y, finals, dx, dinits, _ = run
    y_c, finals_c, dx_c, dinits_c, _ = clean
    others = [b for b in range(y.shape[1]) if b != B0]
    assert np.array_equal(y[:, others], y_c[:, others])
    assert np.array_equal(y[:T0, B0], y_c[:T0, B0])
    assert np.array_equal(dx[:, others], dx_c[:, others])
    for a, c in zip(finals + dinits, finals_c + dinits_c, strict=True):
        assert np.array_equal(a[others], c[others])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_input_propagates_through_its_own_sequence(kind, backend, rng):
    """x[T0, B0] = NaN: its sequence's outputs from T0 on and its final states are NaN, the
    weight gradients NaN, and nothing else changes."""
    problem = random_problem(rng, kind, 5, 3, 4, 3)
    clean = run_with(backend, kind, problem, 0.5)
    run = run_with(backend, kind, problem, np.nan)
    assert_only_its_sequence_changed(run, clean)
    y, finals, _, _, dweights = run
    assert np.isnan(y[T0:, B0]).all(), "NaN must reach every later output of its sequence"
    for f in finals:
        assert np.isnan(f[B0]).all()
    assert np.isnan(dweights[0][:, 0]).all(), "dw_ih sums x[:, :, 0] * dL/da over all rows"
    if kind != "rnn_relu":   # whose derivative at NaN is (NaN > 0) = 0: finite bias gradients
        for name, dw in zip(weight_names(kind), dweights, strict=True):
            assert np.isnan(dw).all(), name


@pytest.mark.parametrize("bad", [np.inf, -np.inf], ids=["inf", "-inf"])
@pytest.mark.parametrize("kind", [k for k in KINDS if k != "rnn_relu"])
def test_infinite_input_saturates_alike_on_both_backends(kind, bad, rng):
    """The forward results are finite (saturated gates) or NaN in the same places on both
    backends, and agree where finite; the gradients are non-finite in the same places (0 * inf
    is NaN on one backend where the native sigmoid's tiny-but-nonzero saturation gives inf on
    the other) and agree where finite. Not the relu, which does not saturate: an infinite h
    meets W_hh, where inf - inf makes NaN or not depending on the weights' signs, and a NaN
    is what the backends' relus treat differently (the test above)."""
    problem = random_problem(rng, kind, 5, 3, 4, 3)
    runs = {}
    for backend in BACKENDS:
        runs[backend] = run_with(backend, kind, problem, bad)
        assert_only_its_sequence_changed(runs[backend], run_with(backend, kind, problem, 0.5))
    flat = {b: [r[0], *r[1], r[2], *r[3], *r[4]] for b, r in runs.items()}
    for k, (n, r) in enumerate(zip(flat["native"], flat["reference"], strict=True)):
        if r is None:
            continue
        finite = np.isfinite(r)
        assert np.array_equal(np.isfinite(n), finite), f"array {k}: non-finite elsewhere"
        assert_close(n[finite], r[finite], TOL64, f"array {k}")
