"""Variable-length batches: the ``lengths`` argument of every layer's forward.

``layer(x, states, lengths=...)`` gives torch's packed-sequence semantics on a right-padded batch:
y keeps x's full T and is exactly zero past each sequence's length; h_n / c_n are each sequence's
state at its own last step (its initial state for length 0); the reverse direction starts at each
sequence's own end; backward ignores dy at padded positions, gives dx exactly zero there, and the
padding adds nothing to ``grads``.

What is checked, and against what:

- torch: ``pack_padded_sequence(..., enforce_sorted=False)`` / ``pad_packed_sequence(...,
  total_length=T)`` with the same weights (RNN tanh and relu, GRU, LSTM, LSTM with proj_size).
  Skipped test by test when torch is not installed.
- an oracle without torch, for every kind (peepholes too): each sequence run alone, without
  lengths, gives the same outputs, states and input gradients as its column of the batched call,
  and the batched parameter gradients are the sum of the per-sequence ones.
- padding is never read (NaN there changes nothing), lengths=None equals lengths all T, missing
  states are zeros, the edge cases T = 0 and B = 1, native against reference (also on a batch
  larger than the threads' row parts), the same bits on 1, 2 and 3 threads, and bad lengths
  (refused with a ValueError or TypeError naming ``lengths``, the layer left as it was).

Tolerances, relative to max(1, max |expected|):

- against torch: float64 1e-10, float32 1e-5, as in test_torch.py (both sides exact to roundoff,
  summed in different orders; dot products of K <= 20 terms differ by ~sqrt(K) u ~ 3e-7 in
  float32 and stay around 1e-6 through T = 6 steps, two layers and the backward pass).
- a sequence alone against its column of the batch, and native against reference: float64 1e-12,
  float32 1e-5. The arithmetic is the same up to BLAS blocking (B = 1 against B = 5 rows) and
  the order in which the parameter gradients are summed over the batch and time, so float64
  agrees to a few units of 1e-16; in float32 the reasoning above gives ~1e-6, with a margin of
  ten against an O(1) error of any wrong or missing term.
- lengths=None against lengths all T, and missing states against zeros: float64 1e-12, float32
  1e-6 (the same computation, at most a different blocking of the same products, as in
  test_stepwise.py).
- padding filled with NaN against padding filled with zeros, the different ways of spelling the
  same lengths, and different thread counts: bitwise equal. The runs see the same shapes, lengths
  and valid values, and the kernels are deterministic (the same bits for every thread count), so
  any difference means a padded value was read or a thread's share changed the arithmetic.
- zero-length sequences: exact. Their h_n is h0 and their dh0 is dh_n unchanged, y and dx are
  exact zeros.
"""
import numpy as np
import pytest
from helpers import (KINDS, Twins, assert_close, assert_layer_run_close, has_peephole,
                     layer_backward, layer_forward, layer_problem, layer_state_sizes, make_layer,
                     make_torch, run_layer, torch_run)

import fastlstm

T, B, I, H = 6, 5, 3, 4
DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]
BACKENDS = ["reference", "native"]
TORCH_KINDS = tuple(k for k in KINDS if not has_peephole(k))

TOLS_TORCH = {np.float32: 1e-5, np.float64: 1e-10}
TOLS_ORACLE = {np.float32: 1e-5, np.float64: 1e-12}
TOLS_SAME = {np.float32: 1e-6, np.float64: 1e-12}

# Unsorted; a zero, a one and the full length T.
LENGTHS = [4, 0, 6, 1, 3]
# The same without the zero (torch refuses it) ...
TORCH_LENGTHS = [4, 6, 1, 6, 3]
# ... and with nobody reaching T, so the last rows of y are padding for every sequence.
SHORT_LENGTHS = [2, 5, 1, 3, 5]


def case_id(case):
    return "-".join(f"{k}={v}" for k, v in case.items())


# ---------------------------------------------------------------- helpers


def steps(layer, a, b, n):
    """Sequence b's first n steps of a (x, y, dy or dx), keeping a batch axis of size 1."""
    return a[b:b + 1, :n] if layer.batch_first else a[:n, b:b + 1]


def padding(layer, a, b, n):
    """Sequence b's positions past its length n."""
    return a[b, n:] if layer.batch_first else a[n:, b]


def with_padding(layer, a, lengths, value):
    """A copy of a (x or dy) with ``value`` at every padded position."""
    a = a.copy()
    for b, n in enumerate(lengths):
        padding(layer, a, b, n)[...] = value
    return a


def assert_results_close(got, expected, tol, what=""):
    """Compare two ``run_both`` results."""
    y, finals, dx, dinits, grads = got
    y_e, finals_e, dx_e, dinits_e, grads_e = expected
    assert_close(y, y_e, tol, f"{what} y")
    assert len(finals) == len(finals_e) and len(dinits) == len(dinits_e)
    for name, a, e in zip(("h_n", "c_n"), finals, finals_e):
        assert_close(a, e, tol, f"{what} {name}")
    assert_close(dx, dx_e, tol, f"{what} dx")
    for name, a, e in zip(("dh0", "dc0"), dinits, dinits_e):
        assert_close(a, e, tol, f"{what} {name}")
    assert grads.keys() == grads_e.keys()
    for name in grads_e:
        assert_close(grads[name], grads_e[name], tol, f"{what} {name}")


def named(result):
    """A ``run_both`` result as a list of (name, array)."""
    y, finals, dx, dinits, grads = result
    return [("y", y), *zip(("h_n", "c_n"), finals), ("dx", dx), *zip(("dh0", "dc0"), dinits),
            *grads.items()]


def assert_results_equal(got, expected, what=""):
    """Two ``run_both`` results, bitwise."""
    got, expected = named(got), named(expected)
    assert [n for n, _ in got] == [n for n, _ in expected]
    for (name, a), (_, e) in zip(got, expected):
        assert a.shape == e.shape, f"{what} {name}: shape {a.shape} != {e.shape}"
        assert np.array_equal(a, e), f"{what} {name} differs"


def assert_all_finite(result, what=""):
    for name, a in named(result):
        assert np.isfinite(a).all(), f"{what} {name} is not finite"


# ---------------------------------------------------------------- against torch


TORCH_CASES = [
    (dict(num_layers=1), TORCH_LENGTHS),
    (dict(num_layers=1), SHORT_LENGTHS),
    (dict(num_layers=2, bidirectional=True), TORCH_LENGTHS),
    (dict(num_layers=2, batch_first=True), TORCH_LENGTHS),
]


@pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("case, lengths", TORCH_CASES,
                         ids=[f"{case_id(c)}-{'short' if l is SHORT_LENGTHS else 'full'}"
                              for c, l in TORCH_CASES])
@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_matches_torch_packed_sequence(torch, kind, case, lengths, dtype, backend, rng):
    layer = make_layer(kind, I, H, dtype=dtype, backend=backend, seed=13, **case)
    module = make_torch(kind, I, H, dtype, **case)
    result = module.load_state_dict({k: torch.from_numpy(v)
                                     for k, v in layer.state_dict().items()})
    assert not result.missing_keys and not result.unexpected_keys

    x, states, dy, dstates = layer_problem(rng, layer, T, B)   # dy random at padding too
    y, finals = layer_forward(layer, x, states, list(lengths))
    dx, dinits = layer_backward(layer, dy, dstates)
    y_t, finals_t, dx_t, dinits_t, grads_t = torch_run(module, kind, x, states, dy, dstates,
                                                       lengths)
    assert y.shape == y_t.shape
    assert len(finals) == len(finals_t) and len(dinits) == len(dinits_t)
    assert_layer_run_close(layer, (y, finals, dx, dinits),
                           (y_t, finals_t, dx_t, dinits_t, grads_t), TOLS_TORCH[dtype])


# ---------------------------------------------------------------- each sequence on its own

ORACLE_CASES = [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=2, bidirectional=True, batch_first=True, bias=False),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ORACLE_CASES, ids=case_id)
@pytest.mark.parametrize("kind", KINDS)
def test_each_sequence_alone_equals_its_column(kind, case, backend, dtype, rng):
    layer = make_layer(kind, I, H, dtype=dtype, backend=backend, seed=3, **case)
    x, states, dy, dstates = layer_problem(rng, layer, T, B)
    y, finals, dx, dinits, grads = run_layer(layer, x, states, dy, dstates, np.array(LENGTHS))
    assert y.shape == dy.shape and dx.shape == x.shape
    for f, s in zip(finals, states, strict=True):
        assert f.shape == s.shape
    for d, s in zip(dinits, states, strict=True):
        assert d.shape == s.shape

    tol = TOLS_ORACLE[dtype]
    total = {name: np.zeros_like(g) for name, g in grads.items()}
    for b, n in enumerate(LENGTHS):
        assert (padding(layer, y, b, n) == 0).all(), f"y past length {n} of sequence {b}"
        assert (padding(layer, dx, b, n) == 0).all(), f"dx past length {n} of sequence {b}"
        if n == 0:   # no step at all: the states pass through, in both directions
            for name, f, s in zip(("h_n", "c_n"), finals, states):
                assert np.array_equal(f[:, b], s[:, b]), f"{name} of the empty sequence {b}"
            for name, d, s in zip(("dh0", "dc0"), dinits, dstates):
                assert np.array_equal(d[:, b], s[:, b]), f"{name} of the empty sequence {b}"
            continue
        states_b = tuple(s[:, b:b + 1] for s in states)
        dstates_b = tuple(s[:, b:b + 1] for s in dstates)
        y_b, finals_b, dx_b, dinits_b, grads_b = run_layer(
            layer, steps(layer, x, b, n), states_b, steps(layer, dy, b, n), dstates_b, None)
        assert_close(steps(layer, y, b, n), y_b, tol, f"y of sequence {b}")
        for name, f, f_b in zip(("h_n", "c_n"), finals, finals_b):
            assert_close(f[:, b:b + 1], f_b, tol, f"{name} of sequence {b}")
        assert_close(steps(layer, dx, b, n), dx_b, tol, f"dx of sequence {b}")
        for name, d, d_b in zip(("dh0", "dc0"), dinits, dinits_b):
            assert_close(d[:, b:b + 1], d_b, tol, f"{name} of sequence {b}")
        for name, g in grads_b.items():
            total[name] += g
    for name, g in total.items():
        assert_close(grads[name], g, tol, f"{name}: the batch against the sum of the sequences")


# ---------------------------------------------------------------- padding is never read

PAD_CASES = [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True, dropout=0.5),
    dict(num_layers=2, bidirectional=True, batch_first=True),
]
PAD_LENGTHS = [3, 0, 5, 1, 2]     # nobody reaches T: the last row is padding everywhere


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", PAD_CASES, ids=case_id)
@pytest.mark.parametrize("kind", KINDS)
def test_padding_is_never_read(kind, case, backend, dtype, mode, rng):
    """NaN in x and dy at padded positions: everything finite and bitwise equal to the run with
    zeros there. Two layers from one seed, so that they draw the same dropout masks."""
    zeros, nans = (make_layer(kind, I, H, dtype=dtype, backend=backend, seed=8, **case)
                   for _ in range(2))
    x, states, dy, dstates = layer_problem(rng, zeros, T, B)
    lengths = np.array(PAD_LENGTHS)
    if mode == "eval":
        results = []
        for layer, value in ((zeros, 0), (nans, np.nan)):
            y, finals = layer_forward(layer.eval(), with_padding(layer, x, lengths, value), states,
                                      lengths)
            results.append((y, finals))
        (y0, f0), (yn, fn) = results
        assert np.isfinite(yn).all() and all(np.isfinite(f).all() for f in fn)
        assert np.array_equal(yn, y0)
        for a, b in zip(fn, f0, strict=True):
            assert np.array_equal(a, b)
        return
    clean = run_layer(zeros, with_padding(zeros, x, lengths, 0), states,
                     with_padding(zeros, dy, lengths, 0), dstates, lengths)
    dirty = run_layer(nans, with_padding(nans, x, lengths, np.nan), states,
                     with_padding(nans, dy, lengths, np.nan), dstates, lengths)
    assert_all_finite(dirty, "NaN padding:")
    assert_results_equal(dirty, clean, "NaN padding against zero padding:")
    y, _, dx, _, _ = dirty
    for b, n in enumerate(PAD_LENGTHS):
        assert (padding(nans, y, b, n) == 0).all()
        assert (padding(nans, dx, b, n) == 0).all()


# ---------------------------------------------------------------- lengths=None, T = 0, B = 1


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_lengths_all_T_equals_no_lengths(kind, backend, dtype, rng):
    """Stacked, bidirectional, with dropout (two layers from one seed draw the same masks)."""
    kw = dict(num_layers=2, bidirectional=True, dropout=0.3, dtype=dtype, backend=backend,
              seed=4)
    plain, full = make_layer(kind, I, H, **kw), make_layer(kind, I, H, **kw)
    x, states, dy, dstates = layer_problem(rng, plain, T, B)
    expected = run_layer(plain, x, states, dy, dstates, None)
    got = run_layer(full, x, states, dy, dstates, [T] * B)
    assert_results_close(got, expected, TOLS_SAME[dtype], "lengths all T:")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_missing_states_are_zeros(kind, backend, dtype, rng):
    """h0 / hx None and dh_n / dhx None with lengths: as if zeros had been given."""
    kw = dict(num_layers=2, bidirectional=True, dtype=dtype, backend=backend, seed=7)
    given, missing = make_layer(kind, I, H, **kw), make_layer(kind, I, H, **kw)
    x, states, dy, dstates = layer_problem(rng, given, T, B)
    zeros = tuple(np.zeros_like(s) for s in states)
    expected = run_layer(given, x, zeros, dy, zeros, LENGTHS)
    got = run_layer(missing, x, None, dy, None, LENGTHS)
    assert_results_close(got, expected, TOLS_SAME[dtype], "missing states:")
    for f in got[1]:     # the empty sequence's final states are its (zero) initial states
        assert not f[:, LENGTHS.index(0)].any()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("spell", [
    list, tuple, lambda v: [np.int64(n) for n in v], lambda v: np.array(v, np.int32),
    lambda v: np.array(v, np.uint8), lambda v: np.repeat(np.array(v, np.int64), 2)[::2]],
    ids=["list", "tuple", "list of np.int64", "int32", "uint8", "strided int64"])
def test_every_spelling_of_lengths_gives_the_same_result(spell, backend, rng):
    kw = dict(num_layers=2, bidirectional=True, dtype=np.float64, backend=backend, seed=9)
    reference_layer, layer = make_layer("lstm", I, H, **kw), make_layer("lstm", I, H, **kw)
    x, states, dy, dstates = layer_problem(rng, layer, T, B)
    expected = run_layer(reference_layer, x, states, dy, dstates, np.array(LENGTHS, np.int64))
    got = run_layer(layer, x, states, dy, dstates, spell(LENGTHS))
    assert_results_equal(got, expected, "lengths spelled differently:")


@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_no_steps_at_all(kind, backend, batch_first, rng):
    """T = 0 and every length 0: y is (0, B, ·), the states pass through, forward and back."""
    layer = make_layer(kind, I, H, num_layers=2, bidirectional=True, batch_first=batch_first,
                       dtype=np.float64, backend=backend, seed=1)
    x, states, dy, dstates = layer_problem(rng, layer, 0, B)
    D, P = 2, layer.output_size
    y, finals, dx, dinits, grads = run_layer(layer, x, states, dy, dstates, [0] * B)
    assert y.shape == ((B, 0, D * P) if batch_first else (0, B, D * P))
    assert dx.shape == x.shape
    for f, s in zip(finals, states, strict=True):
        assert np.array_equal(f, s)
    for d, s in zip(dinits, dstates, strict=True):
        assert np.array_equal(d, s)
    assert not any(g.any() for g in grads.values())
    # Without initial states: zeros.
    y, finals = layer_forward(layer, x, None, np.zeros(B, np.int64))
    for f, n in zip(finals, layer_state_sizes(layer), strict=True):
        assert np.array_equal(f, np.zeros((4, B, n)))


@pytest.mark.parametrize("n", [0, 1, 3, T])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_batch_of_one(kind, backend, n, rng):
    layer = make_layer(kind, I, H, num_layers=2, bidirectional=True, dtype=np.float64,
                       backend=backend, seed=2)
    x, states, dy, dstates = layer_problem(rng, layer, T, 1)
    got = run_layer(layer, x, states, dy, dstates, [n])
    y, finals, dx, dinits, grads = got
    assert y.shape == dy.shape and dx.shape == x.shape
    assert (y[n:] == 0).all() and (dx[n:] == 0).all()
    if n == 0:
        for f, s in zip(finals, states, strict=True):
            assert np.array_equal(f, s)
        for d, s in zip(dinits, dstates, strict=True):
            assert np.array_equal(d, s)
        assert not any(g.any() for g in grads.values())
        return
    y_e, finals_e, dx_e, dinits_e, grads_e = run_layer(layer, x[:n], states, dy[:n], dstates,
                                                      None)
    tol = TOLS_ORACLE[np.float64]
    assert_results_close((y[:n], finals, dx[:n], dinits, grads),
                         (y_e, finals_e, dx_e, dinits_e, grads_e), tol, f"length {n} of {T}:")


# ---------------------------------------------------------------- native against reference


@pytest.mark.parametrize("case", [dict(num_layers=2, bidirectional=True, dropout=0.5),
                                  dict(num_layers=2, bidirectional=True, batch_first=True)],
                         ids=case_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", KINDS)
def test_native_matches_reference(kind, dtype, case, rng):
    """Same weights and seed (so the same dropout masks) on both backends."""
    ref = make_layer(kind, I, H, dtype=dtype, backend="reference", seed=11, **case)
    nat = make_layer(kind, I, H, dtype=dtype, backend="native", seed=11, **case)
    nat.load_state_dict(ref.state_dict())
    x, states, dy, dstates = layer_problem(rng, ref, T, B)
    expected = run_layer(ref, x, states, dy, dstates, LENGTHS)
    got = run_layer(nat, x, states, dy, dstates, LENGTHS)
    assert_results_close(got, expected, TOLS_ORACLE[dtype], "native against reference:")


def random_lengths(rng, T, B):
    """Unsorted lengths in [0, T] with a 0, a 1 and a T among them."""
    lengths = rng.integers(0, T + 1, B)
    lengths[rng.choice(B, 3, replace=False)] = (0, 1, T)
    return lengths


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm", "lstmp_peephole"])
def test_native_matches_reference_on_a_larger_batch(kind, dtype, rng):
    """More sequences than threads times rows per part, lengths drawn at random."""
    TL, BL, IL, HL = 9, 23, 5, 9
    ref = make_layer(kind, IL, HL, num_layers=2, bidirectional=True, dtype=dtype,
                     backend="reference", seed=12)
    nat = make_layer(kind, IL, HL, num_layers=2, bidirectional=True, dtype=dtype,
                     backend="native", seed=12)
    nat.load_state_dict(ref.state_dict())
    x, states, dy, dstates = layer_problem(rng, ref, TL, BL)
    lengths = random_lengths(rng, TL, BL)
    expected = run_layer(ref, x, states, dy, dstates, lengths)
    got = run_layer(nat, x, states, dy, dstates, lengths)
    assert_results_close(got, expected, TOLS_ORACLE[dtype], "native against reference:")


@pytest.mark.parametrize("kind", KINDS)
def test_results_with_lengths_do_not_depend_on_threads(kind, rng, restore_threads):
    """Bitwise the same on 1, 2 and 3 threads (as test_threads.py, with lengths)."""
    TL, BL = 7, 13
    layer = make_layer(kind, I, H, num_layers=2, bidirectional=True, dtype=np.float32,
                       backend="native", seed=0)
    x, states, dy, dstates = layer_problem(rng, layer, TL, BL)
    lengths = random_lengths(rng, TL, BL)
    fastlstm.set_num_threads(1)
    expected = run_layer(layer, x, states, dy, dstates, lengths)
    for n in (2, 3):
        fastlstm.set_num_threads(n)
        assert_results_equal(run_layer(layer, x, states, dy, dstates, lengths), expected,
                             f"{n} threads against 1:")


# ---------------------------------------------------------------- bad lengths

TE = Twins.T

BAD_LENGTHS = {
    "negative": ([-1, 2], ValueError),
    "above T": ([TE + 1, 2], ValueError),
    "above T, array": (np.array([3, TE + 1]), ValueError),
    "one too many": ([TE, 2, 1], ValueError),
    "one too few": ([TE], ValueError),
    # No dtype to speak of: either complaint is right.
    "empty": ([], (ValueError, TypeError)),
    "2-D": (np.array([[TE, 2]]), ValueError),
    "0-D": (np.array(TE), ValueError),
    "floats": ([3.0, 2.5], TypeError),
    "integral floats": (np.array([3.0, 2.0]), TypeError),
    "bools": ([True, False], TypeError),
    "bool array": (np.array([True, True]), TypeError),
    "strings": (["3", "2"], TypeError),
    # Integers all the same, only too large for int64: still a value > T.
    "beyond int64": ([10**30, 2], ValueError),
    "beyond int64, below uint64": ([2**63, 2], ValueError),
}


@pytest.mark.parametrize("previous", [None, [4, 2]], ids=["after plain", "after lengths"])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
@pytest.mark.parametrize("case", list(BAD_LENGTHS))
def test_bad_lengths_are_refused_and_change_nothing(case, kind, backend, previous):
    bad, exc = BAD_LENGTHS[case]
    tw = Twins(kind, backend, previous)
    with pytest.raises(exc, match="lengths"):
        layer_forward(tw.layer, tw.x, tw.states, bad)
    tw.assert_unchanged()
