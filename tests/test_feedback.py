"""Feedback from later layers (issue 21): stack_forward/stack_backward, the layers' feedback=,
their streams and the torch bridge.

The oracles, none of them the code under test:
- central finite differences in float64 (tests/helpers.py's fd_grad, with test_gradcheck.py's
  tolerance and its reasoning) for the reference's stack_backward;
- the per-layer functions run one after another, for a stack without feedback (exactly: the
  stack runs the same products on the same rows), and today's layer (feedback=None), for zero
  feedback weights;
- a Python loop of torch.nn.RNNCell / LSTMCell / GRUCell over the concatenated inputs, with
  weight_ih = [w_ih | w_fb], under autograd, for outputs and every gradient (1e-10 in float64,
  test_torch.py's tolerance);
- the reference backend, for the native one and for float32 (test_native_vs_reference.py's
  policy, relaxed to 1e-4 relative for float32 against float64).
"""
import numpy as np
import pytest
from helpers import (FD_TOL, assert_close, assert_layer_run_close, cell_of, fd_grad, has_peephole,
                     layer_backward, layer_forward, make_layer, n_gates, n_states, proj_of,
                     projects)

import fastlstm
from fastlstm import native, reference

BACKENDS = ["reference", "native"]
MODULES = {"reference": reference, "native": native}

# (num_layers, feedback pairs)
FEEDBACKS = {"top": (2, [(1, 0)]), "multi": (3, [(2, 0), (2, 1), (1, 0)])}
FD_KINDS = ("rnn_tanh", "rnn_relu", "lstm", "lstmp_peephole", "gru")
TORCH_KINDS = ("rnn_tanh", "rnn_relu", "lstm", "gru")   # torch's cells: no projection, peepholes
TOL64 = 1e-10
# The same computation, grouped differently by a BLAS: a few float64 roundings (unit 1.1e-16).
TOL_SAME = 1e-13


def same(a, b):
    """a equals b to TOL_SAME relative to max(1, max |b|), with the same shape."""
    return a.shape == b.shape and bool(np.abs(a - b).max(initial=0) <= TOL_SAME * max(
        1.0, float(np.abs(b).max(initial=0))))


def sources_of(pairs, k):
    return sorted(s for s, t in pairs if t == k)


def nonlinearity_of(kind):
    return kind.split("_")[1] if cell_of(kind) == "rnn" else "tanh"


# ---------------------------------------------------------------- the functional stack


def stack_problem(rng, kind, L, pairs, T=4, B=3, I=3, H=2, batch_sizes=None, n_seq=None,
                  masks=False, scale=0.6):
    """Random x, states, weights (one dict per layer), masks, dy and dfinals for a stack."""
    G, P = n_gates(kind), proj_of(H) if projects(kind) else H
    weights = []
    for k in range(L):
        w = {"w_ih": rng.standard_normal((G * H, I if k == 0 else P)),
             "w_hh": rng.standard_normal((G * H, P)),
             "b_ih": rng.standard_normal(G * H), "b_hh": rng.standard_normal(G * H)}
        if projects(kind):
            w["w_hr"] = rng.standard_normal((P, H))
        if has_peephole(kind):
            w["w_peephole"] = rng.standard_normal(3 * H)
        if sources_of(pairs, k):
            w["w_fb"] = rng.standard_normal((G * H, P * len(sources_of(pairs, k))))
        weights.append({kind_: scale * a for kind_, a in w.items()})
    n_seq = B if n_seq is None else n_seq
    if batch_sizes is None:
        x, N, y_shape = rng.standard_normal((T, B, I)), T * B, (T, B, P)
    else:
        N = int(np.sum(batch_sizes))
        x, y_shape = rng.standard_normal((N, I)), (N, P)
    sizes = (P, H)[:n_states(kind)]
    states = [tuple(rng.standard_normal((n_seq, n)) for n in sizes) for _ in range(L)]
    mask_list = None
    if masks:
        mask_list = [None] + [(rng.random((N, P)) < 0.7) / 0.7 for _ in range(1, L)]
    dy = rng.standard_normal(y_shape)
    dfinals = [tuple(rng.standard_normal((n_seq, n)) for n in sizes) for _ in range(L)]
    return x, states, weights, mask_list, dy, dfinals


def stack_call(backend, kind, x, states, weights, pairs, batch_sizes=None, masks=None,
               training=True):
    return MODULES[backend].stack_forward(cell_of(kind), x, states, weights, pairs,
                                          nonlinearity_of(kind), batch_sizes=batch_sizes,
                                          training=training, masks=masks)


def min_abs_preactivation(ctx, weights):
    """min |a| over every RNN pre-activation of a stack, recomputed from its saved states: the
    relu's finite differences are valid only away from its kink."""
    prev = ctx.batch.prev_rows()
    margin = np.inf
    for k, (c, w) in enumerate(zip(ctx.layers, weights)):
        fed = [ctx.layers[s].hs[prev] for s in ctx.sources(k)]
        z = np.concatenate([c.x, *fed, c.hs[prev]], axis=1)
        W = np.concatenate([w["w_ih"]] + ([w["w_fb"]] if fed else []) + [w["w_hh"]], axis=1)
        margin = min(margin, float(np.abs(z @ W.T + w["b_ih"] + w["b_hh"]).min()))
    return margin


# the relu's cases: seeds whose every layer runs on both sides of the kink, away from it
SEEDS = {("rnn_relu", "top", "padded"): 0, ("rnn_relu", "top", "packed-masks"): 0,
         ("rnn_relu", "multi", "padded"): 1, ("rnn_relu", "multi", "packed-masks"): 2}


@pytest.mark.parametrize("form", ["padded", "packed-masks"])
@pytest.mark.parametrize("fb", list(FEEDBACKS))
@pytest.mark.parametrize("kind", FD_KINDS)
def test_reference_stack_backward_matches_finite_differences(kind, fb, form):
    L, pairs = FEEDBACKS[fb]
    rng = np.random.default_rng(SEEDS.get((kind, fb, form), 7))
    packed = form == "packed-masks"
    # packed: lengths 4, 3, 2 running, and a fourth sequence of length 0 (states only)
    batch_sizes = np.array([3, 3, 2, 1]) if packed else None
    x, states, weights, masks, R, S = stack_problem(
        rng, kind, L, pairs, batch_sizes=batch_sizes, n_seq=4 if packed else None,
        masks=packed)

    def loss():
        y, finals, _ = stack_call("reference", kind, x, states, weights, pairs, batch_sizes,
                                  masks, training=False)
        return float(np.sum(y * R) + sum(np.sum(f * s) for fl, sl in zip(finals, S)
                                         for f, s in zip(fl, sl)))

    y, finals, ctx = stack_call("reference", kind, x, states, weights, pairs, batch_sizes, masks)
    if kind == "rnn_relu":
        assert min_abs_preactivation(ctx, weights) > 1e-3
        for c in ctx.layers:
            h = c.hs[ctx.batch.B:]
            assert (h > 0).any() and (h == 0).any(), "both sides of the relu should be exercised"
    dx, dinits, grads = reference.stack_backward(ctx, R, S)
    assert_close(dx, fd_grad(loss, x), FD_TOL, "dx")
    for k in range(L):
        for name, s, ds in zip(("dh0", "dc0"), states[k], dinits[k]):
            assert_close(ds, fd_grad(loss, s), FD_TOL, f"{name} of layer {k}")
        assert grads[k].keys() == weights[k].keys(), k
        for name, w in weights[k].items():
            assert_close(grads[k][name], fd_grad(loss, w), FD_TOL, f"{name} of layer {k}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("kind", ("rnn_tanh", "rnn_relu", "gru", "lstm", "lstmp_peephole"))
def test_stack_without_feedback_is_the_layers_one_after_another(kind, packed, backend):
    """feedback=() runs layer k on layer k-1's output times masks[k], as the per-layer functions
    of the same backend do: the same arithmetic, to rounding (TOL_SAME). Not bit for bit: the
    stack forms a layer's input gradient step by step, as the layer below needs it within the
    step, where the per-layer backward forms it in one product over all rows, and a BLAS may
    sum the two in different orders (it does here for odd sizes)."""
    rng = np.random.default_rng(3)
    mod, L = MODULES[backend], 3
    batch_sizes = np.array([3, 3, 2, 1]) if packed else None
    x, states, weights, masks, dy, dfinals = stack_problem(
        rng, kind, L, [], T=4, B=3, H=3, batch_sizes=batch_sizes, masks=True)
    y, finals, ctx = stack_call(backend, kind, x, states, weights, (), batch_sizes, masks)
    dx, dinits, grads = mod.stack_backward(ctx, dy, dfinals)

    cell = cell_of(kind)
    forward, backward = getattr(mod, f"{cell}_forward"), getattr(mod, f"{cell}_backward")
    extra = {"nonlinearity": nonlinearity_of(kind)} if cell == "rnn" else {}
    inp, ctxs = x, []
    for k in range(L):
        if k:
            inp = (inp.reshape(-1, inp.shape[-1]) * masks[k]).reshape(inp.shape)
        w = dict(weights[k])
        opt = {n: w.pop(n) for n in ("w_hr", "w_peephole") if n in w}
        out = forward(inp, *states[k], w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"], **opt,
                      **extra, batch_sizes=batch_sizes)
        assert same(out[1:-1][0], finals[k][0]), f"h_n of layer {k}"
        if cell == "lstm":
            assert same(out[2], finals[k][1]), f"c_n of layer {k}"
        inp, _ = out[0], ctxs.append(out[-1])
    assert same(inp, y)
    d = dy
    for k in reversed(range(L)):
        got = backward(ctxs[k], d, *dfinals[k])
        for name, b in zip(("h0", "c0"), dinits[k]):
            assert same(got.pop(name), b), f"d{name} of layer {k}"
        d_in = got.pop("x")
        assert got.keys() == grads[k].keys()
        for name, g in got.items():
            assert same(g, grads[k][name]), f"{name} of layer {k}"
        d = d_in if k == 0 else (d_in.reshape(-1, d_in.shape[-1]) * masks[k]).reshape(
            d_in.shape)
    assert same(d, dx)


# H = 48: layer 0's fed-back inputs (two sources, F = 96) are wider than any of its other
# widths (I, P, H) by more than a panel, as are the copies of its float64 weight gradient dw_fb
# in a build that forms them itself (gemm_tn).
@pytest.mark.parametrize("H", [4, 48])
@pytest.mark.parametrize("kind", FD_KINDS)
def test_native_stack_matches_reference(kind, H):
    rng = np.random.default_rng(12)
    L, pairs = FEEDBACKS["multi"]
    for batch_sizes, masks in ((None, False), (np.array([3, 3, 2, 1]), True)):
        problem = stack_problem(rng, kind, L, pairs, T=4, B=3, H=H, batch_sizes=batch_sizes,
                                masks=masks, scale=0.6 if H == 4 else 0.2)
        x, states, weights, m, dy, dfinals = problem
        runs = []
        for backend in ("reference", "native"):
            y, finals, ctx = stack_call(backend, kind, x, states, weights, pairs, batch_sizes, m)
            dx, dinits, grads = MODULES[backend].stack_backward(ctx, dy, dfinals)
            runs.append((y, finals, dx, dinits, grads))
        (y, finals, dx, dinits, grads), (y2, finals2, dx2, dinits2, grads2) = runs
        assert_close(y2, y, TOL64, "y")
        assert_close(dx2, dx, TOL64, "dx")
        for k in range(L):
            for a, b in zip(finals2[k] + dinits2[k], finals[k] + dinits[k]):
                assert_close(a, b, TOL64, f"states of layer {k}")
            assert grads2[k].keys() == grads[k].keys()
            for name in grads[k]:
                assert_close(grads2[k][name], grads[k][name], TOL64, f"{name} of layer {k}")


@pytest.fixture
def restore_isa():
    before = native.get_isa()
    yield
    native.set_isa(before)


# A stack of one sequence, with feedback into a later layer or with dropout between the layers,
# whose first layer alone would split its steps by units on a machine of two processors or more
# (the LSTM's and the GRU's weights are large enough, with no fed-back inputs: kernels_common.h,
# splits_units; the Elman layer's are not). The stack's loop never splits, so each build must pack
# and read that layer's weights the same way (the AVX2 build groups the panels of one-row steps:
# kernels_impl.h, row_group). H = 96 gives each of two parts 6 float or 12 double panels per gate
# block, not a whole number of the AVX2 build's groups of 8.
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("pairs, masks", [([(2, 1)], False), ([], True)],
                         ids=["feedback", "dropout"])
@pytest.mark.parametrize("kind", ("rnn_tanh", "lstm", "gru"))
def test_a_stack_of_one_sequence_matches_the_reference_on_every_build(kind, pairs, masks, dtype,
                                                                       restore_isa):
    rng = np.random.default_rng(5)
    x, states, weights, m, dy, dfinals = stack_problem(rng, kind, 3, pairs, T=5, B=1, I=7, H=96,
                                                       masks=masks, scale=0.1)
    y, finals, ctx = stack_call("reference", kind, x, states, weights, pairs, masks=m)
    dx, dinits, grads = reference.stack_backward(ctx, dy, dfinals)
    expected = [y, dx] + [a for k in range(3) for a in finals[k] + dinits[k]] + [
        grads[k][name] for k in range(3) for name in sorted(grads[k])]
    cast = (lambda tree: tree) if dtype == np.float64 else (
        lambda a: None if a is None else a.astype(np.float32))
    args = (cast(x), [tuple(map(cast, s)) for s in states],
            [{name: cast(a) for name, a in w.items()} for w in weights])
    masks32 = None if m is None else [cast(a) for a in m]
    tol = TOL64 if dtype == np.float64 else 1e-4
    for isa in native.available_isas():
        native.set_isa(isa)
        y2, finals2, ctx2 = stack_call("native", kind, *args, pairs, masks=masks32)
        dx2, dinits2, grads2 = native.stack_backward(ctx2, cast(dy),
                                                     [tuple(map(cast, d)) for d in dfinals])
        got = [y2, dx2] + [a for k in range(3) for a in finals2[k] + dinits2[k]] + [
            grads2[k][name] for k in range(3) for name in sorted(grads2[k])]
        for a, b in zip(got, expected):
            assert_close(a, b, tol, f"{kind} stack in the {isa} build")


def test_inference_forward_keeps_nothing_and_equals_training():
    rng = np.random.default_rng(1)
    L, pairs = FEEDBACKS["multi"]
    x, states, weights, _, _, _ = stack_problem(rng, "lstm", L, pairs)
    y, finals, ctx = stack_call("reference", "lstm", x, states, weights, pairs)
    y2, finals2, ctx2 = stack_call("reference", "lstm", x, states, weights, pairs,
                                   training=False)
    assert ctx2 is None and ctx is not None
    assert np.array_equal(y, y2)
    with pytest.raises(TypeError, match="StackContext"):
        reference.stack_backward(None, None, None)


@pytest.mark.parametrize("change, error, match", [
    (lambda a: a.update(feedback=[(0, 0)]), ValueError, "feedback"),
    (lambda a: a.update(feedback=[(3, 0)]), ValueError, "feedback"),
    (lambda a: a.update(feedback=[(1, 0), (1, 0)]), ValueError, "twice"),
    (lambda a: a.update(feedback=[(1, 0.5)]), TypeError, "feedback"),
    (lambda a: a["weights"][0].pop("w_fb"), TypeError, r"weights\[0\]\['w_fb'\]"),
    (lambda a: a["weights"][1].update(w_fb=np.zeros((4, 2))), ValueError,
     r"weights\[1\]\['w_fb'\] must be None"),
    (lambda a: a["weights"][0].update(w_fb=np.zeros((4, 3))), ValueError,
     r"weights\[0\]\['w_fb'\] must have shape \(2, 2\)"),
    (lambda a: a["weights"][1].update(w_ih=np.zeros((4, 3))), ValueError,
     r"weights\[1\]\['w_ih'\]"),
    (lambda a: a["weights"][1].update(b_ih=None, b_hh=None), ValueError, "same options"),
    (lambda a: a["weights"][1].update(w_xx=1), ValueError, "unknown keys"),
    (lambda a: a.update(states=[None]), TypeError, "states must be"),
    (lambda a: a.update(states=[None, (np.zeros((3, 3)),)]), ValueError, r"states\[1\]\[0\]"),
    (lambda a: a.update(masks=[np.ones((12, 2)), None]), ValueError, r"masks\[0\]"),
    (lambda a: a.update(masks=[None, np.ones((11, 2))]), ValueError, r"masks\[1\]"),
    (lambda a: a["weights"][1].update(w_hh=np.zeros((4, 2), np.float32)), TypeError,
     r"weights\[1\]\['w_hh'\] must have dtype float64"),
])
def test_bad_stack_arguments_are_refused_with_their_names(change, error, match):
    rng = np.random.default_rng(0)
    x, states, weights, _, _, _ = stack_problem(rng, "rnn_tanh", 2, [(1, 0)], T=4, B=3, H=2)
    args = dict(x=x, states=states, weights=weights, feedback=[(1, 0)], masks=None)
    change(args)
    for backend in ("reference", "native"):
        with pytest.raises(error, match=match):
            MODULES[backend].stack_forward("rnn", args["x"], args["states"], args["weights"],
                                           args["feedback"], masks=args["masks"])


def test_bad_stack_backward_arguments_are_refused():
    rng = np.random.default_rng(0)
    x, states, weights, _, _, _ = stack_problem(rng, "lstm", 2, [(1, 0)], T=4, B=3, H=2)
    _, _, ctx = stack_call("reference", "lstm", x, states, weights, [(1, 0)])
    with pytest.raises(ValueError, match=r"dy must have shape \(4, 3, 2\)"):
        reference.stack_backward(ctx, np.zeros((4, 3, 3)), None)
    with pytest.raises(TypeError, match=r"dfinals\[1\] must be a tuple \(dh_n, dc_n\)"):
        reference.stack_backward(ctx, None, [None, (np.zeros((3, 2)),)])
    with pytest.raises(ValueError, match=r"dfinals\[0\]\[1\] must have shape \(3, 2\)"):
        reference.stack_backward(ctx, None, [(None, np.zeros((3, 1))), None])
    # a context changed after its forward: refused before a kernel reads it
    ctx.w_fb[0] = np.zeros((8, 3))
    with pytest.raises(ValueError, match=r"ctx.w_fb\[0\] must be a C-contiguous float64 array "
                       r"of shape \(8, 2\)"):
        reference.stack_backward(ctx, None, None)
    ctx.w_fb[0] = np.zeros((8, 2))
    ctx.masks[1] = np.ones((5, 2))
    with pytest.raises(ValueError, match=r"ctx.masks\[1\]"):
        reference.stack_backward(ctx, None, None)
    ctx.masks[1] = None
    ctx.feedback = ((0, 1),)
    with pytest.raises(ValueError, match="feedback"):
        reference.stack_backward(ctx, None, None)


# ---------------------------------------------------------------- torch's cells as the oracle


def torch_cell_loop(torch, kind, params, x, states, pairs, L, lengths=None):
    """Run the stack as a Python loop of torch.nn cells over concatenated inputs, float64: layer
    k's cell has weight_ih = [weight_ih_l{k} | weight_fb_l{k}] and reads, at step t, its normal
    input and its sources' h of step t-1. A sequence past its length keeps its states and
    outputs zeros. Returns tensors y, finals (L, B, n), the leaf tensors x and states, and the
    cells, whose gradients hold the parameters'."""
    T, B, I = x.shape
    cell = cell_of(kind)
    cells = []
    for k in range(L):
        w_ih = params[f"weight_ih_l{k}"]
        if f"weight_fb_l{k}" in params:
            w_ih = np.concatenate([w_ih, params[f"weight_fb_l{k}"]], axis=1)
        H = params[f"weight_hh_l{k}"].shape[1]
        if cell == "lstm":
            c = torch.nn.LSTMCell(w_ih.shape[1], H, dtype=torch.float64)
        elif cell == "gru":
            c = torch.nn.GRUCell(w_ih.shape[1], H, dtype=torch.float64)
        else:
            c = torch.nn.RNNCell(w_ih.shape[1], H, nonlinearity=nonlinearity_of(kind),
                                 dtype=torch.float64)
        with torch.no_grad():
            c.weight_ih.copy_(torch.from_numpy(w_ih))
            c.weight_hh.copy_(torch.from_numpy(params[f"weight_hh_l{k}"]))
            c.bias_ih.copy_(torch.from_numpy(params[f"bias_ih_l{k}"]))
            c.bias_hh.copy_(torch.from_numpy(params[f"bias_hh_l{k}"]))
        cells.append(c)
    x_t = torch.from_numpy(x).requires_grad_()
    s_t = [torch.from_numpy(s).requires_grad_() for s in states]
    h = [s_t[0][k] for k in range(L)]
    c_ = [s_t[1][k] for k in range(L)] if cell == "lstm" else None
    alive_all = None if lengths is None else torch.tensor(
        [[t < n for n in lengths] for t in range(T)])[..., None]
    ys = []
    for t in range(T):
        h_prev, new_h = list(h), list(h)
        for k in range(L):
            inp = x_t[t] if k == 0 else new_h[k - 1]
            z = torch.cat([inp] + [h_prev[s] for s in sources_of(pairs, k)], dim=1)
            if cell == "lstm":
                hk, ck = cells[k](z, (h[k], c_[k]))
            else:
                hk, ck = cells[k](z, h[k]), None
            if alive_all is not None:
                hk = torch.where(alive_all[t], hk, h[k])
                ck = None if ck is None else torch.where(alive_all[t], ck, c_[k])
            new_h[k] = hk
            if ck is not None:
                c_[k] = ck
        h = new_h
        ys.append(h[L - 1] if alive_all is None else torch.where(alive_all[t], h[L - 1], 0.0))
    finals = [torch.stack(h)] + ([torch.stack(c_)] if cell == "lstm" else [])
    return torch.stack(ys), finals, x_t, s_t, cells


def torch_cell_loop_run(torch, kind, params, x, states, pairs, L, dy, dstates, lengths=None):
    """Forward and backward of :func:`torch_cell_loop` for the loss sum(y * dy) + sum(finals *
    dstates); NumPy arrays y, finals, dx, dinits and the parameter gradients by torch's names."""
    y, finals, x_t, s_t, cells = torch_cell_loop(torch, kind, params, x, states, pairs, L,
                                                 lengths)
    loss = (y * torch.from_numpy(dy)).sum()
    for f, g in zip(finals, dstates):
        loss = loss + (f * torch.from_numpy(g)).sum()
    loss.backward()
    grads = {}
    for k, c in enumerate(cells):
        g_ih = c.weight_ih.grad.numpy()
        I_k = params[f"weight_ih_l{k}"].shape[1]
        grads[f"weight_ih_l{k}"] = g_ih[:, :I_k]
        if f"weight_fb_l{k}" in params:
            grads[f"weight_fb_l{k}"] = g_ih[:, I_k:]
        grads[f"weight_hh_l{k}"] = c.weight_hh.grad.numpy()
        grads[f"bias_ih_l{k}"] = c.bias_ih.grad.numpy()
        grads[f"bias_hh_l{k}"] = c.bias_hh.grad.numpy()
    return (y.detach().numpy(), [f.detach().numpy() for f in finals], x_t.grad.numpy(),
            [s.grad.numpy() for s in s_t], grads)


def feedback_layer(kind, fb, backend, I=3, H=4, **kwargs):
    L, pairs = FEEDBACKS[fb]
    kwargs.setdefault("dtype", np.float64)
    kwargs.setdefault("seed", 4)
    return make_layer(kind, I, H, num_layers=L, backend=backend,
                      feedback="top" if fb == "top" else pairs, **kwargs), L, pairs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lengths", [None, [5, 2, 4]])
@pytest.mark.parametrize("fb", list(FEEDBACKS))
@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_layer_matches_a_loop_of_torch_cells(kind, fb, lengths, backend, torch):
    layer, L, pairs = feedback_layer(kind, fb, backend)
    rng = np.random.default_rng(9)
    T, B = 5, 3
    x = rng.standard_normal((T, B, 3))
    sizes = (layer.output_size, layer.hidden_size)[:n_states(kind)]
    states = [rng.standard_normal((L, B, n)) for n in sizes]
    dy = rng.standard_normal((T, B, layer.output_size))
    if lengths is not None:
        dy *= (np.arange(T)[:, None] < np.array(lengths))[..., None]   # no gradient on padding
    dstates = [rng.standard_normal(s.shape) for s in states]
    y_e, finals_e, dx_e, dinits_e, grads_e = torch_cell_loop_run(
        torch, kind, layer.state_dict(), x, states, pairs, L, dy, dstates, lengths)
    y, finals = layer_forward(layer, x, states, lengths)
    dx, dinits = layer_backward(layer, dy, dstates)
    assert_layer_run_close(layer, (y, finals, dx, dinits),
                           (y_e, finals_e, dx_e, dinits_e, grads_e), TOL64)


# ---------------------------------------------------------------- layers


@pytest.mark.parametrize("cls, args", [(fastlstm.RNN, {}), (fastlstm.GRU, {}),
                                       (fastlstm.LSTM, {}), (fastlstm.LSTM, {"proj_size": 2})])
def test_parameters_names_shapes_and_repr(cls, args):
    layer = cls(3, 4, num_layers=3, feedback=[(2, 0), (1, 0), (2, 1)], backend="reference",
                seed=0, **args)
    plain = cls(3, 4, num_layers=3, backend="reference", seed=0, **args)
    G, P = layer.gates, layer.output_size
    params = dict(layer.named_parameters())
    assert params["weight_fb_l0"].shape == (G * 4, 2 * P)     # sources 1 and 2
    assert params["weight_fb_l1"].shape == (G * 4, P)         # source 2
    assert "weight_fb_l2" not in params
    # torch's parameters keep their names and shapes, and (drawn first) their values
    rest = {k: v for k, v in params.items() if not k.startswith("weight_fb")}
    assert rest.keys() == dict(plain.named_parameters()).keys()
    for name, p in plain.named_parameters():
        assert np.array_equal(rest[name], p), name
    bound = 1 / np.sqrt(4)
    assert all(np.abs(params[f"weight_fb_l{k}"]).max() <= bound for k in (0, 1))
    assert layer.grads.keys() == params.keys()
    assert "feedback=[(1, 0), (2, 0), (2, 1)]" in repr(layer)
    assert "feedback='top'" in repr(cls(3, 4, num_layers=2, feedback="top", **args))
    assert "feedback" not in repr(plain)
    assert plain.feedback is None


def test_orthogonal_init_of_the_feedback_weight():
    layer = fastlstm.LSTM(3, 4, num_layers=2, feedback="top", recurrent_init="orthogonal",
                          backend="reference", dtype=np.float64, seed=1)
    w = layer.state_dict()["weight_fb_l0"]
    for g in range(4):
        block = w[4 * g:4 * (g + 1)]
        assert np.allclose(block.T @ block, np.eye(4), atol=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_layers=2, bidirectional=True, feedback="top"), "unidirectional"),
    (dict(num_layers=1, feedback="top"), "num_layers >= 2"),
    (dict(num_layers=2, feedback=[(2, 0)]), r"got the pair \(2, 0\)"),
    (dict(num_layers=2, feedback=[(0, 1)]), r"0 <= target < source"),
    (dict(num_layers=2, feedback=[(1, 1)]), r"0 <= target < source"),
    (dict(num_layers=3, feedback=[(2, 0), (2, 0)]), "twice"),
    (dict(num_layers=2, feedback="bottom"), "'top'"),
    (dict(num_layers=2, feedback=[]), "at least one pair"),
    (dict(num_layers=2, feedback=[1, 0]), "feedback must be"),
    (dict(num_layers=2, feedback=7), "feedback must be"),
])
@pytest.mark.parametrize("cls", [fastlstm.RNN, fastlstm.LSTM, fastlstm.GRU])
def test_bad_feedback_is_refused(cls, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        cls(3, 4, backend="reference", **kwargs)
    assert "feedback" in str(info.value)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ("rnn_tanh", "lstmp_peephole", "gru"))
def test_zero_feedback_weights_give_todays_layer(kind, backend):
    """With weight_fb zero the stack is today's (feedback=None) layer: same outputs, states and
    gradients of every other parameter (to rounding: the products run over the fed-back columns
    too, and their zero terms may change the order in which a BLAS sums), and weight_fb still
    gets its gradient."""
    layer, L, _ = feedback_layer(kind, "multi", backend)
    plain = make_layer(kind, 3, 4, num_layers=L, backend=backend, dtype=np.float64, seed=4)
    for name, p in layer.named_parameters():
        if name.startswith("weight_fb"):
            p[...] = 0
    rng = np.random.default_rng(2)
    x = rng.standard_normal((5, 3, 3))
    states = [rng.standard_normal((L, 3, n)) for n in (layer.output_size, 4)[:n_states(kind)]]
    dy = rng.standard_normal((5, 3, layer.output_size))
    runs = []
    for lay in (layer, plain):
        y, finals = layer_forward(lay, x, states, lengths=[5, 3, 4])
        dx, dinits = layer_backward(lay, dy)
        runs.append((y, finals, dx, dinits))
    (y, finals, dx, dinits), (y0, finals0, dx0, dinits0) = runs
    assert_close(y, y0, TOL_SAME, "y")
    assert_close(dx, dx0, TOL_SAME, "dx")
    for a, b in zip(finals + dinits, finals0 + dinits0):
        assert_close(a, b, TOL_SAME, "states")
    for name, g in plain.grads.items():
        assert_close(layer.grads[name], g, TOL_SAME, name)
    assert np.abs(layer.grads["weight_fb_l0"]).max() > 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_dict_round_trip(backend):
    a, L, _ = feedback_layer("lstm", "multi", backend, seed=1)
    b, _, _ = feedback_layer("lstm", "multi", backend, seed=2)
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    assert not np.allclose(a(x)[0], b(x)[0])
    sd = a.state_dict()
    assert {"weight_fb_l0", "weight_fb_l1"} <= sd.keys()
    b.load_state_dict(sd)
    assert np.array_equal(a(x)[0], b(x)[0])
    plain = make_layer("lstm", 3, 4, num_layers=L, backend=backend, dtype=np.float64)
    with pytest.raises(ValueError, match="unexpected keys.*weight_fb_l0"):
        plain.load_state_dict(sd)
    with pytest.raises(ValueError, match="missing keys.*weight_fb_l0"):
        a.load_state_dict(plain.state_dict())


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ("rnn_tanh", "lstm", "gru"))
def test_lengths_each_sequence_as_if_run_alone(kind, backend):
    """A padded batch with lengths equals each sequence run alone over its own steps: its
    feedback stops at its own end. The gradients of the batch are the sums of the sequences'."""
    layer, L, _ = feedback_layer(kind, "multi", backend, batch_first=True)
    rng = np.random.default_rng(6)
    lengths = [2, 6, 0, 4]
    B, T = len(lengths), 6
    x = rng.standard_normal((B, T, 3))
    sizes = (layer.output_size, layer.hidden_size)[:n_states(kind)]
    states = [rng.standard_normal((L, B, n)) for n in sizes]
    dy = rng.standard_normal((B, T, layer.output_size))
    dstates = [rng.standard_normal((L, B, n)) for n in sizes]
    layer.zero_grad()
    y, finals = layer_forward(layer, x, states, lengths)
    dx, dinits = layer_backward(layer, dy, dstates)
    batch_grads = {k: g.copy() for k, g in layer.grads.items()}
    layer.zero_grad()
    for b, n in enumerate(lengths):
        assert np.all(y[b, n:] == 0) and np.all(dx[b, n:] == 0)
        if n == 0:    # no step: the states pass through
            for f, s, di, ds in zip(finals, states, dinits, dstates):
                assert np.array_equal(f[:, b], s[:, b]) and np.array_equal(di[:, b], ds[:, b])
            continue
        one = [s[:, b:b + 1] for s in states]
        y1, finals1 = layer_forward(layer, x[b:b + 1, :n], one)
        dx1, dinits1 = layer_backward(layer, dy[b:b + 1, :n], [d[:, b:b + 1] for d in dstates])
        assert_close(y[b:b + 1, :n], y1, 1e-13, "y")
        assert_close(dx[b:b + 1, :n], dx1, 1e-13, "dx")
        for a1, a in zip(finals1 + dinits1, finals + dinits):
            assert_close(a[:, b:b + 1], a1, 1e-13, "states")
    for name, g in layer.grads.items():
        assert_close(batch_grads[name], g, 1e-12, name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_eval_and_dropout(backend):
    """Dropout acts in training mode only, its masks repeat from the seed, and the layer's
    backward with dropout matches finite differences of a fresh layer's first forward (whose
    masks are the same): the masks act on the normal inputs, the fed-back outputs undropped."""
    def make():
        return feedback_layer("gru", "multi", backend, H=2, dropout=0.5, seed=21)[0]

    rng = np.random.default_rng(8)
    L = 3
    x = rng.standard_normal((4, 2, 3))
    h0 = rng.standard_normal((L, 2, 2))
    R, S = rng.standard_normal((4, 2, 2)), rng.standard_normal((L, 2, 2))
    y_a, _ = make()(x, h0)
    y_b, _ = make()(x, h0)
    y_eval, _ = make().eval()(x, h0)
    assert np.array_equal(y_a, y_b)
    assert not np.allclose(y_a, y_eval)
    layer = make().eval()
    layer(x, h0)
    with pytest.raises(RuntimeError, match="training mode"):
        layer.backward(R)
    # eval equals the stack without masks (the reference as oracle)
    w = [layer._weights(k) for k in range(L)]
    y_ref, _, _ = reference.stack_forward("gru", x, [(h0[k],) for k in range(L)], w,
                                          layer._feedback, training=False)
    assert_close(y_eval, y_ref, TOL64, "eval y")

    layer = make()
    params = layer.state_dict()

    def loss():
        fresh = make()
        fresh.load_state_dict(params)
        y, h_n = fresh(x, h0)
        return float(np.sum(y * R) + np.sum(h_n * S))

    layer(x, h0)
    dx, dh0 = layer.backward(R, S)
    assert_close(dx, fd_grad(loss, x), FD_TOL, "dx")
    assert_close(dh0, fd_grad(loss, h0), FD_TOL, "dh0")
    for name, p in params.items():
        assert_close(layer.grads[name], fd_grad(loss, p), FD_TOL, name)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ("rnn_relu", "lstmp_peephole", "gru"))
def test_stream_equals_the_whole_sequence(kind, dtype, backend):
    layer, L, _ = feedback_layer(kind, "multi", backend, dtype=dtype)
    layer.eval()
    rng = np.random.default_rng(4)
    T, B = 6, 2
    x = rng.standard_normal((T, B, 3)).astype(dtype)
    sizes = (layer.output_size, layer.hidden_size)[:n_states(kind)]
    states = [rng.standard_normal((L, B, n)).astype(dtype) for n in sizes]
    y, finals = layer_forward(layer, x, states)
    s = layer.stream(B)
    s.reset(tuple(states) if n_states(kind) == 2 else states[0])
    steps = np.stack([s.step(x[t]) for t in range(T)])
    tol = 1e-5 if dtype == np.float32 else 1e-13
    assert steps.dtype == dtype
    assert_close(steps, y, tol, "y")
    got = s.state if n_states(kind) == 2 else (s.state,)
    for a, b in zip(got, finals):
        assert_close(a, b, tol, "state")
    out = np.empty((B, layer.output_size), dtype)
    s.reset()
    assert s.step(x[0], out=out) is out


def test_the_native_stepper_checks_its_feedback_and_its_weights():
    """native.Stepper is importable: its feedback weights are checked as stack_forward's."""
    layer = fastlstm.LSTM(3, 4, 2, feedback="top", seed=0)
    w0, w1 = (layer._weights(k) for k in range(2))

    def stepper(first, feedback=((1, 0),)):
        return native.Stepper("lstm", None, [first, w1], 2, np.float32, feedback)
    with pytest.raises(ValueError, match=r"weights\[0\]: w_fb must be given: 1 layers"):
        stepper({k: v for k, v in w0.items() if k != "w_fb"})
    with pytest.raises(ValueError, match=r"weights\[0\]: w_fb must not be given"):
        stepper(w0, ())
    with pytest.raises(ValueError, match=r"weights\[0\]: w_fb must have shape \(16, 4\)"):
        stepper(dict(w0, w_fb=w0["w_fb"][:, :3]))
    with pytest.raises(ValueError, match="feedback must be .* got the pair \\(0, 1\\)"):
        stepper(w0, ((0, 1),))
    with pytest.raises(TypeError, match="feedback must be"):
        stepper(w0, "top")
    # a top layer of 2 outputs (projected) over one of 4: the kernel would read 4 of each
    narrow = fastlstm.LSTM(3, 4, 2, proj_size=2, seed=0)._weights(1)
    narrow["w_ih"] = w1["w_ih"]
    with pytest.raises(ValueError, match=r"feedback pair \(1, 0\): layer 1 has 2 outputs and "
                                         r"layer 0 4"):
        native.Stepper("lstm", None, [w0, narrow], 2, np.float32, ((1, 0),))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ("rnn_tanh", "lstm", "gru"))
def test_float32_against_float64(kind, backend):
    """float32 forward and backward agree with float64 on the same (rounded) inputs and weights
    to 1e-4 relative: about 100 float32 roundings (unit 6e-8) through a short, tame stack."""
    layer64, L, _ = feedback_layer(kind, "multi", backend)
    layer32, _, _ = feedback_layer(kind, "multi", backend, dtype=np.float32)
    layer32.load_state_dict(layer64.state_dict())
    layer64.load_state_dict(layer32.state_dict())     # both hold float32-representable values
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    dy = rng.standard_normal((5, 2, layer64.output_size)).astype(np.float32)
    results = []
    for layer, dt in ((layer32, np.float32), (layer64, np.float64)):
        y, finals = layer_forward(layer, x.astype(dt), None, [5, 3])
        dx, dinits = layer_backward(layer, dy.astype(dt))
        assert y.dtype == dx.dtype == dt and all(g.dtype == dt for g in layer.grads.values())
        results.append((y, dx, finals, dinits, layer.grads))
    (y32, dx32, f32, d32, g32), (y64, dx64, f64, d64, g64) = results
    assert_close(y32, y64, 1e-4, "y")
    assert_close(dx32, dx64, 1e-4, "dx")
    for a, b in zip(f32 + d32, f64 + d64):
        assert_close(a, b, 1e-4, "states")
    for name in g64:
        assert_close(g32[name], g64[name], 1e-4, name)


def test_gradient_flow_refuses_feedback_layers():
    from fastlstm.diagnostics import gradient_flow
    layer = fastlstm.LSTM(3, 4, num_layers=2, feedback="top", backend="reference")
    with pytest.raises(ValueError, match="feedback"):
        gradient_flow(layer, np.zeros((3, 1, 3), np.float32))


# ---------------------------------------------------------------- the torch bridge


@pytest.fixture
def bridge(backend, monkeypatch, torch, torch_and_fastlstm_on_one_thread):
    """fastlstm.torch, its kernels those of ``backend``: the bridge calls its backend's
    functions by the native names, which the reference has too."""
    ft = pytest.importorskip("fastlstm.torch")
    if backend == "reference":
        monkeypatch.setattr(ft, "native", reference)
    return ft


def bridge_module(ft, torch, kind, fb, **kwargs):
    L, pairs = FEEDBACKS[fb]
    cls = {"rnn": ft.RNN, "lstm": ft.LSTM, "gru": ft.GRU}[cell_of(kind)]
    extra = {"nonlinearity": nonlinearity_of(kind)} if cell_of(kind) == "rnn" else {}
    torch.manual_seed(3)
    return cls(3, 4, num_layers=L, feedback="top" if fb == "top" else pairs,
               dtype=torch.float64, **extra, **kwargs), L, pairs


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("fb", list(FEEDBACKS))
@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_bridge_matches_a_loop_of_torch_cells(kind, fb, packed, backend, bridge, torch):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    module, L, pairs = bridge_module(bridge, torch, kind, fb)
    params = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
    assert {f"weight_fb_l{t}" for _, t in pairs} <= params.keys()
    rng = np.random.default_rng(10)
    T, B = 5, 3
    lengths = [3, 5, 2] if packed else None
    x = rng.standard_normal((T, B, 3))
    sizes = (4, 4)[:n_states(kind)]
    states = [rng.standard_normal((L, B, n)) for n in sizes]
    dy = rng.standard_normal((T, B, 4))
    if packed:
        dy *= (np.arange(T)[:, None] < np.array(lengths))[..., None]
    dstates = [rng.standard_normal(s.shape) for s in states]
    y_e, finals_e, dx_e, dinits_e, grads_e = torch_cell_loop_run(
        torch, kind, params, x, states, pairs, L, dy, dstates, lengths)

    x_t = torch.from_numpy(x).requires_grad_()
    s_t = [torch.from_numpy(s).requires_grad_() for s in states]
    inp = pack_padded_sequence(x_t, torch.tensor(lengths), enforce_sorted=False) if packed \
        else x_t
    out, hx = module(inp, tuple(s_t) if kind == "lstm" else s_t[0])
    y = pad_packed_sequence(out, total_length=T)[0] if packed else out
    finals = hx if kind == "lstm" else (hx,)
    loss = (y * torch.from_numpy(dy)).sum() + sum(
        (f * torch.from_numpy(g)).sum() for f, g in zip(finals, dstates))
    loss.backward()
    assert_close(y.detach().numpy(), y_e, TOL64, "y")
    for name, a, b in zip(("h_n", "c_n"), finals, finals_e):
        assert_close(a.detach().numpy(), b, TOL64, name)
    assert_close(x_t.grad.numpy(), dx_e, TOL64, "dx")
    for name, s, b in zip(("dh0", "dc0"), s_t, dinits_e):
        assert_close(s.grad.numpy(), b, TOL64, name)
    grads = {n: p.grad.numpy() for n, p in module.named_parameters()}
    assert grads.keys() == grads_e.keys()
    for name, g in grads_e.items():
        assert_close(grads[name], g, TOL64, name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bridge_trains_and_shares_its_weights_with_the_layer(backend, bridge, torch):
    module, L, pairs = bridge_module(bridge, torch, "lstm", "top", dropout=0.2)
    module = module.float()
    head = torch.nn.Linear(4, 1)
    opt = torch.optim.Adam([*module.parameters(), *head.parameters()], lr=0.02)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 6, 3, generator=g)
    target = x.sum(dim=(0, 2))[:, None] / 4          # needs the whole sequence
    fb_before = module.weight_fb_l0.detach().clone()
    losses = []
    for _ in range(15):
        opt.zero_grad()
        y, _ = module(x)
        loss = ((head(y[-1]) - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert not torch.equal(module.weight_fb_l0, fb_before)
    # the numpy layer with the module's state_dict gives the module's outputs (eval: no dropout)
    module.eval()
    layer = fastlstm.LSTM(3, 4, num_layers=L, feedback="top", backend=backend)
    layer.load_state_dict(module.state_dict())
    layer.eval()
    with torch.no_grad():
        y_t, _ = module(x)
    y_np, _ = layer(x.numpy())
    assert_close(y_np, y_t.numpy(), 1e-5, "y")
    assert "feedback='top'" in repr(module)


def test_bridge_refuses_bad_feedback(torch):
    ft = pytest.importorskip("fastlstm.torch")
    with pytest.raises(ValueError, match="unidirectional"):
        ft.LSTM(3, 4, num_layers=2, bidirectional=True, feedback="top")
    with pytest.raises(ValueError, match="feedback"):
        ft.GRU(3, 4, num_layers=2, feedback=[(0, 1)])
    plain = ft.LSTM(3, 4, num_layers=2)
    assert plain.feedback is None and "weight_fb_l0" not in dict(plain.named_parameters())


@pytest.mark.parametrize("backend", BACKENDS)
def test_bridge_input_forms_and_refusals(backend, bridge, torch):
    """Unbatched and batch-first input give the batched results; a double backward and a
    backward after an in-place change of the input are refused, as for the plain modules."""
    module, L, _ = bridge_module(bridge, torch, "gru", "multi")
    x = torch.randn(5, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y, h = module(x)
    y1, h1 = module(x[:, 1])
    assert_close(y1.detach().numpy(), y[:, 1].detach().numpy(), 1e-13, "unbatched y")
    assert_close(h1.detach().numpy(), h[:, 1].detach().numpy(), 1e-13, "unbatched h")
    module.batch_first = True
    yb, _ = module(x.transpose(0, 1).contiguous())
    assert_close(yb.transpose(0, 1).detach().numpy(), y.detach().numpy(), 1e-13, "batch first")
    module.batch_first = False
    xg = x.clone().requires_grad_()
    y, _ = module(xg)
    with pytest.raises(RuntimeError, match="differentiate twice"):
        torch.autograd.grad(y.sum(), xg, create_graph=True)
    x2 = x.clone().requires_grad_()
    base = x2 * 1.0
    y, _ = module(base)
    base.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_native_stack_is_the_same_for_every_thread_count(restore_threads):
    rng = np.random.default_rng(13)
    L, pairs = FEEDBACKS["multi"]
    x, states, weights, masks, dy, dfinals = stack_problem(
        rng, "lstm", L, pairs, T=6, B=16, I=8, H=16, masks=True)
    runs = []
    for threads in (1, 2):
        fastlstm.set_num_threads(threads)
        y, finals, ctx = stack_call("native", "lstm", x, states, weights, pairs, masks=masks)
        dx, dinits, grads = native.stack_backward(ctx, dy, dfinals)
        runs.append([y, dx] + [a for f in finals + dinits for a in f]
                    + [g[n] for g in grads for n in sorted(g)])
    for a, b in zip(*runs, strict=True):
        assert np.array_equal(a, b)
