"""Shared helpers for the fastlstm tests (imported as ``from helpers import ...``).

A "kind" names a cell and its options: "rnn_tanh", "rnn_relu", "gru", "lstm", and the LSTM with
a projection ("lstmp"), with peepholes ("lstm_peephole") or both ("lstmp_peephole"). The helpers
below hide the differences between their signatures (one state or two, optional weights) so that
a test can be written once and parametrized over kinds.
"""
import os
import site
import subprocess
import sys
from pathlib import Path

import numpy as np

import fastlstm
from fastlstm import native, reference
from fastlstm.cells import CELLS

KINDS = ("rnn_tanh", "rnn_relu", "gru", "lstm", "lstmp", "lstm_peephole", "lstmp_peephole")
BACKENDS = {"reference": reference, "native": native}
DTYPES = (np.float32, np.float64)


def cell_of(kind):
    return kind.split("_")[0].rstrip("p")


def n_states(kind):
    return CELLS[cell_of(kind)].n_states


def n_gates(kind):
    return CELLS[cell_of(kind)].gates


def projects(kind):
    return kind.startswith("lstmp")


def has_peephole(kind):
    return kind.endswith("peephole")


def proj_of(H):
    """The projection size the tests use for a hidden size H (layers need it below H)."""
    return max(1, H // 2)


def extra_names(kind):
    """The optional LSTM weights of a kind, in the order the backends return their gradients."""
    return ("w_hr",) * projects(kind) + ("w_peephole",) * has_peephole(kind)


def weight_names(kind):
    return ("w_ih", "w_hh", "b_ih", "b_hh") + extra_names(kind)


def state_sizes(kind, H):
    """The last dimension of each state: h (P), then the LSTM's c (H)."""
    P = proj_of(H) if projects(kind) else H
    return (P, H)[:n_states(kind)]


class BrokenTensor:
    """Has a .detach() like a torch tensor, but is not one: a value no argument may take."""

    def detach(self):
        raise RuntimeError("not a tensor")

    def __repr__(self):
        return "BrokenTensor()"


# ---------------------------------------------------------------- functional API


def random_weights(rng, kind, I, H, dtype=np.float64, bias=True, scale=0.5):
    """Weights with torch's shapes, in the order of :func:`weight_names`; biases None when
    ``bias`` is False."""
    GH, P = n_gates(kind) * H, state_sizes(kind, H)[0]
    w = [scale * rng.standard_normal((GH, I)), scale * rng.standard_normal((GH, P))]
    if bias:
        w += [scale * rng.standard_normal(GH), scale * rng.standard_normal(GH)]
    else:
        w += [None, None]
    extra = {"w_hr": (P, H), "w_peephole": (3 * H,)}
    w += [scale * rng.standard_normal(extra[name]) for name in extra_names(kind)]
    return tuple(None if a is None else a.astype(dtype) for a in w)


def random_problem(rng, kind, T, B, I, H, dtype=np.float64, bias=True, scale=0.5):
    """Inputs, initial states, weights and output gradients for one functional call."""
    sizes = state_sizes(kind, H)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    states = tuple(rng.standard_normal((B, n)).astype(dtype) for n in sizes)
    weights = random_weights(rng, kind, I, H, dtype, bias, scale)
    dy = rng.standard_normal((T, B, sizes[0])).astype(dtype)
    dstates = tuple(rng.standard_normal((B, n)).astype(dtype) for n in sizes)
    return x, states, weights, dy, dstates


def f_forward(backend, kind, x, states, weights, batch_sizes=None, training=True):
    """Functional forward of any kind, padded or (with batch_sizes) packed: returns
    ``(y, finals, ctx)``, finals a tuple."""
    mod = BACKENDS[backend] if isinstance(backend, str) else backend
    nonlinearity = kind.split("_")[1] if cell_of(kind) == "rnn" else "tanh"
    return CELLS[cell_of(kind)].call_forward(mod, x, states, dict(zip(weight_names(kind), weights)),
                                             batch_sizes, training, nonlinearity)


def f_backward(backend, kind, ctx, dy, dstates, **options):
    """Functional backward of any kind: returns ``(dx, dinits, dweights)``, tuples, dweights in
    the order of :func:`weight_names` (None for the biases of a layer without); ``options`` go
    to the backward (input_grad)."""
    mod = BACKENDS[backend] if isinstance(backend, str) else backend
    cell = CELLS[cell_of(kind)]
    grads = cell.call_backward(mod, ctx, dy, dstates, **options)
    return (grads["x"], tuple(grads[s] for s in cell.states),
            tuple(grads.get(name) for name in weight_names(kind)))


def run_functional(backend, kind, problem, batch_sizes=None):
    """Functional forward (padded, or packed with ``batch_sizes``) then backward of ``problem =
    (x, states, weights, dy, dstates)``: the names and the arrays of every output and gradient,
    the weight gradients named as in :func:`weight_names`."""
    x, states, weights, dy, dstates = problem
    y, finals, ctx = f_forward(backend, kind, x, states, weights, batch_sizes)
    dx, dinits, dweights = f_backward(backend, kind, ctx, dy, dstates)
    names = (["y", "h_n", "c_n"][:1 + len(finals)] + ["dx", "dh0", "dc0"][:1 + len(dinits)]
             + list(weight_names(kind)))
    return names, [y, *finals, dx, *dinits, *dweights]


# ---------------------------------------------------------------- layers


def make_layer(kind, input_size, hidden_size, **kwargs):
    """The layer of a kind; keyword arguments go to the constructor."""
    cell = cell_of(kind)
    if cell == "lstm":
        if projects(kind):
            kwargs.setdefault("proj_size", proj_of(hidden_size))
        return fastlstm.LSTM(input_size, hidden_size, peephole=has_peephole(kind), **kwargs)
    if cell == "gru":
        return fastlstm.GRU(input_size, hidden_size, **kwargs)
    return fastlstm.RNN(input_size, hidden_size, nonlinearity=kind.split("_")[1], **kwargs)


def layer_forward(layer, x, states=None, lengths=None):
    """Run a layer with ``states`` a tuple (h0,) / (h0, c0) or None; returns ``(y, finals)``."""
    if isinstance(layer, fastlstm.LSTM):
        y, (h_n, c_n) = layer(x, None if states is None else tuple(states), lengths=lengths)
        return y, (h_n, c_n)
    y, h_n = layer(x, None if states is None else states[0], lengths=lengths)
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
    P, dtype = layer.output_size, layer.dtype
    x_shape = (B, T, layer.input_size) if layer.batch_first else (T, B, layer.input_size)
    y_shape = (B, T, D * P) if layer.batch_first else (T, B, D * P)
    s_shapes = [(layer.num_layers * D, B, n) for n in layer_state_sizes(layer)]
    x = rng.standard_normal(x_shape).astype(dtype)
    states = tuple(rng.standard_normal(s).astype(dtype) for s in s_shapes)
    dy = rng.standard_normal(y_shape).astype(dtype)
    dstates = tuple(rng.standard_normal(s).astype(dtype) for s in s_shapes)
    return x, states, dy, dstates


def layer_state_sizes(layer):
    """The last dimension of each of a layer's states: h, then the LSTM's c."""
    if isinstance(layer, fastlstm.LSTM):
        return layer.output_size, layer.hidden_size
    return (layer.hidden_size,)


def grads_copy(layer):
    return {name: g.copy() for name, g in layer.grads.items()}


def run_layer(layer, x, states, dy, dstates, lengths=None):
    """Forward (with ``lengths``) then backward; returns ``(y, finals, dx, dinits, grads)`` with
    the gradients of this call only."""
    layer.zero_grad()
    y, finals = layer_forward(layer, x, states, lengths)
    dx, dinits = layer_backward(layer, dy, dstates)
    return y, finals, dx, dinits, grads_copy(layer)


def run_arrays(run):
    """The arrays of a :func:`run_layer` result as ``(name, array)`` pairs: y, the final states,
    dx, the initial states' gradients, then the parameter gradients."""
    y, finals, dx, dinits, grads = run
    return ([("y", y), *zip(("h_n", "c_n"), finals), ("dx", dx), *zip(("dh0", "dc0"), dinits)]
            + list(grads.items()))


def compare_layer_runs(*runs, check):
    """``check(name, a, b, ...)`` on the arrays of the same name in :func:`run_layer` results."""
    arrays = [run_arrays(run) for run in runs]
    names = [name for name, _ in arrays[0]]
    assert all([name for name, _ in a] == names for a in arrays), "the runs' arrays differ"
    for k, name in enumerate(names):
        check(name, *(a[k][1] for a in arrays))


# ---------------------------------------------------------------- finite differences

# Step and tolerance of the central differences in float64: test_gradcheck.py's docstring
# says why a relative error of 1e-6 is far above what they produce and far below a wrong term.
FD_EPS = 1e-6
FD_TOL = 1e-6
T, B, I, H = 4, 2, 3, 2


def fd_grad(loss, a):
    """Central differences of ``loss()`` with respect to every element of ``a``, which loss()
    reads and which is perturbed in place (and restored)."""
    flat = a.reshape(-1)
    assert np.shares_memory(flat, a), "fd_grad needs a contiguous array to perturb in place"
    g = np.empty(a.size)
    for k in range(a.size):
        old = flat[k]
        flat[k] = old + FD_EPS
        plus = loss()
        flat[k] = old - FD_EPS
        minus = loss()
        flat[k] = old
        g[k] = (plus - minus) / (2 * FD_EPS)
    return g.reshape(a.shape)


def assert_backward_matches_fd(kind, loss, x, states, weights, dx, dinits, dweights):
    """A functional backward's gradients (dx, the initial states', the weights' in the order of
    :func:`weight_names`) against central differences of ``loss()``, which reads x, the states
    and the weights; a weight given as None must get a None gradient."""
    assert_close(dx, fd_grad(loss, x), FD_TOL, "dx")
    for name, s, ds in zip(("dh0", "dc0"), states, dinits):
        assert ds.shape == s.shape
        assert_close(ds, fd_grad(loss, s), FD_TOL, name)
    assert len(dweights) == len(weights)
    for name, w, dw in zip(weight_names(kind), weights, dweights, strict=True):
        if w is None:
            assert dw is None, f"{name} must be None for a layer without biases"
        else:
            assert_close(dw, fd_grad(loss, w), FD_TOL, name)


# ---------------------------------------------------------------- comparisons

# Native against reference: float64 to 1e-10 relative; a float32 result within F32_FACTOR times
# the reference's own float32 error against a float64 truth, plus F32_FLOOR, and at most F32_MAX.
# test_native_vs_reference.py's docstring gives the reasoning.
TOL64 = 1e-10
F32_FACTOR, F32_FLOOR, F32_MAX = 8.0, 1e-6, 1e-4


def as64_tree(args):
    """Arrays, and tuples/lists of them at any depth, converted to float64 (None stays None)."""
    def convert(a):
        if a is None or isinstance(a, np.ndarray):
            return None if a is None else np.asarray(a, np.float64)
        return [convert(b) for b in a]

    return convert(args)


def assert_f32_like_reference(name, native32, reference32, truth64):
    """The float32 policy above: the native result's error against ``truth64`` (the reference in
    float64 on the same inputs) is within F32_FACTOR of the float32 reference's, plus F32_FLOOR,
    and at most F32_MAX."""
    assert native32.dtype == np.float32 and reference32.dtype == np.float32, name
    err_nat, err_ref = max_rel_err(native32, truth64), max_rel_err(reference32, truth64)
    assert err_nat <= F32_FACTOR * err_ref + F32_FLOOR, (
        f"{name}: native float32 error {err_nat:.3g}, reference float32 error {err_ref:.3g}")
    assert err_nat <= F32_MAX, f"{name}: native float32 error {err_nat:.3g}"


def assert_functional_matches(names, native, reference, truth64=None):
    """:func:`run_functional` results of the two backends, by name (None must match None):
    float64 to TOL64; float32, given ``truth64`` (the reference's float64 results on the same
    inputs), by the float32 policy."""
    for k, (name, nat, ref) in enumerate(zip(names, native, reference, strict=True)):
        if ref is None:
            assert nat is None, name
        elif truth64 is None:
            assert nat.dtype == np.float64 and nat.shape == ref.shape, name
            assert_close(nat, ref, TOL64, name)
        else:
            assert_f32_like_reference(name, nat, ref, truth64[k])


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


def assert_layer_run_close(layer, run, expected, tol):
    """A layer's forward and backward ``run = (y, finals, dx, dinits)``, with the gradients it
    accumulated in ``layer.grads``, against ``expected = (y, finals, dx, dinits, grads)``
    (another implementation's: torch's), each to :func:`assert_close`'s ``tol``."""
    y, finals, dx, dinits = run
    y_e, finals_e, dx_e, dinits_e, grads_e = expected
    assert_close(y, y_e, tol, "y")
    for name, a, b in zip(("h_n", "c_n"), finals, finals_e):
        assert_close(a, b, tol, name)
    assert_close(dx, dx_e, tol, "dx")
    for name, a, b in zip(("dh0", "dc0"), dinits, dinits_e):
        assert_close(a, b, tol, name)
    assert layer.grads.keys() == grads_e.keys()
    for name, g in grads_e.items():
        assert_close(layer.grads[name], g, tol, name)


def assert_all_close(actual, expected, tol, what=""):
    """assert_close over two equally long sequences (None entries must match None)."""
    actual, expected = list(actual), list(expected)
    assert len(actual) == len(expected), what
    for k, (a, e) in enumerate(zip(actual, expected)):
        if e is None:
            assert a is None, f"{what}[{k}]: expected None, got {type(a).__name__}"
        else:
            assert_close(a, e, tol, f"{what}[{k}]")


# ---------------------------------------------------------------- torch.nn as the oracle
# (torch is imported here only by the tests that call these, which skip without it)

def make_torch(kind, I, H, dtype=np.float64, **kwargs):
    """The torch.nn module of ``kind`` (torch has no peepholes) with I inputs and H units."""
    import torch
    tdtype = torch.float32 if np.dtype(dtype) == np.float32 else torch.float64
    if cell_of(kind) == "lstm":
        if projects(kind):
            kwargs["proj_size"] = proj_of(H)
        return torch.nn.LSTM(I, H, dtype=tdtype, **kwargs)
    if cell_of(kind) == "gru":
        return torch.nn.GRU(I, H, dtype=tdtype, **kwargs)
    return torch.nn.RNN(I, H, nonlinearity=kind.split("_")[1], dtype=tdtype, **kwargs)


def torch_run(module, kind, x, states, dy, dstates, lengths=None):
    """Forward and backward in torch, on a PackedSequence of ``lengths`` when given (padded back
    to x's T); everything as NumPy arrays: y, finals, dx, dinits, parameter grads."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    x_t = torch.from_numpy(x).requires_grad_()
    s_t = [torch.from_numpy(s).requires_grad_() for s in states]
    inp = x_t
    if lengths is not None:
        inp = pack_padded_sequence(x_t, torch.tensor(lengths, dtype=torch.int64),
                                   batch_first=module.batch_first, enforce_sorted=False)
    if cell_of(kind) == "lstm":
        out, (h_n, c_n) = module(inp, tuple(s_t))
        finals = (h_n, c_n)
    else:
        out, h_n = module(inp, s_t[0])
        finals = (h_n,)
    y = out
    if lengths is not None:
        T = x.shape[1 if module.batch_first else 0]
        y, _ = pad_packed_sequence(out, batch_first=module.batch_first, total_length=T)
    loss = (y * torch.from_numpy(dy)).sum()
    for f, g in zip(finals, dstates):
        loss = loss + (f * torch.from_numpy(g)).sum()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in module.named_parameters()}
    return (y.detach().numpy(), [f.detach().numpy() for f in finals], x_t.grad.numpy(),
            [s.grad.numpy() for s in s_t], grads)


# The layer-normalised LSTM ("lnlstm", equations in fastlstm.reference's docstring) has its own
# signature: its weights go by name, in the order of lnlstm_forward's arguments.
LNLSTM_WEIGHTS = ("w_ih", "w_hh", "b_ih", "b_hh", "g_ih", "g_hh", "g_c", "b_c")


def random_lnlstm_weights(rng, I, H, dtype=np.float64, bias=True, scale=0.5):
    """lnlstm weights by name (LNLSTM_WEIGHTS): w_ih (4H, I), w_hh (4H, H), b_ih, b_hh (4H,) or
    both None, gains g_ih, g_hh (4H,) and g_c (H,) around 1, b_c (H,)."""
    w = {"w_ih": scale * rng.standard_normal((4 * H, I)),
         "w_hh": scale * rng.standard_normal((4 * H, H)),
         "b_ih": scale * rng.standard_normal(4 * H) if bias else None,
         "b_hh": scale * rng.standard_normal(4 * H) if bias else None,
         "g_ih": 1 + scale * rng.standard_normal(4 * H),
         "g_hh": 1 + scale * rng.standard_normal(4 * H),
         "g_c": 1 + scale * rng.standard_normal(H),
         "b_c": scale * rng.standard_normal(H)}
    return {k: None if a is None else a.astype(dtype) for k, a in w.items()}


def torch_lnlstm_direction(x, h0, c0, w, steps, eps=1e-5):
    """One layer-normalised LSTM layer in one direction as a plain torch loop over steps, with
    torch.nn.functional.layer_norm, sigmoid and tanh: torch tensors in and out, under autograd.
    ``x`` (T, B, I), ``h0``, ``c0`` (B, H), ``w`` the weights by the names of LNLSTM_WEIGHTS (no
    b_ih and b_hh for none), ``steps`` (B,) each sequence's length: past it, its y is zero and
    its h and c stay as they were. Returns y (T, B, H), h_n and c_n."""
    import torch
    import torch.nn.functional as F

    T, B, _ = x.shape
    H = c0.shape[1]
    h, c, ys = h0, c0, []
    for t in range(T):
        a = (F.layer_norm(x[t] @ w["w_ih"].T, (4 * H,), weight=w["g_ih"], bias=None, eps=eps)
             + F.layer_norm(h @ w["w_hh"].T, (4 * H,), weight=w["g_hh"], bias=None, eps=eps))
        if "b_ih" in w:
            a = a + w["b_ih"] + w["b_hh"]
        a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
        c_new = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(a_g)
        h_new = torch.sigmoid(a_o) * torch.tanh(
            F.layer_norm(c_new, (H,), weight=w["g_c"], bias=w["b_c"], eps=eps))
        running = (t < steps)[:, None]
        h, c = torch.where(running, h_new, h), torch.where(running, c_new, c)
        ys.append(torch.where(running, h_new, torch.zeros_like(h_new)))
    y = torch.stack(ys) if ys else x.new_zeros((0, B, H))
    return y, h, c


def torch_lnlstm_loop(x, states, weights, dy, dstates, lengths=None, eps=1e-5):
    """The layer-normalised LSTM written as a plain loop over steps in torch
    (:func:`torch_lnlstm_direction`), run under autograd: an oracle for the backends'
    lnlstm_forward and lnlstm_backward that shares no code with them.

    ``x`` (T, B, I) padded; ``states`` (h0, c0), each (B, H); ``weights`` by the names of
    LNLSTM_WEIGHTS (b_ih and b_hh None or absent for none); the loss is sum(y * dy) +
    sum(h_n * dh_n) + sum(c_n * dc_n), ``dstates = (dh_n, dc_n)``. ``lengths``: None (every
    sequence runs T steps) or each sequence's length, at most T. Returns y (T, B, H), (h_n, c_n)
    and the loss's gradients as a dict keyed as lnlstm_backward's: "x" (T, B, I), "h0", "c0" and
    the weights' names (zeros for what the loss does not depend on), all NumPy arrays of x's
    dtype.
    """
    import torch

    def leaf(a):
        return torch.from_numpy(np.array(a)).requires_grad_()

    x_t, h0, c0 = leaf(x), leaf(states[0]), leaf(states[1])
    w = {name: leaf(a) for name, a in weights.items() if a is not None}
    T, B, _ = x.shape
    steps = torch.as_tensor(np.full(B, T) if lengths is None else np.asarray(lengths))
    y, h, c = torch_lnlstm_direction(x_t, h0, c0, w, steps, eps)
    dy_t, dh_t, dc_t = (torch.from_numpy(np.array(a)) for a in (dy, *dstates))
    loss = (y * dy_t).sum() + (h * dh_t).sum() + (c * dc_t).sum()
    loss.backward()
    leaves = {"x": x_t, "h0": h0, "c0": c0, **w}
    grads = {name: (torch.zeros_like(a) if a.grad is None else a.grad).numpy()
             for name, a in leaves.items()}
    return y.detach().numpy(), (h.detach().numpy(), c.detach().numpy()), grads


def torch_lnlstm_layers(layer, x, states, dy, dstates, lengths=None):
    """The oracle of a whole ``fastlstm.LSTM(layer_norm=True)`` (stacked, bidirectional, with
    ``lengths``; no dropout, not batch first): :func:`torch_lnlstm_direction` per layer and
    direction, the reverse direction reading each sequence backwards from its own end, with the
    layer's parameters by name. Returns y, (h_n, c_n), dx, (dh0, dc0) and the parameters'
    gradients by name, as NumPy arrays."""
    import torch

    def leaf(a):
        return torch.from_numpy(np.array(a)).requires_grad_()

    T, B, _ = x.shape
    D = 2 if layer.bidirectional else 1
    steps = torch.as_tensor(np.full(B, T) if lengths is None else np.asarray(lengths))
    # reverse[t, b]: the step that is t steps before sequence b's end (itself past it)
    idx = torch.arange(T)[:, None]
    reverse = torch.where(idx < steps, steps - 1 - idx, idx)
    x_t, h0, c0 = leaf(x), leaf(states[0]), leaf(states[1])
    params = {name: leaf(a) for name, a in layer.state_dict().items()}
    names = ("w_ih", "w_hh", "b_ih", "b_hh", "g_ih", "g_hh", "g_c", "b_c")
    torch_names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "layernorm_ih_weight",
                   "layernorm_hh_weight", "layernorm_c_weight", "layernorm_c_bias")
    inp, h_n, c_n = x_t, [], []
    for k in range(layer.num_layers):
        outs = []
        for d in range(D):
            suffix = f"_l{k}" + ("_reverse" if d else "")
            w = {n: params[t + suffix] for n, t in zip(names, torch_names)
                 if t + suffix in params}
            flip = (lambda a: a.gather(0, reverse[:, :, None].expand_as(a))) if d else \
                (lambda a: a)
            y, h, c = torch_lnlstm_direction(flip(inp), h0[k * D + d], c0[k * D + d], w, steps)
            outs.append(flip(y))
            h_n.append(h)
            c_n.append(c)
        inp = torch.cat(outs, dim=2)
    h_n, c_n = torch.stack(h_n), torch.stack(c_n)
    dy_t, dh_t, dc_t = (torch.from_numpy(np.array(a)) for a in (dy, *dstates))
    loss = (inp * dy_t).sum() + (h_n * dh_t).sum() + (c_n * dc_t).sum()
    loss.backward()
    grads = {name: p.grad.numpy() for name, p in params.items()}
    return (inp.detach().numpy(), (h_n.detach().numpy(), c_n.detach().numpy()),
            x_t.grad.numpy(), (h0.grad.numpy(), c0.grad.numpy()), grads)


class Twins:
    """A layer under test and an identical twin that never sees the bad call.

    Both ran one training forward on the same data (with dropout, so the dropout generator is
    part of the state that must survive), with ``lengths`` when given. ``assert_unchanged`` then
    compares everything the bad call could have touched, and runs backward and a second forward
    on both (with those lengths and without).
    """
    T, B, I, H, L = 5, 2, 3, 4, 2
    LAYER_KW = dict(num_layers=L, dropout=0.5, dtype=np.float32, seed=5)

    def __init__(self, kind, backend, lengths=None):
        self.kind, self.lengths = kind, lengths
        self.layer = make_layer(kind, self.I, self.H, backend=backend, **self.LAYER_KW)
        self.twin = make_layer(kind, self.I, self.H, backend=backend, **self.LAYER_KW)
        rng = np.random.default_rng(0)
        T, B, L = self.T, self.B, self.L
        self.x = rng.standard_normal((T, B, self.I)).astype(np.float32)
        sizes = layer_state_sizes(self.layer)
        self.states = tuple(rng.standard_normal((L, B, n)).astype(np.float32) for n in sizes)
        self.dy = rng.standard_normal((T, B, sizes[0])).astype(np.float32)
        self.dstates = tuple(rng.standard_normal((L, B, n)).astype(np.float32) for n in sizes)
        for layer in (self.layer, self.twin):
            layer_forward(layer, self.x, self.states, lengths)
        self.params_before = self.layer.state_dict()

    @property
    def good_states(self):
        return self.states if n_states(self.kind) == 2 else self.states[0]

    def assert_unchanged(self, backward=True):
        layer, twin = self.layer, self.twin
        after = layer.state_dict()
        assert after.keys() == self.params_before.keys()
        for name in after:
            assert np.array_equal(after[name], self.params_before[name]), name
        assert layer.training is twin.training
        for name, g in layer.grads.items():
            assert np.array_equal(g, twin.grads[name]), name
        if backward:  # the saved forward pass (and its lengths) is the one from before the call
            got = layer_backward(layer, self.dy, self.dstates)
            expected = layer_backward(twin, self.dy, self.dstates)
            assert np.array_equal(got[0], expected[0])
            for a, b in zip(got[1], expected[1], strict=True):
                assert np.array_equal(a, b)
            for name, g in layer.grads.items():
                assert np.array_equal(g, twin.grads[name]), name
        # The dropout generator did not advance: the next training forward draws the same masks.
        for lengths in ((None,) if self.lengths is None else (self.lengths, None)):
            y_got, _ = layer_forward(layer, self.x, self.states, lengths)
            y_expected, _ = layer_forward(twin, self.x, self.states, lengths)
            assert np.array_equal(y_got, y_expected)


# ---------------------------------------------------------------- child processes

TESTS = Path(__file__).resolve().parent
# The directory holding the fastlstm this process imported: site-packages after `pip install .`,
# the source tree's root for an in-place build. A child Python must import that same one: run
# from the source tree's root, `python -c` and `python -m` would find its fastlstm/ first
# (Python puts the working directory first on sys.path), which has no compiled extension when the
# tests run against an installed fastlstm.
FASTLSTM_HOME = Path(fastlstm.__file__).resolve().parents[1]


def _searched_anyway(directory):
    """Whether a child Python searches ``directory`` without being told: a site directory."""
    sites = site.getsitepackages() + [site.getusersitepackages()]
    return any(os.path.realpath(s) == str(directory) for s in sites)


def run_python(args, env=None, cwd=TESTS, wrapper=(), **kwargs):
    """``subprocess.run([*wrapper, sys.executable, *args], ...)`` for a child that imports the
    fastlstm this process imported (FASTLSTM_HOME): it runs in ``cwd`` (default tests/, which
    holds no fastlstm) with FASTLSTM_HOME first on its PYTHONPATH unless that is a site
    directory, which it searches anyway (put first, it would come before the standard library).
    ``env``: the child's environment (default os.environ); ``wrapper``: a command that runs the
    rest; ``kwargs`` go to subprocess.run."""
    env = dict(os.environ if env is None else env)
    if not _searched_anyway(FASTLSTM_HOME):
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FASTLSTM_HOME),
                                                          env.get("PYTHONPATH")]))
    return subprocess.run([*wrapper, sys.executable, *args], env=env, cwd=cwd, **kwargs)
