"""Packed batches in the functional API: ``batch_sizes`` of rnn/lstm/gru_forward.

A packed call takes x (N, I) laid out as torch's PackedSequence.data: the rows of step 0 (the
first batch_sizes[0] sequences), then those of step 1, and so on. h0/c0 have B >= batch_sizes[0]
rows (the rows beyond are sequences of length 0); h_n/c_n are each sequence's state after its own
last step. What is checked, and against what:

- central finite differences (float64) of a random weighted sum of y, h_n and c_n, every kind
  and both backends, on a batch with uneven step sizes and a sequence of length 0;
- an oracle independent of the packed code path: each sequence run alone as a padded call with
  B = 1 and T = its length gives its rows of y and dx, its h_n and dh0, and the packed weight
  gradients are the sum of the per-sequence ones;
- a padded call and the packed call whose every batch size is B: bitwise equal (see the test);
- native against reference, float32 and float64;
- bitwise thread invariance of the native packed kernels;
- bad batch_sizes, and the edge cases T = 0, all sequences of length 0, B = 1, H = 1.

Tolerances, relative to max(1, max |expected|) (helpers.assert_close):

- finite differences: 1e-6, as in test_gradcheck.py (eps = 1e-6: truncation ~1e-12 and
  rounding ~1e-9 lie far below 1e-6, an O(1) wrong term far above).
- a sequence alone against its rows of the packed call: float64 1e-12. The arithmetic is the
  same up to BLAS blocking (1 row against n_t rows per step) and the order in which the weight
  gradients are summed over rows, so the two agree to a few units of 1e-16 times the number of
  terms summed; 1e-12 leaves a wide margin and is still ten orders below a wrong term.
- native against reference: float64 1e-10, float32 within 8x the reference's own float32 error
  against a float64 truth plus 1e-6, and at most 1e-4: the policy of
  test_native_vs_reference.py, whose docstring gives the reasoning.
"""
import re

import numpy as np
import pytest
from helpers import (KINDS, TOL64, as64_tree, assert_backward_matches_fd, assert_close,
                     assert_functional_matches, f_backward, f_forward, n_states, random_weights,
                     run_functional, state_sizes, weight_names)

import fastlstm
from fastlstm import native, reference

BACKENDS = {"reference": reference, "native": native}
ORACLE_TOL64 = 1e-12
THREADS = (1, 2, 3)


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    """Every test here runs the native kernels on one thread unless it sets another count:
    on a small shared machine, waking OpenMP threads costs more than these tiny problems do.
    Nothing is lost: the sequences are still dealt to build_info()["parts"] parts (a
    number that depends on the machine, not on the thread count), and the results are bitwise
    the same for every thread count (test_native_packed_results_do_not_depend_on_threads)."""
    fastlstm.set_num_threads(1)


# ---------------------------------------------------------------- packed helpers


def batch_sizes_of(lengths):
    """torch's batch_sizes of sequences with these lengths, sorted longest first."""
    lengths = np.asarray(lengths, np.int64)
    assert np.all(lengths[:-1] >= lengths[1:]), "lengths must be sorted longest first"
    T = int(lengths.max()) if lengths.size else 0
    return np.array([(lengths > t).sum() for t in range(T)], np.int64)


def lengths_of(batch_sizes, B):
    """Each of the B sequences' length: how many steps run it."""
    return [int((np.asarray(batch_sizes) > b).sum()) for b in range(B)]


def rows_of(batch_sizes, b):
    """The packed rows of sequence b, one per step it runs, in time order."""
    off = np.concatenate([[0], np.cumsum(batch_sizes)])
    return np.array([off[t] + b for t in range(len(batch_sizes)) if batch_sizes[t] > b],
                    np.int64)


def packed_problem(rng, kind, batch_sizes, B, I, H, dtype=np.float64, bias=True, scale=0.5):
    """x (N, I), initial states (B, .), weights, dy (N, P) and final-state gradients (B, .)."""
    N = int(np.sum(batch_sizes))
    sizes = state_sizes(kind, H)
    x = rng.standard_normal((N, I)).astype(dtype)
    states = tuple(rng.standard_normal((B, n)).astype(dtype) for n in sizes)
    weights = random_weights(rng, kind, I, H, dtype, bias, scale)
    dy = rng.standard_normal((N, sizes[0])).astype(dtype)
    dstates = tuple(rng.standard_normal((B, n)).astype(dtype) for n in sizes)
    return x, states, weights, dy, dstates


def weighted_sum(outputs, weights):
    return float(sum(np.sum(o * w) for o, w in zip(outputs, weights)))


def min_abs_preactivation(ctx, w_ih, w_hh, b_ih, b_hh):
    """min |a| over every pre-activation of a packed Elman call (from its context)."""
    a = ctx.x @ w_ih.T + ctx.hs[ctx.batch.prev_rows()] @ w_hh.T
    if b_ih is not None:
        a = a + b_ih + b_hh
    return float(np.abs(a).min())


def test_the_helpers_agree_with_each_other():
    bs = batch_sizes_of([5, 3, 2, 2, 0])
    assert bs.tolist() == [4, 4, 2, 1, 1]
    assert lengths_of(bs, 5) == [5, 3, 2, 2, 0]
    assert rows_of(bs, 0).tolist() == [0, 4, 8, 10, 11]
    assert rows_of(bs, 2).tolist() == [2, 6]
    assert rows_of(bs, 4).tolist() == []
    all_rows = np.sort(np.concatenate([rows_of(bs, b) for b in range(5)]))
    assert all_rows.tolist() == list(range(int(bs.sum())))


# ---------------------------------------------------------------- 1. finite differences

# Sequences of lengths 5, 3, 2, 2 and 0: steps of 4, 4, 2, 1 and 1 rows, B = 5 through h0.
FD_BATCH_SIZES = np.array([4, 4, 2, 1, 1])
FD_B, FD_I, FD_H = 5, 3, 2


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("kind", KINDS)
def test_packed_backward_matches_finite_differences(backend, kind, bias):
    rng = np.random.default_rng(11)
    x, states, weights, R, S = packed_problem(rng, kind, FD_BATCH_SIZES, FD_B, FD_I, FD_H,
                                              bias=bias, scale=0.8)
    weights, S = list(weights), list(S)

    def loss():
        y, finals, _ = f_forward(backend, kind, x, states, weights, FD_BATCH_SIZES)
        return weighted_sum((y,) + finals, [R] + S)

    y, finals, ctx = f_forward(backend, kind, x, states, weights, FD_BATCH_SIZES)
    assert y.shape == (FD_BATCH_SIZES.sum(), states[0].shape[1])
    if kind == "rnn_relu":  # finite differences across the kink of relu are meaningless
        assert min_abs_preactivation(ctx, *weights) > 1e-3
        assert (y > 0).any() and (y == 0).any(), "both sides of the relu should be exercised"
    dx, dinits, dweights = f_backward(backend, kind, ctx, R, S)

    assert_backward_matches_fd(kind, loss, x, states, weights, dx, dinits, dweights)


# ---------------------------------------------------------------- 2. each sequence alone

# (lengths sorted longest first, I, H): zero-length sequences at the end, equal lengths, B = 1,
# H = 1, I = 1.
ORACLE_CASES = [
    ([6, 4, 4, 2, 1, 0, 0], 3, 4),
    ([5, 5, 2, 1], 1, 1),
    ([4], 2, 3),
    ([3, 0], 2, 2),
    ([7, 7, 7], 2, 3),
]


def oracle_id(case):
    lengths, I, H = case
    return "L{}-I{}-H{}".format("_".join(map(str, lengths)), I, H)


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", ORACLE_CASES, ids=oracle_id)
@pytest.mark.parametrize("kind", KINDS)
def test_packed_call_equals_each_sequence_alone(kind, case, bias, backend, rng):
    lengths, I, H = case
    B = len(lengths)
    bs = batch_sizes_of(lengths)
    problem = packed_problem(rng, kind, bs, B, I, H, bias=bias)
    x, states, weights, dy, dstates = problem
    names, got = run_functional(backend, kind, problem, bs)
    n_s = n_states(kind)
    y, finals = got[0], got[1:1 + n_s]
    dx, dinits, dweights = got[1 + n_s], got[2 + n_s:2 + 2 * n_s], got[2 + 2 * n_s:]

    summed = [None if w is None else np.zeros_like(w) for w in weights]
    for b, L in enumerate(lengths):
        rows = rows_of(bs, b)
        assert len(rows) == L
        # The padded call of sequence b alone: T = L (0 too), B = 1.
        y_b, finals_b, ctx_b = f_forward(backend, kind, x[rows][:, None],
                                         tuple(s[b:b + 1] for s in states), weights)
        dx_b, dinits_b, dw_b = f_backward(backend, kind, ctx_b, dy[rows][:, None],
                                          tuple(d[b:b + 1] for d in dstates))
        what = f"sequence {b} (length {L})"
        assert_close(y[rows], y_b[:, 0], ORACLE_TOL64, f"{what} y")
        assert_close(dx[rows], dx_b[:, 0], ORACLE_TOL64, f"{what} dx")
        for name, f, f_b in zip(("h_n", "c_n"), finals, finals_b):
            assert_close(f[b], f_b[0], ORACLE_TOL64, f"{what} {name}")
        for name, d, d_b in zip(("dh0", "dc0"), dinits, dinits_b):
            assert_close(d[b], d_b[0], ORACLE_TOL64, f"{what} {name}")
        if L == 0:  # untouched: the initial state is the final one, dh_n is dh0
            for s, f in zip(states, finals):
                assert np.array_equal(f[b], s[b]), what
            for ds, d in zip(dstates, dinits):
                assert np.array_equal(d[b], ds[b]), what
        for acc, g in zip(summed, dw_b):
            if acc is not None:
                acc += g
    for name, g, acc in zip(weight_names(kind), dweights, summed, strict=True):
        if acc is None:
            assert g is None, name
        else:
            assert_close(g, acc, ORACLE_TOL64, f"summed {name}")


# ---------------------------------------------------------------- 3. padded == packed, all B


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(5, 3, 2, 4), (4, 1, 3, 1), (1, 6, 2, 5)],
                         ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("kind", KINDS)
def test_padded_call_is_bitwise_the_packed_call_with_every_batch_size_B(kind, shape, dtype,
                                                                        backend, rng):
    """Bitwise, not to 1e-13: check_forward turns a padded call into the very Batch of the
    packed one (batch_sizes all B, the same B) and x (T, B, I) into the same (T * B, I) rows,
    and both backends only ever run that packed form. The reference then takes the same slices
    through the same NumPy operations; the native binding hands the kernels batch_sizes = NULL
    whenever every n_t = B, so both calls run the identical plain kernel path. The two calls
    differ only in the final reshape of y and dx, which copies nothing."""
    T, B, I, H = shape
    bs = np.full(T, B, np.int64)
    x, states, weights, dy, dstates = packed_problem(rng, kind, bs, B, I, H, dtype=dtype)
    P = states[0].shape[1]
    names, packed = run_functional(backend, kind, (x, states, weights, dy, dstates), bs)
    y, finals, ctx = f_forward(backend, kind, x.reshape(T, B, I), states, weights)
    dx, dinits, dweights = f_backward(backend, kind, ctx, dy.reshape(T, B, P), dstates)
    padded = [y.reshape(T * B, P), *finals, dx.reshape(T * B, I), *dinits, *dweights]
    for name, a, e in zip(names, packed, padded, strict=True):
        if e is None:
            assert a is None, name
            continue
        assert a.dtype == e.dtype and a.shape == e.shape, name
        assert np.array_equal(a, e), f"{name}: max diff {np.abs(a - e).max():.3g}"
    # Without h0, a packed call has B = batch_sizes[0] sequences: the same once more.
    y0, f0, _ = f_forward(backend, kind, x, (None,) * len(states), weights, bs)
    y1, f1, _ = f_forward(backend, kind, x.reshape(T, B, I), (None,) * len(states), weights)
    assert np.array_equal(y0, y1.reshape(T * B, P))
    for a, e in zip(f0, f1):
        assert np.array_equal(a, e)


# ---------------------------------------------------------------- 4. native vs reference

# Lengths, sorted longest first: zeros, ones, equal lengths (the kernels' plain path), B = 1,
# a single step, and batches drawn from a seeded generator.
_rng = np.random.default_rng(20240602)
NVR_LENGTHS = [[7, 5, 5, 3, 1, 0], [4, 4, 4], [6], [1, 1, 1, 0], [9, 2, 1, 1]] + [
    sorted(_rng.integers(0, 10, size=int(_rng.integers(2, 12))).tolist(), reverse=True)
    for _ in range(3)]
NVR_SIZES = [(3, 5), (1, 1), (4, 8)]  # (I, H), one per lengths by turns


def nvr_cases():
    return [(lengths, *NVR_SIZES[k % len(NVR_SIZES)]) for k, lengths in enumerate(NVR_LENGTHS)]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("case", nvr_cases(), ids=oracle_id)
@pytest.mark.parametrize("kind", KINDS)
def test_packed_native_matches_reference_float64(kind, case, bias, rng):
    lengths, I, H = case
    bs = batch_sizes_of(lengths)
    problem = packed_problem(rng, kind, bs, len(lengths), I, H, bias=bias)
    names, ref = run_functional("reference", kind, problem, bs)
    _, nat = run_functional("native", kind, problem, bs)
    assert_functional_matches(names, nat, ref)


@pytest.mark.parametrize("case", nvr_cases(), ids=oracle_id)
@pytest.mark.parametrize("kind", KINDS)
def test_packed_native_float32_error_is_like_the_reference(kind, case, rng):
    lengths, I, H = case
    bs = batch_sizes_of(lengths)
    problem = packed_problem(rng, kind, bs, len(lengths), I, H, dtype=np.float32)
    names, nat = run_functional("native", kind, problem, bs)
    _, ref = run_functional("reference", kind, problem, bs)
    _, truth = run_functional("reference", kind, as64_tree(problem), bs)
    assert_functional_matches(names, nat, ref, truth)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("forward_backend, backward_backend",
                         [("native", "reference"), ("reference", "native")])
def test_packed_context_crosses_backends(kind, forward_backend, backward_backend, rng):
    bs = batch_sizes_of([6, 4, 4, 1, 0])
    x, states, weights, dy, dstates = packed_problem(rng, kind, bs, 5, 3, 4)
    ctx_a = f_forward(forward_backend, kind, x, states, weights, bs)[2]
    ctx_b = f_forward(backward_backend, kind, x, states, weights, bs)[2]
    crossed = f_backward(backward_backend, kind, ctx_a, dy, dstates)
    same = f_backward(backward_backend, kind, ctx_b, dy, dstates)
    assert_close(crossed[0], same[0], TOL64, "dx")
    for k, (a, e) in enumerate(zip([*crossed[1], *crossed[2]], [*same[1], *same[2]])):
        assert_close(a, e, TOL64, f"gradient {k}")


# ---------------------------------------------------------------- 5. threads

# (lengths, I, H): B = 7 shrinking 7 -> 1 one by one, so the row parts (sequence b belongs to
# part b % build_info()["parts"]) drop out at different steps; a wider batch with equal
# lengths, gaps and zero-length sequences; B = 1.
THREAD_CASES = [
    (list(range(7, 0, -1)), 8, 32),
    ([12, 12, 11, 9, 9, 9, 6, 5, 5, 3, 2, 2, 1, 1, 0, 0, 0], 5, 24),
    ([10], 4, 16),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", THREAD_CASES, ids=oracle_id)
@pytest.mark.parametrize("kind", KINDS)
def test_native_packed_results_do_not_depend_on_threads(kind, case, dtype, rng,
                                                        restore_threads):
    lengths, I, H = case
    bs = batch_sizes_of(lengths)
    problem = packed_problem(rng, kind, bs, len(lengths), I, H, dtype=dtype)
    results = {}
    for n in THREADS:
        fastlstm.set_num_threads(n)
        results[n] = run_functional("native", kind, problem, bs)[1]
    names = run_functional("native", kind, problem, bs)[0]
    for n in THREADS[1:]:
        for name, a, b in zip(names, results[n], results[THREADS[0]], strict=True):
            assert a.dtype == b.dtype and np.array_equal(a, b), (
                f"{name} differs between 1 and {n} threads "
                f"(max diff {np.abs(a - b).max():.3g})")


# ---------------------------------------------------------------- 6. errors


def call_lstm(backend, x, batch_sizes, B=3, I=2, H=3):
    """An LSTM forward with h0 and c0 of B rows (x (N, I) when the call is valid)."""
    rng = np.random.default_rng(0)
    w = random_weights(rng, "lstm", I, H)
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    return BACKENDS[backend].lstm_forward(x, h0, c0, *w[:4], batch_sizes=batch_sizes)


def rows(n, I=2):
    return np.zeros((n, I))


# (batch_sizes, x rows or a full x, exception, regex of the message)
PACKED_X = r"x must be 2-D \(N, input_size\), packed rows, as batch_sizes is given"
ERROR_CASES = {
    "increasing": ([2, 3], 5, ValueError,
                   r"batch_sizes must be non-negative and non-increasing.*\[2, 3\]"),
    "negative": ([2, -1], 1, ValueError,
                 r"batch_sizes must be non-negative and non-increasing.*\[2, -1\]"),
    # A wrong ndim is a TypeError for batch_sizes but a ValueError for x and the states: either
    # is accepted here, so that making the two consistent breaks no test.
    "2-D": ([[2, 1]], 3, (TypeError, ValueError),
            r"batch_sizes must be a 1-D array of integers.*\(1, 2\)"),
    "float": (np.array([2.0, 1.0]), 3, TypeError,
              r"batch_sizes must be a 1-D array of integers.*float64"),
    "bool": (np.array([True, True]), 2, TypeError,
             r"batch_sizes must be a 1-D array of integers.*bool"),
    "0-D": (np.int64(3), 3, (TypeError, ValueError),
            r"batch_sizes must be a 1-D array of integers"),
    "sum too large": ([3, 2], 4, ValueError, r"x must have sum\(batch_sizes\) = 5 rows, got 4"),
    "sum too small": ([3, 2], 6, ValueError, r"x must have sum\(batch_sizes\) = 5 rows, got 6"),
    "more than h0": ([4, 1], 5, ValueError,
                     r"batch_sizes\[0\] = 4 is more sequences than the initial states' 3 rows"),
    "x 3-D": ([3, 3], np.zeros((2, 3, 2)), ValueError, PACKED_X + r", got 3-D"),
    "x 1-D": ([2], np.zeros(2), ValueError, PACKED_X + r", got 1-D"),
}


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("case", ERROR_CASES, ids=str)
def test_bad_batch_sizes_are_refused(backend, case):
    batch_sizes, x, exc, match = ERROR_CASES[case]
    x = rows(x) if isinstance(x, int) else x
    with pytest.raises(exc, match=match):
        call_lstm(backend, x, batch_sizes)


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("kind", ["rnn_tanh", "gru"])
def test_bad_batch_sizes_are_refused_by_every_cell(backend, kind):
    rng = np.random.default_rng(1)
    w = random_weights(rng, kind, 2, 3)
    h0 = np.zeros((3, 3))
    mod = BACKENDS[backend]
    fwd = mod.gru_forward if kind == "gru" else mod.rnn_forward
    with pytest.raises(ValueError, match=r"non-increasing"):
        fwd(rows(5), h0, *w, batch_sizes=[2, 3])
    with pytest.raises(ValueError, match=r"batch_sizes\[0\] = 4 .* initial states' 3 rows"):
        fwd(rows(5), h0, *w, batch_sizes=[4, 1])
    with pytest.raises(ValueError, match=r"x must have sum\(batch_sizes\) = 5"):
        fwd(rows(4), h0, *w, batch_sizes=[3, 2])


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_packed_backward_checks_dy_and_state_gradients(backend):
    bs = np.array([3, 2])
    y, h_n, c_n, ctx = call_lstm(backend, rows(5), bs)
    mod = BACKENDS[backend]
    with pytest.raises(ValueError, match=re.escape("dy must have shape (5, 3)")):
        mod.lstm_backward(ctx, np.zeros((6, 3)), None, None)
    with pytest.raises(ValueError, match=r"dy must be 2-D"):
        mod.lstm_backward(ctx, np.zeros((2, 3, 3)), None, None)
    with pytest.raises(ValueError, match=re.escape("dh_n must have shape (3, 3)")):
        mod.lstm_backward(ctx, None, np.zeros((2, 3)), None)
    # the context is still usable
    dx = mod.lstm_backward(ctx, np.ones((5, 3)), None, None)["x"]
    assert dx.shape == (5, 2)


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_batch_sizes_may_be_any_integer_sequence(backend):
    """A list, a tuple, int32, uint8, a strided view, torch's int64 tensor: the same call."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((6, 2))
    expected = call_lstm(backend, x, np.array([3, 2, 1], np.int64))[:3]
    spellings = [[3, 2, 1], (3, 2, 1), np.array([3, 2, 1], np.int32),
                 np.array([3, 2, 1], np.uint8), np.array([3, 9, 2, 9, 1, 9])[::2]]
    try:
        import torch
        spellings.append(torch.tensor([3, 2, 1]))  # PackedSequence.batch_sizes: int64, on CPU
    except ImportError:
        pass
    for bs in spellings:
        got = call_lstm(backend, x, bs)[:3]
        for a, e in zip(got, expected):
            assert np.array_equal(a, e), repr(bs)


# ---------------------------------------------------------------- 7. edge cases


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("batch_sizes", [[], [0], [0, 0, 0]], ids=["T0", "T1-zero", "T3-zeros"])
def test_every_sequence_of_length_zero(kind, backend, batch_sizes, rng):
    """T = 0 (no steps at all), or steps that run no sequence: y and dx have no rows, the
    final states are the initial ones, dh0 is dh_n, every weight gradient is zero."""
    B, I, H = 3, 2, 4
    bs = np.array(batch_sizes, np.int64)
    x, states, weights, dy, dstates = packed_problem(rng, kind, bs, B, I, H)
    assert x.shape == (0, I) and dy.shape[0] == 0
    y, finals, ctx = f_forward(backend, kind, x, states, weights, bs)
    assert y.shape == (0, states[0].shape[1])
    for s, f in zip(states, finals, strict=True):
        assert np.array_equal(f, s)
    dx, dinits, dweights = f_backward(backend, kind, ctx, dy, dstates)
    assert dx.shape == (0, I)
    for ds, di in zip(dstates, dinits, strict=True):
        assert np.array_equal(di, ds)
    for w, dw in zip(weights, dweights, strict=True):
        assert dw.shape == w.shape and not dw.any()
    # Without h0 the batch is empty: B = batch_sizes[0] (0 here).
    y, finals, ctx = f_forward(backend, kind, x, (None,) * len(states), weights, bs)
    assert y.shape[0] == 0 and all(f.shape[0] == 0 for f in finals)
    dx, dinits, dweights = f_backward(backend, kind, ctx, None, (None,) * len(states))
    assert dx.shape == (0, I) and all(d.shape[0] == 0 for d in dinits)
    assert all(not dw.any() for dw in dweights)


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("kind", KINDS)
def test_trailing_empty_steps_change_nothing(kind, backend, rng):
    """Steps of zero sequences after the last one (batch_sizes [3, 2, 1, 0, 0]) read and write
    nothing: bitwise the call without them."""
    short, long = np.array([3, 2, 1]), np.array([3, 2, 1, 0, 0])
    problem = packed_problem(rng, kind, short, 4, 2, 3)
    names, expected = run_functional(backend, kind, problem, short)
    _, got = run_functional(backend, kind, problem, long)
    for name, a, e in zip(names, got, expected, strict=True):
        assert np.array_equal(a, e), name


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_of_one_and_one_hidden_unit(kind, backend, rng):
    """B = 1, H = 1: the packed call is the padded call of the one sequence (bitwise: the same
    Batch), and a second h0 row of length 0 passes through unchanged."""
    T, I, H = 4, 2, 1
    bs = np.ones(T, np.int64)
    x, states, weights, dy, dstates = packed_problem(rng, kind, bs, 2, I, H)
    y, finals, ctx = f_forward(backend, kind, x, tuple(s[:1] for s in states), weights, bs)
    y_p, finals_p, ctx_p = f_forward(backend, kind, x[:, None], tuple(s[:1] for s in states),
                                     weights)
    assert np.array_equal(y, y_p[:, 0])
    for a, e in zip(finals, finals_p):
        assert np.array_equal(a, e)
    # The same sequence with a zero-length companion (B = 2 through h0).
    y2, finals2, ctx2 = f_forward(backend, kind, x, states, weights, bs)
    assert_close(y2, y, ORACLE_TOL64, "y")
    for s, a, e in zip(states, finals2, finals):
        assert_close(a[0], e[0], ORACLE_TOL64, "final of sequence 0")
        assert np.array_equal(a[1], s[1])
    dx2, dinits2, dw2 = f_backward(backend, kind, ctx2, dy, dstates)
    dx, dinits, dw = f_backward(backend, kind, ctx, dy, tuple(d[:1] for d in dstates))
    assert_close(dx2, dx, ORACLE_TOL64, "dx")
    for ds, a, e in zip(dstates, dinits2, dinits):
        assert_close(a[0], e[0], ORACLE_TOL64, "dinit of sequence 0")
        assert np.array_equal(a[1], ds[1])
    for a, e in zip(dw2, dw):
        assert_close(a, e, ORACLE_TOL64, "weight gradient")


@pytest.mark.parametrize("backend", ["reference", "native"])
def test_batch_comes_from_c0_when_h0_is_missing_and_empty_batch_sizes_are_integers(backend):
    """B is the initial states' rows, whichever of them is given; [] is an empty int array."""
    mod = BACKENDS[backend]
    w = random_weights(np.random.default_rng(2), "lstm", 2, 3)
    c0 = np.arange(9.0).reshape(3, 3)
    y, h_n, c_n, _ = mod.lstm_forward(np.ones((3, 2)), None, c0, *w, batch_sizes=[2, 1])
    assert h_n.shape == c_n.shape == (3, 3)
    assert np.array_equal(c_n[2], c0[2]) and np.array_equal(h_n[2], np.zeros(3))
    y, h_n, c_n, _ = mod.lstm_forward(np.ones((0, 2)), None, c0, *w, batch_sizes=[])
    assert y.shape == (0, 3) and np.array_equal(c_n, c0)
