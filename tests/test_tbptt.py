"""Truncated backpropagation through time: a long sequence, chunk by chunk, carrying the state.

The pattern the README documents::

    hx = None
    for lo, hi in chunks:
        y, hx = layer(x[lo:hi], hx)           # the state carried from the chunk before
        layer.backward(dy[lo:hi])             # no gradient into the chunk before
        ...                                   # optimizer step, layer.zero_grad()

What is checked:

(a) Forward, at the functional level (every kind, both backends, both dtypes): running the chunks
    one after the other, each starting from the last one's h_n (c_n), equals one call over the
    whole sequence. Padded (T, B, I) and packed calls: a chunk of a packed batch is the
    contiguous block of its steps' rows, with its slice of batch_sizes, and the carried states
    are the (B, .) h_n / c_n, in which the sequences that ended before the chunk pass through
    unchanged (bitwise). test_stepwise.py checks the same for layers; here also a layer with
    ``lengths``.
(b) Exact BPTT done chunk by chunk, at the functional level: keep every chunk's context, run the
    backward chunks last to first, each chunk's dh0 (dc0) given to the chunk before as its dh_n
    (dc_n). dx, dh0 (dc0) and the weight gradients summed over the chunks equal one backward
    over the whole sequence (every kind, both backends, padded and packed, float64).
(c) Truncation, with layers (LSTM, LSTM with projection and GRU, 2 layers, both backends): the
    ``grads`` accumulated by the loop above equal torch's truncated loop (the state detached
    between chunks, loss sum(y * R) per chunk, the same weights), and so do dx; they differ from
    the full-BPTT gradients, so the truncation is real, except dx in the last chunk, which no
    later loss reaches in either. Skipped without torch.

Tolerances, relative to max(1, max |expected|) (helpers.assert_close):
- chunked against whole, same backend: float64 1e-12, float32 1e-6. The arithmetic is the same
  except that the input projection x W_ih^T runs over a chunk's rows instead of all rows (BLAS
  blocking may change the last bits) and, in (b), the weight gradients are summed per chunk and
  then over the chunks: a few units of 1e-16 per term, far below 1e-12.
- against torch, float64 1e-10, as in test_torch.py (different summation orders).
"""
import numpy as np
import pytest
from helpers import (KINDS, assert_close, cell_of, f_backward, f_forward, grads_copy,
                     layer_backward, layer_forward, layer_state_sizes, make_layer, make_torch,
                     max_rel_err, random_weights, state_sizes, weight_names)

import fastlstm
from fastlstm import native, reference

BACKENDS = {"reference": reference, "native": native}
TOLS = {np.float32: 1e-6, np.float64: 1e-12}
TORCH_TOL = 1e-10
T, B, I, H = 9, 4, 3, 5
# Packed: 5 sequences sorted longest first, one of length 0 (B exceeds batch_sizes[0]).
LENGTHS = (9, 7, 7, 3, 0)
SPLITS = {"uneven": (0, 2, 3, 7, 9), "steps": tuple(range(T + 1)), "empty chunk": (0, 4, 4, 9)}


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    """The native kernels on one OpenMP thread: on this small shared machine, waking OpenMP
    threads costs far more than these tiny problems do. Results do not depend on the thread
    count (test_threads.py)."""
    fastlstm.set_num_threads(1)


# ---------------------------------------------------------------- functional helpers


def batch_sizes_of(lengths):
    """torch's batch_sizes of sequences with these lengths, sorted longest first."""
    lengths = np.asarray(lengths)
    return np.array([(lengths > t).sum() for t in range(int(lengths.max()))], np.int64)


class Problem:
    """x, initial states, weights, dy and final-state gradients of one call; padded (T, B, .)
    or packed (N, .) rows of the sequences of LENGTHS with their batch_sizes."""

    def __init__(self, rng, kind, form, dtype=np.float64, bias=True):
        sizes = state_sizes(kind, H)
        if form == "packed":
            self.batch_sizes = batch_sizes_of(LENGTHS)
            n_seq, lead = len(LENGTHS), (int(self.batch_sizes.sum()),)
        else:
            self.batch_sizes, n_seq, lead = None, B, (T, B)
        self.x = rng.standard_normal(lead + (I,)).astype(dtype)
        self.states = tuple(rng.standard_normal((n_seq, n)).astype(dtype) for n in sizes)
        self.weights = random_weights(rng, kind, I, H, dtype, bias)
        self.dy = rng.standard_normal(lead + (sizes[0],)).astype(dtype)
        self.dstates = tuple(rng.standard_normal((n_seq, n)).astype(dtype) for n in sizes)

    def chunks(self, bounds):
        """Per chunk: its rows of x and of dy, and its batch_sizes (None when padded)."""
        if self.batch_sizes is None:
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                yield self.x[lo:hi], self.dy[lo:hi], None
        else:
            off = np.concatenate([[0], np.cumsum(self.batch_sizes)])
            for lo, hi in zip(bounds[:-1], bounds[1:]):
                rows = slice(off[lo], off[hi])
                yield self.x[rows], self.dy[rows], self.batch_sizes[lo:hi]


def chunked_forward(backend, kind, problem, bounds, start=None):
    """The chunks one after the other, each from the last one's final states (or, with
    ``start="zeros"``, every chunk from zeros). Returns y, the finals and the contexts."""
    states, ys, ctxs = problem.states, [], []
    for x, _, batch_sizes in problem.chunks(bounds):
        init = tuple(np.zeros_like(s) for s in problem.states) if start == "zeros" else states
        y, finals, ctx = f_forward(backend, kind, x, init, problem.weights, batch_sizes)
        if batch_sizes is not None:
            # Sequences that ended before this chunk (rows from batch_sizes[0] on, every row
            # for a chunk past the longest) pass through it unchanged.
            running = int(batch_sizes[0]) if len(batch_sizes) else 0
            for before, after in zip(init, finals):
                assert np.array_equal(after[running:], before[running:])
        ys.append(y)
        ctxs.append(ctx)
        states = finals
    return np.concatenate(ys), states, ctxs


def form_params(f):
    f = pytest.mark.parametrize("split", list(SPLITS))(f)
    return pytest.mark.parametrize("form", ["padded", "packed"])(f)


# ---------------------------------------------------------------- (a) forward


@form_params
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("kind", KINDS)
def test_chunked_forward_equals_whole_sequence(kind, backend, dtype, form, split, rng):
    problem = Problem(rng, kind, form, dtype)
    y, finals, _ = f_forward(backend, kind, problem.x, problem.states, problem.weights,
                           problem.batch_sizes)
    y_chunks, finals_chunks, _ = chunked_forward(backend, kind, problem, SPLITS[split])
    tol = TOLS[dtype]
    assert y_chunks.dtype == y.dtype
    assert_close(y_chunks, y, tol, "y")
    for name, a, b in zip(("h_n", "c_n"), finals_chunks, finals):
        assert a.dtype == b.dtype
        assert_close(a, b, tol, name)
    # The state really is carried: every chunk from zeros gives something else.
    y_fresh, _, _ = chunked_forward(backend, kind, problem, SPLITS[split], start="zeros")
    assert not np.allclose(y_fresh, y, rtol=0, atol=1e-3)


def with_lengths(layer, x, states, lengths):
    """A layer's forward with ``lengths``; ``(y, finals)``, finals a tuple."""
    if isinstance(layer, fastlstm.LSTM):
        y, (h_n, c_n) = layer(x, tuple(states), lengths=lengths)
        return y, (h_n, c_n)
    y, h_n = layer(x, states[0], lengths=lengths)
    return y, (h_n,)


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("kind", ["rnn_relu", "gru", "lstmp_peephole"])
def test_layer_chunks_with_lengths(kind, backend, rng):
    """A right-padded batch with ``lengths``, in chunks: each chunk's lengths are what is left
    of each sequence in it (0 for a sequence that has ended: its state passes through)."""
    layer = make_layer(kind, I, H, num_layers=2, dtype=np.float64, backend=backend, seed=3)
    lengths = np.array([9, 2, 7, 0, 5])
    n = len(lengths)
    x = rng.standard_normal((T, n, I))
    states = tuple(rng.standard_normal((2, n, s)) for s in layer_state_sizes(layer))
    y, finals = with_lengths(layer, x, states, lengths)
    ys, carried = [], states
    for lo, hi in zip(SPLITS["uneven"][:-1], SPLITS["uneven"][1:]):
        chunk_lengths = np.clip(lengths - lo, 0, hi - lo)
        y_c, new = with_lengths(layer, x[lo:hi], carried, chunk_lengths)
        ended = chunk_lengths == 0
        for before, after in zip(carried, new):
            assert np.array_equal(after[:, ended], before[:, ended])
        ys.append(y_c)
        carried = new
    assert_close(np.concatenate(ys), y, 1e-12, "y")
    for name, a, b in zip(("h_n", "c_n"), carried, finals):
        assert_close(a, b, 1e-12, name)


# ---------------------------------------------------------------- (b) exact BPTT in chunks


def chunked_backward(backend, kind, problem, ctxs, bounds):
    """Backward through the chunks last to first, each chunk's initial-state gradients given
    to the chunk before as its final-state gradients. Returns dx, dinits and the weight
    gradients summed over the chunks (None where the weight is None)."""
    dys = [dy for _, dy, _ in problem.chunks(bounds)]
    dstates, dxs, dweights = problem.dstates, [], None
    for ctx, dy in zip(reversed(ctxs), reversed(dys)):
        dx, dstates, dw = f_backward(backend, kind, ctx, dy, dstates)
        dxs.append(dx)
        dweights = list(dw) if dweights is None else [
            None if a is None else a + b for a, b in zip(dweights, dw)]
    return np.concatenate(dxs[::-1]), dstates, dweights


@form_params
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("kind", KINDS)
def test_chunked_bptt_equals_full_bptt(kind, backend, bias, form, split, rng):
    problem = Problem(rng, kind, form, np.float64, bias)
    bounds = SPLITS[split]
    _, _, ctx = f_forward(backend, kind, problem.x, problem.states, problem.weights,
                        problem.batch_sizes)
    dx, dinits, dweights = f_backward(backend, kind, ctx, problem.dy, problem.dstates)
    _, _, ctxs = chunked_forward(backend, kind, problem, bounds)
    dx_c, dinits_c, dweights_c = chunked_backward(backend, kind, problem, ctxs, bounds)

    tol = TOLS[np.float64]
    assert_close(dx_c, dx, tol, "dx")
    for name, a, b in zip(("dh0", "dc0"), dinits_c, dinits):
        assert_close(a, b, tol, name)
    assert len(dweights_c) == len(dweights) == len(weight_names(kind))
    for name, a, b in zip(weight_names(kind), dweights_c, dweights):
        if b is None:
            assert a is None and not bias, name
        else:
            assert_close(a, b, tol, name)
    # Dropping the gradient carried between chunks (truncation) changes the result.
    dropped = chunked_backward_truncated(backend, kind, problem, ctxs, bounds)
    assert max_rel_err(dropped, dweights[1]) > 1e-6, "w_hh's gradient should depend on it"


def chunked_backward_truncated(backend, kind, problem, ctxs, bounds):
    """w_hh's gradient summed over chunks whose backward each starts from zero state
    gradients (only the last chunk gets the final-state gradients)."""
    dys = [dy for _, dy, _ in problem.chunks(bounds)]
    total = 0
    for k, (ctx, dy) in enumerate(zip(ctxs, dys)):
        last = k == len(ctxs) - 1
        dstates = problem.dstates if last else (None,) * len(problem.dstates)
        total = total + f_backward(backend, kind, ctx, dy, dstates)[2][1]
    return total


# ---------------------------------------------------------------- (c) truncation, against torch

TORCH_KINDS = ("lstm", "lstmp", "gru")
TRUNC_BOUNDS = (0, 3, 5, 9)


def truncated_loop(layer, x, states, R, bounds):
    """The README's loop: returns dx (the chunks' dx concatenated) and the accumulated grads."""
    layer.zero_grad()
    hx, dxs = states, []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        _, hx = layer_forward(layer, x[lo:hi], hx)
        dx, _ = layer_backward(layer, R[lo:hi])
        dxs.append(dx)
    return np.concatenate(dxs), grads_copy(layer)


def torch_truncated_loop(torch, module, kind, x, states, R, bounds):
    module.zero_grad()
    x_t = torch.from_numpy(x).requires_grad_()
    hx = tuple(torch.from_numpy(s) for s in states)
    hx = hx if cell_of(kind) == "lstm" else hx[0]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        y, hx = module(x_t[lo:hi], hx)
        (y * torch.from_numpy(R[lo:hi])).sum().backward()
        hx = tuple(h.detach() for h in hx) if cell_of(kind) == "lstm" else hx.detach()
    grads = {name: p.grad.numpy().copy() for name, p in module.named_parameters()}
    return x_t.grad.numpy().copy(), grads


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("kind", TORCH_KINDS)
def test_truncated_bptt_matches_torch(torch, kind, backend, rng):
    layer = make_layer(kind, I, H, num_layers=2, dtype=np.float64, backend=backend, seed=11)
    module = make_torch(kind, I, H, num_layers=2)
    loaded = module.load_state_dict({k: torch.from_numpy(v) for k, v in
                                     layer.state_dict().items()})
    assert not loaded.missing_keys and not loaded.unexpected_keys
    x = rng.standard_normal((T, B, I))
    R = rng.standard_normal((T, B, layer.output_size))
    states = tuple(rng.standard_normal((2, B, n)) for n in layer_state_sizes(layer))

    dx, grads = truncated_loop(layer, x, states, R, TRUNC_BOUNDS)
    dx_t, grads_t = torch_truncated_loop(torch, module, kind, x, states, R, TRUNC_BOUNDS)
    assert grads.keys() == grads_t.keys()
    for name, g in grads_t.items():
        assert_close(grads[name], g, TORCH_TOL, name)
    assert_close(dx, dx_t, TORCH_TOL, "dx")

    # Full BPTT over the whole sequence: the truncation is real.
    layer.zero_grad()
    layer_forward(layer, x, states)
    dx_full, _ = layer_backward(layer, R)
    for name in grads:
        if "weight_hh" in name:
            assert max_rel_err(grads[name], layer.grads[name]) > 1e-4, name
    # No later loss reaches the last chunk, truncated or not; the earlier chunks lose the
    # gradient of the later chunks' losses.
    last = slice(TRUNC_BOUNDS[-2], None)
    assert_close(dx[last], dx_full[last], 1e-12, "dx in the last chunk")
    first = slice(0, TRUNC_BOUNDS[1])
    assert max_rel_err(dx[first], dx_full[first]) > 1e-4, "dx in the first chunk"
