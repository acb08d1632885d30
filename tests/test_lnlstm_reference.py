"""The layer-normalised LSTM of the NumPy reference (lnlstm_forward, lnlstm_backward), against
oracles that share no code with it.

- Central finite differences in float64 of ``sum(y * R) + sum(h_n * S) + sum(c_n * Q)`` against
  every gradient of lnlstm_backward's dict, padded and packed, with and without biases; step and
  tolerance (FD_EPS, FD_TOL) as test_gradcheck.py's docstring explains them.
- torch: the cell written as a plain loop over steps with torch.nn.functional.layer_norm under
  autograd (helpers.torch_lnlstm_loop). float64 to 1e-10 relative to max(1, max |torch's
  value|), test_torch.py's tolerance: both sides compute the same formulas and differ only in
  the order of their sums, a few units of 1e-16 carried through T steps; but a normalisation
  multiplies such an error by rstd, large for a row of nearly equal entries, and over H = 2
  units (a row of two) differences of 1e-12 occur, so 1e-12 would leave no margin.
  float32: a normalisation divides differences of a row's entries, which float32 rounds to
  6e-8 of the entries, by sqrt(var + eps), and the steps carry and amplify what it gets
  wrong; a float32 result's error is then the problem's condition number times a few
  roundoffs, the same for every implementation, different luck in each. Over random problems
  of this module's kind, ours and torch's float32 results have the same median error against
  a float64 truth (torch's loop in float64 on the same float32 numbers), 7e-7, and the same
  heavy tail: up to 3e-4 for T = 6, H = 5 and 6e-5 for T = 4, H = 3 (either). For the shapes
  below, 200 random problems each gave at most 2.6e-5 (ours) and 1.9e-5 (torch's). Each of
  our float32 results must be within F32_MAX = 1e-4 (the project's cap on any float32 result,
  test_native_vs_reference.py) of that truth and of torch's float32 result: a margin of four
  over that tail, far below the O(1) error of a wrong term. Rows of 1 and 2 entries (H = 1,
  2) are left to float64: there float32 errors reach 3e-4 (torch's; ours 7e-5), and torch's
  float32 layer_norm of a single entry is not even exactly 0.
- Properties that only a normalisation has: with unit gains the saved rows have mean 0 and
  variance var / (var + eps); adding the same amount to every entry of a row of x W_ih^T or
  h W_hh^T changes nothing; scaling W_ih and W_hh changes only what eps does.
"""
import numpy as np
import pytest
from helpers import (F32_MAX, FD_TOL, LNLSTM_WEIGHTS, assert_close, fd_grad, max_rel_err,
                     random_lnlstm_weights, torch_lnlstm_loop)

from fastlstm import reference
from fastlstm._functional import check_forward

EPS = 1e-5      # the spec's eps, not read from the code under test
TORCH_TOL64 = 1e-10

# (T, B, I, H). H = 3 first: over 2 units a normalised row is (-1, 1) up to eps, over 1 it is 0,
# and neither would show the cell's normalisation at work (they are edge cases below).
SHAPES = [(4, 2, 3, 3), (3, 1, 2, 1), (1, 1, 1, 1), (3, 2, 2, 2)]
# Packed batches: each sequence's length, longest first; the last sequence has length 0 (its
# final states are its initial ones).
LENGTHS = {1: (3, 0), 2: (4, 2, 2, 0), 3: (4, 3, 1, 1, 0), 4: (4, 4, 2, 1, 0)}


def shape_id(shape):
    return "T{}-B{}-I{}-H{}".format(*shape)


def batch_sizes_of(lengths, T):
    """torch's batch_sizes of sequences of these lengths (longest first): how many run at t."""
    return np.array([sum(n > t for n in lengths) for t in range(T)], np.int64)


def lengths_of(shape, packed):
    """None for a padded batch of this shape; else the sequences' lengths of a packed one."""
    T, B = shape[:2]
    return tuple(min(n, T) for n in LENGTHS.get(B, LENGTHS[3])) if packed else None


def pack(a, batch_sizes):
    """The packed rows (N, ...) of a padded (T, B, ...) array: the first n_t rows of each step."""
    return np.concatenate([a[t, :n] for t, n in enumerate(batch_sizes)]
                          + [a[:0].reshape((0,) + a.shape[2:])])


def problem(rng, T, B, I, H, dtype=np.float64, bias=True, scale=0.5):
    """Padded x (T, B, I), (h0, c0), the weights by name, dy (T, B, H) and (dh_n, dc_n)."""
    x = rng.standard_normal((T, B, I)).astype(dtype)
    states = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    weights = random_lnlstm_weights(rng, I, H, dtype, bias, scale)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dstates = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    return x, states, weights, dy, dstates


def grad_names(bias):
    """The keys of lnlstm_backward's dict, in its order."""
    return (["x", "h0", "c0", "w_ih", "w_hh"] + ["b_ih", "b_hh"] * bias
            + ["g_ih", "g_hh", "g_c", "b_c"])


def run(x, states, weights, dy, dstates, batch_sizes=None, **options):
    y, h_n, c_n, ctx = reference.lnlstm_forward(x, *states, **weights, batch_sizes=batch_sizes)
    return y, (h_n, c_n), reference.lnlstm_backward(ctx, dy, *dstates, **options)


# ---------------------------------------------------------------- finite differences


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_backward_matches_finite_differences(shape, packed, bias):
    T, B, I, H = shape
    lengths, sizes = lengths_of(shape, packed), None
    if packed:
        B, sizes = len(lengths), batch_sizes_of(lengths, T)
    x, states, weights, R, (S, Q) = problem(np.random.default_rng(17), T, B, I, H, bias=bias,
                                            scale=0.8)
    if packed:
        x, R = pack(x, sizes), pack(R, sizes)

    def loss():
        y, h_n, c_n, _ = reference.lnlstm_forward(x, *states, **weights, batch_sizes=sizes)
        return float(np.sum(y * R) + np.sum(h_n * S) + np.sum(c_n * Q))

    _, _, grads = run(x, states, weights, R, (S, Q), sizes)
    assert list(grads) == grad_names(bias)
    inputs = {"x": x, "h0": states[0], "c0": states[1], **weights}
    for name, g in grads.items():
        assert g.shape == inputs[name].shape and g.dtype == np.float64, name
        assert_close(g, fd_grad(loss, inputs[name]), FD_TOL, name)


# ---------------------------------------------------------------- torch


def ours_and_torchs(case, lengths):
    """Our forward and backward and torch's loop on one :func:`problem`, padded (``lengths``
    None) or packed: two lists of (name, array), y, h_n, c_n, then the gradients in our dict's
    order (x and y packed: the rows that exist)."""
    x, states, weights, dy, dstates = case
    y_t, finals_t, grads_t = torch_lnlstm_loop(x, states, weights, dy, dstates, lengths)
    if lengths is None:
        y, finals, grads = run(x, states, weights, dy, dstates)
    else:
        sizes = batch_sizes_of(lengths, x.shape[0])
        y, finals, grads = run(pack(x, sizes), states, weights, pack(dy, sizes), dstates, sizes)
        y_t, grads_t["x"] = pack(y_t, sizes), pack(grads_t["x"], sizes)
    assert list(grads) == grad_names(weights["b_ih"] is not None)
    names = ["y", "h_n", "c_n"] + list(grads)
    return (list(zip(names, [y, *finals, *grads.values()])),
            list(zip(names, [y_t, *finals_t, *(grads_t[k] for k in grads)])))


def in_float64(case):
    """The same :func:`problem`, its numbers in float64."""
    x, states, weights, dy, dstates = case

    def up(a):
        return None if a is None else a.astype(np.float64)

    return (up(x), tuple(map(up, states)), {k: up(a) for k, a in weights.items()}, up(dy),
            tuple(map(up, dstates)))


def random_problem(rng, shape, packed, bias, dtype):
    T, B, I, H = shape
    lengths = lengths_of(shape, packed)
    return problem(rng, T, B if lengths is None else len(lengths), I, H, dtype, bias), lengths


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("shape", SHAPES + [(6, 3, 4, 5)], ids=shape_id)
def test_matches_a_torch_loop_in_float64(torch, shape, packed, bias, rng):
    ours, torchs = ours_and_torchs(*random_problem(rng, shape, packed, bias, np.float64))
    for (name, a), (_, b) in zip(ours, torchs, strict=True):
        assert a.dtype == np.float64, name
        assert_close(a, b, TORCH_TOL64, name)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("shape", [(3, 3, 4, 6), (4, 3, 5, 16)], ids=shape_id)
def test_matches_a_torch_loop_in_float32(torch, shape, packed, bias, rng):
    """Against torch's float32 loop, and against a float64 truth: torch's loop in float64 on the
    same float32 numbers (the module's docstring says why)."""
    problem32, lengths = random_problem(rng, shape, packed, bias, np.float32)
    ours, torchs = ours_and_torchs(problem32, lengths)
    _, truths = ours_and_torchs(in_float64(problem32), lengths)
    for (name, a), (_, b), (_, truth) in zip(ours, torchs, truths, strict=True):
        assert a.dtype == np.float32 and truth.dtype == np.float64, name
        assert_close(a, truth, F32_MAX, f"{name} against the float64 truth")
        assert_close(a, b, F32_MAX, f"{name} against torch's float32")


# ---------------------------------------------------------------- what a normalisation does


def unit_gains(weights):
    H = weights["g_c"].shape[0]
    return weights | {"g_ih": np.ones(4 * H), "g_hh": np.ones(4 * H), "g_c": np.ones(H),
                      "b_c": np.zeros(H)}


def test_with_unit_gains_every_saved_row_is_normalised(rng):
    """The rows the context keeps of LN(x W_ih^T), LN(h W_hh^T) and LN(c_t) have mean 0 and
    variance var / (var + eps) = 1 - eps * rstd^2, rstd being the saved 1 / sqrt(var + eps);
    and a row of x W_ih^T (computed here) is its normalised row / rstd plus its mean."""
    T, B, I, H = 5, 3, 4, 6
    x, states, weights, _, _ = problem(rng, T, B, I, H)
    weights = unit_gains(weights)
    y, h_n, c_n, ctx = reference.lnlstm_forward(x, *states, **weights)
    N = T * B
    assert ctx.normed.shape == (N, 9 * H) and ctx.rstd.shape == (N, 3)
    blocks = [ctx.normed[:, :4 * H], ctx.normed[:, 4 * H:8 * H], ctx.normed[:, 8 * H:]]
    for k, xhat in enumerate(blocks):
        assert np.abs(xhat.mean(axis=1)).max() < 1e-14, k
        var = xhat.var(axis=1)
        assert np.all(var < 1) and np.all(var > 0.99), k      # no row almost constant here
        np.testing.assert_allclose(1 - var, EPS * ctx.rstd[:, k] ** 2, rtol=1e-8, err_msg=str(k))
    z = x.reshape(N, I) @ weights["w_ih"].T
    np.testing.assert_allclose(blocks[0] / ctx.rstd[:, :1] + z.mean(axis=1, keepdims=True), z,
                               rtol=0, atol=1e-13)


def test_with_unit_gains_and_open_gates_h_is_tanh_of_a_normalised_row(rng):
    """With g_c = 1, b_c = 0 and the forget and output gates held open (their gains 0, their
    bias 40: sigmoid(40) = 1 to float64), h_t = tanh(LN(c_t)): artanh of every row of y has mean
    0 and a variance just below 1, though the cell, only ever added to, is far from normalised."""
    T, B, I, H = 6, 3, 2, 5
    x, states, weights, _, _ = problem(rng, T, B, I, H)
    weights = unit_gains(weights)
    for gate in (slice(H, 2 * H), slice(3 * H, 4 * H)):     # f and o
        weights["g_ih"][gate] = weights["g_hh"][gate] = 0
        weights["b_ih"][gate], weights["b_hh"][gate] = 40, 0
    c0 = 10 * states[1]
    y, _, c_n, _ = reference.lnlstm_forward(x, states[0], c0, **weights)
    assert np.all(c_n.std(axis=1) > 3), "the cell is far from normalised itself"
    u = np.arctanh(y.reshape(T * B, H))
    assert np.abs(u.mean(axis=1)).max() < 1e-12
    var = u.var(axis=1)
    assert np.all(var < 1) and np.all(var > 0.99)


def test_a_shift_common_to_a_row_of_either_sum_changes_nothing(rng):
    """LN(x_t W_ih^T) is over all 4H entries of a row: adding 1 u^T to W_ih adds x_t . u to every
    entry of the row, which its mean takes away (so for W_hh and h_{t-1}). The plain LSTM with
    the same weights changes by O(1): the shift is no small one."""
    T, B, I, H = 4, 3, 3, 4
    x, states, weights, dy, dstates = problem(rng, T, B, I, H)
    shifted = weights | {"w_ih": weights["w_ih"] + rng.standard_normal(I),
                         "w_hh": weights["w_hh"] + rng.standard_normal(H)}
    y, finals, grads = run(x, states, weights, dy, dstates)
    y2, finals2, grads2 = run(x, states, shifted, dy, dstates)
    for name, a, b in zip(("y", "h_n", "c_n"), (y2, *finals2), (y, *finals)):
        assert_close(a, b, 1e-12, name)
    for name in grads:      # the same normalised rows, the same gradients
        assert_close(grads2[name], grads[name], 1e-12, name)
    plain = [reference.lstm_forward(x, *states, *(w[k] for k in LNLSTM_WEIGHTS[:4]))[0]
             for w in (weights, shifted)]
    assert max_rel_err(plain[1], plain[0]) > 0.1


def test_scaling_both_products_changes_only_what_eps_does(rng):
    """LN(s z) = (z - mean) / sqrt(var + eps / s^2): scaling W_ih and W_hh by 4 moves y by
    about eps / var, not by O(1) as it does the plain LSTM."""
    T, B, I, H = 4, 3, 3, 4
    x, states, weights, _, _ = problem(rng, T, B, I, H, scale=1.0)
    scaled = weights | {"w_ih": 4 * weights["w_ih"], "w_hh": 4 * weights["w_hh"]}
    y, y4 = (reference.lnlstm_forward(x, *states, **w)[0] for w in (weights, scaled))
    assert max_rel_err(y4, y) < 1e-3
    plain = [reference.lstm_forward(x, *states, *(w[k] for k in LNLSTM_WEIGHTS[:4]))[0]
             for w in (weights, scaled)]
    assert max_rel_err(plain[1], plain[0]) > 0.1


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_no_steps(packed, rng):
    """T = 0: the final states are the initial ones, their gradients the final ones', and every
    weight gets a zero gradient."""
    B, I, H = 3, 2, 4
    x, states, weights, dy, dstates = problem(rng, 0, B, I, H)
    sizes = np.zeros(0, np.int64) if packed else None
    if packed:
        x, dy = x.reshape(0, I), dy.reshape(0, H)
    y, finals, grads = run(x, states, weights, dy, dstates, sizes)
    assert y.shape == dy.shape
    for a, b in zip(finals, states):
        assert np.array_equal(a, b)
    assert grads["x"].shape == x.shape
    assert np.array_equal(grads["h0"], dstates[0]) and np.array_equal(grads["c0"], dstates[1])
    for name in LNLSTM_WEIGHTS:
        assert np.array_equal(grads[name], np.zeros_like(weights[name])), name


def test_one_hidden_unit_normalises_the_cell_to_zero(rng):
    """H = 1: LN(c_t) over one unit is 0, so h_t = o * tanh(b_c) and g_c gets no gradient (the
    rest of H = 1 is in the finite-difference and torch tests)."""
    x, states, weights, dy, dstates = problem(rng, 3, 2, 2, 1)
    y, _, grads = run(x, states, weights, dy, dstates)
    assert np.all(np.sign(y) == np.sign(weights["b_c"]))
    assert np.all(np.abs(y) < np.abs(np.tanh(weights["b_c"])))
    assert np.array_equal(grads["g_c"], np.zeros(1))


def test_input_grad_false_and_training_false(rng):
    x, states, weights, dy, dstates = problem(rng, 3, 2, 3, 3)
    y, finals, grads = run(x, states, weights, dy, dstates)
    _, _, skipped = run(x, states, weights, dy, dstates, input_grad=False)
    assert list(skipped) == list(grads) and skipped["x"] is None
    for name in grads:
        if name != "x":
            assert np.array_equal(skipped[name], grads[name]), name
    y2, h_n, c_n, ctx = reference.lnlstm_forward(x, *states, **weights, training=False)
    assert ctx is None
    assert np.array_equal(y2, y) and np.array_equal(h_n, finals[0])


def test_none_states_are_zeros(rng):
    x, states, weights, dy, dstates = problem(rng, 3, 2, 3, 3)
    zeros = tuple(np.zeros_like(s) for s in states)
    y, finals, grads = run(x, (None, None), weights, None, (None, None))
    y0, finals0, grads0 = run(x, zeros, weights, np.zeros_like(dy), zeros)
    assert np.array_equal(y, y0)
    for name in grads:
        assert np.array_equal(grads[name], grads0[name]), name


# ---------------------------------------------------------------- errors


def call(rng, dtype=np.float64, **changes):
    x, states, weights, _, _ = problem(rng, 3, 2, 3, 2, dtype)
    return reference.lnlstm_forward(x, *states, **(weights | changes))


@pytest.mark.parametrize("changes, error, match", [
    (dict(g_ih=np.ones(7)), ValueError,
     r"g_ih must have shape \(8,\) \(4 \* hidden_size,\), the gain of LN\(x W_ih\^T\), got \(7,\)"),
    (dict(g_ih=np.ones((8, 1))), ValueError, r"g_ih must be 1-D, got 2-D array of shape \(8, 1\)"),
    (dict(g_ih=np.ones(8, np.float32)), TypeError,
     r"g_ih must have dtype float64 \(like the other arrays\), got float32"),
    (dict(g_ih=np.ones(8, np.int64)), TypeError, r"g_ih must have dtype float64"),
    (dict(g_hh=np.ones(2)), ValueError,
     r"g_hh must have shape \(8,\) .*LN\(h W_hh\^T\), got \(2,\)"),
    (dict(g_c=None), TypeError, r"g_c must be an array of shape \(2,\) \(hidden_size,\), the "
                                r"gain of LN\(c\), got None"),
    (dict(b_c=np.zeros(8)), ValueError, r"b_c must have shape \(2,\) \(hidden_size,\), the bias "
                                        r"of LN\(c\), got \(8,\)"),
    (dict(b_c=[0, "a"]), TypeError, r"b_c must"),
    (dict(b_ih=None), ValueError, r"b_ih and b_hh must both be given or both be None"),
], ids=["g_ih short", "g_ih 2-D", "g_ih float32", "g_ih int", "g_hh short", "g_c None",
        "b_c 4H", "b_c strings", "one bias"])
def test_bad_weights_are_refused_by_name(changes, error, match, rng):
    with pytest.raises(error, match=match):
        call(rng, **changes)


def test_a_list_of_numbers_is_a_weight(rng):
    x, states, weights, _, _ = problem(rng, 3, 2, 3, 2)
    y, *_ = reference.lnlstm_forward(x, *states, **weights)
    lists = {name: weights[name].tolist() for name in ("g_c", "b_c")}
    y_lists, *_ = reference.lnlstm_forward(x, *states, **(weights | lists))
    assert np.array_equal(y_lists, y)


def test_float32_gains_for_float32_arrays(rng):
    y, h_n, c_n, ctx = call(rng, np.float32)
    assert y.dtype == h_n.dtype == c_n.dtype == ctx.normed.dtype == ctx.rstd.dtype == np.float32
    with pytest.raises(TypeError, match=r"g_c must have dtype float32"):
        call(rng, np.float32, g_c=np.ones(2))


def test_contexts_of_other_cells_are_refused(rng):
    x, states, weights, dy, dstates = problem(rng, 3, 2, 3, 2)
    lstm_weights = [weights[k] for k in LNLSTM_WEIGHTS[:4]]
    *_, lstm_ctx = reference.lstm_forward(x, *states, *lstm_weights)
    with pytest.raises(ValueError, match=r"ctx comes from lstm_forward, expected a context of "
                                         r"lnlstm_forward"):
        reference.lnlstm_backward(lstm_ctx, dy, *dstates)
    *_, ctx = reference.lnlstm_forward(x, *states, **weights)
    with pytest.raises(ValueError, match=r"ctx comes from lnlstm_forward, expected a context of "
                                         r"lstm_forward"):
        reference.lstm_backward(ctx, dy, *dstates)
    with pytest.raises(TypeError, match=r"ctx must be the Context returned by lnlstm_forward, "
                                        r"got NoneType None \(a forward with training=False"):
        reference.lnlstm_backward(None, dy, *dstates)


@pytest.mark.parametrize("name, bad", [("normed", lambda a: a[:, :-1]),
                                       ("rstd", lambda a: a[:, :2].copy()),
                                       ("g_c", lambda a: np.ones(3)),
                                       ("b_c", lambda a: None),
                                       ("gates", lambda a: a.astype(np.float32))])
def test_a_context_changed_after_its_forward_is_refused(name, bad, rng):
    x, states, weights, dy, dstates = problem(rng, 3, 2, 3, 2)
    *_, ctx = reference.lnlstm_forward(x, *states, **weights)
    setattr(ctx, name, bad(getattr(ctx, name)))
    with pytest.raises(ValueError, match=rf"ctx\.{name} must be a C-contiguous float64 array of "
                                         rf"shape"):
        reference.lnlstm_backward(ctx, dy, *dstates)


def test_no_projection_no_peepholes_no_feedback(rng):
    x, states, weights, _, _ = problem(rng, 3, 2, 3, 2)
    args = [weights[k] for k in LNLSTM_WEIGHTS[:4]]
    for name, a in (("w_hr", np.ones((1, 2))), ("w_peephole", np.ones(6))):
        with pytest.raises(ValueError, match=rf"{name} must be None for the layer-normalised "
                                             rf"LSTM"):
            check_forward("lnlstm", x, states, *args, **{name: a})
    two = [dict(weights), dict(weights, w_ih=weights["w_hh"])]
    with pytest.raises(ValueError, match=r"feedback"):
        reference.stack_forward("lnlstm", x, None, two, feedback=[(1, 0)])
