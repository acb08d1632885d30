"""Shared helpers for the fastlstm tests (imported as ``from helpers import ...``).

A "kind" names a cell and its nonlinearity: "rnn_tanh", "rnn_relu" or "lstm". The helpers below
hide the small differences between the RNN and LSTM signatures (one state or two) so that a test
can be written once and parametrized over kinds.
"""
import numpy as np

import fastlstm
from fastlstm import native, reference

KINDS = ("rnn_tanh", "rnn_relu", "lstm")
BACKENDS = {"reference": reference, "native": native}
DTYPES = (np.float32, np.float64)


def cell_of(kind):
    return "lstm" if kind == "lstm" else "rnn"


def n_states(kind):
    return 2 if kind == "lstm" else 1


def n_gates(kind):
    return 4 if kind == "lstm" else 1


# ---------------------------------------------------------------- functional API


def random_weights(rng, kind, I, H, dtype=np.float64, bias=True, scale=0.5):
    """(w_ih, w_hh, b_ih, b_hh) with torch's shapes; biases None when ``bias`` is False."""
    GH = n_gates(kind) * H
    w = [scale * rng.standard_normal((GH, I)), scale * rng.standard_normal((GH, H))]
    if bias:
        w += [scale * rng.standard_normal(GH), scale * rng.standard_normal(GH)]
    else:
        w += [None, None]
    return tuple(None if a is None else a.astype(dtype) for a in w)


def random_problem(rng, kind, T, B, I, H, dtype=np.float64, bias=True):
    """Inputs, initial states, weights and output gradients for one functional call."""
    x = rng.standard_normal((T, B, I)).astype(dtype)
    states = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in range(n_states(kind)))
    weights = random_weights(rng, kind, I, H, dtype, bias)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dstates = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in range(n_states(kind)))
    return x, states, weights, dy, dstates


def f_forward(backend, kind, x, states, weights):
    """Functional forward of either cell: returns ``(y, finals, ctx)``, finals a tuple."""
    mod = BACKENDS[backend] if isinstance(backend, str) else backend
    if kind == "lstm":
        y, h_n, c_n, ctx = mod.lstm_forward(x, *states, *weights)
        return y, (h_n, c_n), ctx
    nonlinearity = kind.split("_")[1]
    y, h_n, ctx = mod.rnn_forward(x, *states, *weights, nonlinearity=nonlinearity)
    return y, (h_n,), ctx


def f_backward(backend, kind, ctx, dy, dstates):
    """Functional backward of either cell: returns ``(dx, dinits, dweights)``, tuples."""
    mod = BACKENDS[backend] if isinstance(backend, str) else backend
    if kind == "lstm":
        dx, dh0, dc0, *dw = mod.lstm_backward(ctx, dy, *dstates)
        return dx, (dh0, dc0), tuple(dw)
    dx, dh0, *dw = mod.rnn_backward(ctx, dy, *dstates)
    return dx, (dh0,), tuple(dw)


# ---------------------------------------------------------------- layers


def make_layer(kind, input_size, hidden_size, **kwargs):
    """fastlstm.RNN (tanh or relu) or fastlstm.LSTM; keyword arguments go to the constructor."""
    if kind == "lstm":
        return fastlstm.LSTM(input_size, hidden_size, **kwargs)
    return fastlstm.RNN(input_size, hidden_size, nonlinearity=kind.split("_")[1], **kwargs)


def layer_forward(layer, x, states=None):
    """Run a layer with ``states`` a tuple (h0,) / (h0, c0) or None; returns ``(y, finals)``."""
    if isinstance(layer, fastlstm.LSTM):
        y, (h_n, c_n) = layer(x, None if states is None else tuple(states))
        return y, (h_n, c_n)
    y, h_n = layer(x, None if states is None else states[0])
    return y, (h_n,)


def layer_backward(layer, dy, dstates=None):
    """Backward of a layer with ``dstates`` a tuple or None; returns ``(dx, dinits)``."""
    if isinstance(layer, fastlstm.LSTM):
        dx, (dh0, dc0) = layer.backward(dy, None if dstates is None else tuple(dstates))
        return dx, (dh0, dc0)
    dx, dh0 = layer.backward(dy, None if dstates is None else dstates[0])
    return dx, (dh0,)


def layer_problem(rng, layer, T, B):
    """Random x, initial states, dy and final-state gradients shaped for ``layer``."""
    D = 2 if layer.bidirectional else 1
    H, dtype = layer.hidden_size, layer.dtype
    x_shape = (B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size)
    y_shape = (B, T, D * H) if layer.batch_first else (T, B, D * H)
    s_shape = (layer.num_layers * D, B, H)
    k = 2 if isinstance(layer, fastlstm.LSTM) else 1
    x = rng.standard_normal(x_shape).astype(dtype)
    states = tuple(rng.standard_normal(s_shape).astype(dtype) for _ in range(k))
    dy = rng.standard_normal(y_shape).astype(dtype)
    dstates = tuple(rng.standard_normal(s_shape).astype(dtype) for _ in range(k))
    return x, states, dy, dstates


def grads_copy(layer):
    return {name: g.copy() for name, g in layer.grads.items()}


# ---------------------------------------------------------------- comparisons


def scale_of(a):
    """The scale errors are measured against: max(1, max |a|)."""
    a = np.asarray(a)
    return max(1.0, float(np.abs(a).max())) if a.size else 1.0


def max_rel_err(actual, expected):
    """max |actual - expected| / max(1, max |expected|); the shapes must agree."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    if not expected.size:
        return 0.0
    return float(np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max()
                 / scale_of(expected))


def assert_close(actual, expected, tol, what=""):
    """|actual - expected| <= tol * max(1, max |expected|), elementwise, with the same shape."""
    err = max_rel_err(actual, expected)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:.3g}"


def assert_all_close(actual, expected, tol, what=""):
    """assert_close over two equally long sequences (None entries must match None)."""
    actual, expected = list(actual), list(expected)
    assert len(actual) == len(expected), what
    for k, (a, e) in enumerate(zip(actual, expected)):
        if e is None:
            assert a is None, f"{what}[{k}]: expected None, got {type(a).__name__}"
        else:
            assert_close(a, e, tol, f"{what}[{k}]")
