"""Hand-written BPTT against central finite differences, in float64.

The loss is ``sum(y * R) + sum(h_n * S) (+ sum(c_n * Q))`` with fixed random R, S, Q, so the
gradients handed to backward are dy = R, dh_n = S, dc_n = Q. Every element of every parameter, of
the input and of the initial states is checked, on tiny sizes so that this stays fast.

Tolerance: the central difference (f(p + eps) - f(p - eps)) / (2 eps) has a truncation error
O(eps^2 * f''') ~ 1e-12 and a rounding error O(u * |f| / eps) ~ 1e-16 * 10 / 1e-6 = 1e-9 for
eps = 1e-6 and losses of order 10 (u = 1.1e-16, float64's unit roundoff). An error of 1e-6
relative to the gradient's scale is therefore far above what finite differences can produce,
and far below what any wrong term in a gradient (an O(1) mistake) would give.
"""
import numpy as np
import pytest
from helpers import (FD_TOL, KINDS, assert_backward_matches_fd, assert_close, f_backward,
                     f_forward, fd_grad, layer_backward, layer_forward, layer_state_sizes,
                     make_layer, random_problem)

from fastlstm import reference

T, B, I, H = 4, 2, 3, 2


def weighted_sum(outputs, weights):
    return float(sum(np.sum(o * w) for o, w in zip(outputs, weights)))


# ---------------------------------------------------------------- relu: keep away from the kink


def h_prev(h0, y):
    """(T, B, H): the state each step of a padded call started from, h0 then y[:-1]."""
    return np.concatenate([h0[None], y[:-1]])


def min_abs_preactivation_functional(x, h_prev, w_ih, w_hh, b_ih, b_hh):
    """min |a| over every pre-activation a_t = x_t W_ih^T + h_{t-1} W_hh^T + b of one layer."""
    a = x @ w_ih.T + h_prev @ w_hh.T
    if b_ih is not None:
        a = a + b_ih + b_hh
    return float(np.abs(a).min())


def min_abs_preactivation_layer(layer, x, h0):
    """The same over every layer and direction of an RNN layer, recomputed with the reference
    functions from the public parameters (finite differences across a relu kink are invalid)."""
    params = dict(layer.named_parameters())
    inp = x.transpose(1, 0, 2) if layer.batch_first else x
    D = 2 if layer.bidirectional else 1
    margin = np.inf
    for k in range(layer.num_layers):
        outs = []
        for d in range(D):
            sfx = "_reverse" if d else ""
            w = [params.get(f"{n}_l{k}{sfx}") for n in ("weight_ih", "weight_hh", "bias_ih",
                                                          "bias_hh")]
            xi = inp[::-1] if d else inp
            y, _, _ = reference.rnn_forward(xi, h0[k * D + d], *w, nonlinearity="relu")
            margin = min(margin, min_abs_preactivation_functional(xi, h_prev(h0[k * D + d], y),
                                                                  *w))
            outs.append(y[::-1] if d else y)
        inp = np.concatenate(outs, axis=2)
    return margin


# ---------------------------------------------------------------- functional level


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", KINDS)
def test_functional_backward_matches_finite_differences(backend, kind, bias):
    rng = np.random.default_rng(11)
    x, states, weights, R, S = random_problem(rng, kind, T, B, I, H, bias=bias, scale=0.8)
    weights, S = list(weights), list(S)

    def loss():
        y, finals, _ = f_forward(backend, kind, x, states, weights)
        return weighted_sum((y,) + finals, [R] + S)

    y, finals, ctx = f_forward(backend, kind, x, states, weights)
    if kind == "rnn_relu":
        assert min_abs_preactivation_functional(x, h_prev(states[0], y), *weights) > 1e-3
        assert (y > 0).any() and (y == 0).any(), "both sides of the relu should be exercised"
    dx, dinits, dweights = f_backward(backend, kind, ctx, R, S)

    assert_backward_matches_fd(kind, loss, x, states, weights, dx, dinits, dweights)


# ---------------------------------------------------------------- layer level

LAYER_CASES = [
    dict(kind="rnn_tanh"),
    dict(kind="rnn_tanh", num_layers=2, bidirectional=True),
    dict(kind="rnn_tanh", num_layers=2, bias=False),
    dict(kind="rnn_relu"),
    dict(kind="rnn_relu", num_layers=2, bidirectional=True),
    dict(kind="lstm"),
    dict(kind="lstm", num_layers=2, bidirectional=True),
    dict(kind="lstm", num_layers=2, bidirectional=True, batch_first=True),
    dict(kind="gru"),
    dict(kind="gru", num_layers=2, bidirectional=True, batch_first=True),
    dict(kind="gru", num_layers=2, bias=False),
    dict(kind="lstmp", num_layers=2, bidirectional=True),
    dict(kind="lstm_peephole", num_layers=2, bidirectional=True),
    dict(kind="lstmp_peephole", num_layers=2, bidirectional=True, batch_first=True),
    dict(kind="lstmp_peephole", num_layers=2, bias=False),
]


def case_id(case):
    return "-".join(f"{k}={v}" if k != "kind" else v for k, v in case.items())


def check_layer_against_fd(make, x, states, R, S):
    """``make()`` returns a fresh float64 layer in training mode. Its backward (dy = R, dfinal =
    S) must match finite differences of the loss in every parameter, x and the initial states."""
    layer = make()
    params = layer.state_dict()

    def loss():
        # A fresh layer each time: with dropout, the mask of its first training forward is the
        # mask the analytic backward below used (both come from the same seed).
        fresh = make()
        fresh.load_state_dict(params)
        y, finals = layer_forward(fresh, x, states)
        return weighted_sum((y,) + finals, [R] + list(S))

    layer_forward(layer, x, states)
    dx, dinits = layer_backward(layer, R, S)
    assert_close(dx, fd_grad(loss, x), FD_TOL, "dx")
    for name, s, ds in zip(("dh0", "dc0"), states, dinits):
        assert_close(ds, fd_grad(loss, s), FD_TOL, name)
    assert layer.grads.keys() == params.keys()
    for name, p in params.items():
        assert_close(layer.grads[name], fd_grad(loss, p), FD_TOL, name)


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("case", LAYER_CASES, ids=case_id)
def test_layer_backward_matches_finite_differences(backend, case):
    case = dict(case)
    kind = case.pop("kind")

    def make():
        return make_layer(kind, I, H, dtype=np.float64, backend=backend, seed=3, **case)

    layer = make()
    rng = np.random.default_rng(5)
    D = 2 if layer.bidirectional else 1
    x = rng.standard_normal((B, T, I) if layer.batch_first else (T, B, I))
    states = [rng.standard_normal((layer.num_layers * D, B, n)) for n in layer_state_sizes(layer)]
    y, _ = layer_forward(layer, x, states)
    R = rng.standard_normal(y.shape)
    S = [rng.standard_normal(s.shape) for s in states]
    if kind == "rnn_relu":
        assert min_abs_preactivation_layer(layer, x, states[0]) > 1e-3
        assert (y > 0).any() and (y == 0).any(), "both sides of the relu should be exercised"
    check_layer_against_fd(make, x, states, R, S)


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstmp_peephole"])
def test_layer_backward_with_dropout_uses_the_forward_mask(backend, kind):
    """With dropout, the loss of a fresh layer built from the same seed is a deterministic
    function of the parameters (its first mask); its finite differences must equal the backward
    of a layer that ran that same first forward."""
    def make():
        return make_layer(kind, I, H, num_layers=2, dropout=0.5, dtype=np.float64,
                          backend=backend, seed=21)

    rng = np.random.default_rng(8)
    sizes = layer_state_sizes(make())
    x = rng.standard_normal((T, B, I))
    states = [rng.standard_normal((2, B, n)) for n in sizes]
    R = rng.standard_normal((T, B, sizes[0]))
    S = [rng.standard_normal((2, B, n)) for n in sizes]

    # The test only proves something if dropout really acts in this forward.
    y_train, _ = layer_forward(make(), x, states)
    y_eval, _ = layer_forward(make().eval(), x, states)
    assert not np.allclose(y_train, y_eval)
    check_layer_against_fd(make, x, states, R, S)
