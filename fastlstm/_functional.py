"""What both backends share: argument checks and the context saved for backward.

``fastlstm.reference`` and ``fastlstm.native`` expose the same single-layer, single-direction
functions. Both check their arguments here, once, and both hand back a :class:`Context` holding the
same arrays in the same layout, so a context made by one backend can be given to the other.

Notation (used in every docstring and in csrc/):

    T  timesteps        B  batch rows        I  input features
    H  hidden units: the size of the LSTM's cell state and of every gate
    P  the size of h: the LSTM's proj_size when it projects (h = W_hr m), else H
    G  gates per cell: 1 for the Elman RNN, 4 for the LSTM (torch's order i, f, g, o),
       3 for the GRU (r, z, n)
    N  rows of the packed steps (below): T * B for a batch of equal lengths
    w_ih (G * H, I)   w_hh (G * H, P)   b_ih, b_hh (G * H,)   w_hr (P, H)   torch.nn's shapes
    w_peephole (3 * H,)     LSTM peephole weights of the gates i, f, o

A batch comes in one of two forms. Padded: x (T, B, I), every sequence T steps long. Packed, as
torch's PackedSequence holds it: the B sequences sorted by length, longest first, step t runs the
first ``n_t = batch_sizes[t]`` of them, and x (N, I) holds the rows of step 0, then those of
step 1, and so on (N = sum of batch_sizes). A padded batch is the packed one with every n_t = B,
and the backends work on that form throughout; the context keeps every array in it:

    x      (N, I)           input rows
    hs     (B + N, P)       hs[:B] = h0, then h after each step, row for row like x
    cs     (B + N, H)       LSTM cell states, cs[:B] = c0
    gates  (N, G * H)       LSTM and GRU: gate activations after their nonlinearities
    hn     (N, H)           GRU: W_hn h_{t-1} + b_hn, the part of n that the reset gate scales
    normed (N, 9 * H)       layer-normalised LSTM ("lnlstm"): the three normalised vectors of
                            each row, [LN(x W_ih^T) (4H) | LN(h_{t-1} W_hh^T) (4H) | LN(c_t) (H)]
    rstd   (N, 3)           lnlstm: 1 / sqrt(var + eps) of the same three, in the same order
"""

import functools
from dataclasses import KW_ONLY, dataclass, field

import numpy as np

from .cells import CELLS

DTYPES = (np.float32, np.float64)
GATES = {name: cell.gates for name, cell in CELLS.items()}
NONLINEARITIES = ("tanh", "relu")


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class Batch:
    """The steps of a call: step t runs the first ``batch_sizes[t]`` of the B sequences.

    It keeps a read-only copy of batch_sizes: checked when its forward was, a context's batch
    cannot change between the forward and the backward, whose kernel relies on it.
    """

    batch_sizes: np.ndarray   # (T,) int64, non-increasing, at most B
    B: int
    padded: bool              # the caller's x, y, dy and dx are (T, B, ...), not (N, ...)
    N: int = field(init=False)   # the rows of all steps: sum(batch_sizes)

    def __post_init__(self):
        sizes = np.array(self.batch_sizes, np.int64)
        sizes.flags.writeable = False
        object.__setattr__(self, "batch_sizes", sizes)
        object.__setattr__(self, "N", int(sizes.sum()))

    @property
    def T(self):
        return len(self.batch_sizes)

    @property
    def full(self):
        """Every step runs all B sequences: the kernels' plain case. As they only shrink, N = T B
        says it (a batch of no steps is full)."""
        return self.N == self.T * self.B

    def steps(self):
        """For each step, three slices: its rows of x (and of y, gates, dy, dx), the rows of hs
        and cs holding the states it starts from, and the rows it writes there."""
        off, prev = 0, 0
        for n in self.batch_sizes.tolist():
            yield slice(off, off + n), slice(prev, prev + n), slice(self.B + off, self.B + off + n)
            off, prev = off + n, self.B + off

    def _offsets(self):
        """The first row of each step in x: off_t = n_0 + ... + n_{t-1}, then N."""
        return np.concatenate([[0], np.cumsum(self.batch_sizes)])

    def prev_rows(self):
        """The row of hs (and cs) holding the state each row of x started from: h_{t-1}."""
        off = self._offsets()
        first_prev = np.concatenate([[0], self.B + off[:-2]])  # step 0 starts from hs[:B]
        step = np.repeat(np.arange(self.T), self.batch_sizes)
        return first_prev[step] + np.arange(self.N) - off[step]

    def lengths(self):
        """Each sequence's length, longest first: sequence b runs while batch_sizes[t] > b."""
        return np.searchsorted(-self.batch_sizes, -np.arange(self.B), side="left")

    def last_rows(self):
        """The row of hs (and cs) holding each sequence's last state: for a sequence of length
        0, its initial state."""
        if self.full:
            return np.arange(self.N, self.N + self.B)
        lengths = self.lengths()
        off = self._offsets()
        return np.where(lengths > 0, self.B + off[np.maximum(lengths - 1, 0)] + np.arange(self.B),
                        np.arange(self.B))

    def reversed_rows(self):
        """For each row of x, the row of the same sequence at the mirrored step length - 1 - t:
        the order in which a reverse direction reads each sequence, from its own end."""
        off = self._offsets()
        t = np.repeat(np.arange(self.T), self.batch_sizes)   # the step of each row
        pos = np.arange(self.N) - off[t]                      # and its sequence
        return off[self.lengths()[pos] - 1 - t] + pos

    def outside(self, a):
        """Packed rows ``a`` (N, n) in the caller's form: (T, B, n) for a padded call."""
        return a.reshape(self.T, self.B, a.shape[-1]) if self.padded else a


@dataclass(slots=True, repr=False, eq=False)
class Context:
    """What a forward pass keeps for its backward pass (treat as opaque).

    It holds references, not copies, to the input ``x`` and the weights, and the forward's
    output ``y`` is a view of its saved states: changing any of them in place between forward
    and backward makes the gradients wrong (torch would refuse such a backward). The layers
    copy what they hand out, so only direct callers need to care. Arrays in the packed form
    above; None where the cell or its options have no such array.
    """

    cell: str                  # "rnn", "lstm", "gru" or "lnlstm"
    batch: Batch
    x: np.ndarray
    hs: np.ndarray
    w_ih: np.ndarray
    w_hh: np.ndarray
    has_bias: bool
    _: KW_ONLY
    nonlinearity: str = None   # the RNN's "tanh" or "relu"
    cs: np.ndarray = None
    gates: np.ndarray = None
    hn: np.ndarray = None
    w_hr: np.ndarray = None
    w_peephole: np.ndarray = None
    g_ih: np.ndarray = None    # lnlstm: the layer norms' gains (and the cell's bias)
    g_hh: np.ndarray = None
    g_c: np.ndarray = None
    b_c: np.ndarray = None
    normed: np.ndarray = None
    rstd: np.ndarray = None

    @property
    def hidden_size(self):
        return self.w_hh.shape[0] // GATES[self.cell]

    def __repr__(self):
        b = self.batch
        extra = "" if b.padded else f", N={b.N}"
        extra += "" if self.w_hr is None else f", proj_size={self.hs.shape[1]}"
        extra += "" if self.w_peephole is None else ", peephole=True"
        return (f"Context(cell={self.cell!r}, T={b.T}, B={b.B}{extra}, H={self.hidden_size}, "
                f"dtype={self.hs.dtype})")


@functools.lru_cache(maxsize=64)
def padded_batch(T, B):
    """The Batch of a padded call of T steps of B sequences. A Batch cannot change, so calls of
    the same sizes share one: a stream of one step per call makes none."""
    return Batch(np.full(T, B, np.int64), B, padded=True)


def describe(a):
    """A short description of an array-like for error messages."""
    if isinstance(a, np.ndarray):
        return f"an array of shape {a.shape} and dtype {a.dtype}"
    if isinstance(a, (tuple, list)):
        return f"a {type(a).__name__} of {len(a)} items"
    return f"{type(a).__name__} {a!r}"[:120]


def as_array(name, a):
    """``a`` as a NumPy array, or a TypeError naming ``name``.

    Arrays pass as they are; torch tensors (anything with ``.detach().cpu().numpy()``) and
    array-likes (lists, scalars) are converted. What would only make an array of Python objects
    (None, ragged lists) is refused here, where the message can still say what it was.
    """
    if isinstance(a, np.ndarray):
        return a
    try:
        array = np.asarray(a.detach().cpu().numpy() if hasattr(a, "detach") else a)
    except Exception as exc:  # an object numpy cannot turn into an array
        raise TypeError(f"{name} must be an array, got {describe(a)}") from exc
    if array.dtype == object:
        raise TypeError(f"{name} must be an array of numbers, got {describe(a)}")
    return array


def as_float_array(name, a, dtype=None, ndim=None):
    """Return ``a`` as a C-contiguous float32/float64 array, or raise naming ``name``.

    ``dtype`` None accepts either float dtype (the first array of a call fixes the dtype of the
    rest). Lists and other array-likes are converted; integer or other dtypes are refused rather
    than silently cast, because a silently truncated or widened input is a bug the caller wants to
    hear about.
    """
    if not isinstance(a, np.ndarray):
        a = as_array(name, a)
        if a.dtype.kind in "iub" and dtype is not None:
            a = a.astype(dtype)  # a literal list of numbers: take the expected dtype
    if dtype is None:
        if a.dtype not in DTYPES:
            raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    elif a.dtype != dtype:
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)} (like the other arrays), "
                        f"got {a.dtype}")
    if ndim is not None and a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got {a.ndim}-D array of shape {a.shape}")
    # A copy when not C-contiguous or not aligned (an offset view of raw bytes): the kernels
    # read whole elements. Not np.ascontiguousarray, which turns a 0-D array into a 1-D one.
    flags = a.flags
    if flags.c_contiguous and flags.aligned:
        return a
    return np.array(a, order="C", copy=True)


def expect_shape(name, a, shape, meaning):
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} {meaning}, got {a.shape}")


def check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _input(x, batch_sizes):
    """x as a float array of the form ``batch_sizes`` says: padded (T, B, I) without it, packed
    rows (N, I) with it."""
    x = as_float_array("x", x)
    if x.ndim != (3 if batch_sizes is None else 2):
        form = ("3-D (T, batch, input_size); packed (N, input_size) rows need batch_sizes"
                if batch_sizes is None else "2-D (N, input_size), packed rows, as batch_sizes "
                "is given")
        raise ValueError(f"x must be {form}, got {x.ndim}-D array of shape {x.shape}")
    return x


def check_forward(cell, x, states, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh", w_hr=None,
                  w_peephole=None, batch_sizes=None):
    """Check a forward call's arguments; return them as contiguous arrays of one dtype.

    ``states`` is ``(h0,)`` for the RNN and GRU and ``(h0, c0)`` for the LSTM and the lnlstm; a
    None state means zeros. ``w_hr`` and ``w_peephole`` (LSTM only) may be None; the lnlstm's
    layer-norm weights are checked by :func:`check_layer_norm`. ``batch_sizes`` None means x is
    padded (T, B, I); else x is packed (N, I). Returns ``(x, states, weights, batch)``: x as its
    (N, I) rows, ``weights = (w_ih, w_hh, b_ih, b_hh, w_hr, w_peephole)`` with the biases None
    when both are, and the :class:`Batch`.
    """
    if cell == "rnn" and nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    if cell == "lnlstm":
        for name, a in (("w_hr", w_hr), ("w_peephole", w_peephole)):
            if a is not None:
                raise ValueError(f"{name} must be None for the layer-normalised LSTM (it has no "
                                 f"projection and no peepholes), got {describe(a)}")
    x = _input(x, batch_sizes)
    dtype = x.dtype
    I = x.shape[-1]
    w_ih = as_float_array("w_ih", w_ih, dtype, ndim=2)
    gh = w_ih.shape[0]
    G = GATES[cell]
    if gh % G or gh == 0:
        raise ValueError(f"w_ih must have shape ({G} * hidden_size, input_size) with "
                         f"hidden_size >= 1, got {w_ih.shape}")
    H = gh // G
    expect_shape("w_ih", w_ih, (G * H, I), f"(gates * hidden_size, input_size={I} from x)")
    P = H
    if w_hr is not None:
        w_hr = as_float_array("w_hr", w_hr, dtype, ndim=2)
        P = w_hr.shape[0]
        if P == 0:
            raise ValueError(f"w_hr must have shape (proj_size, hidden_size) with proj_size >= "
                             f"1, got {w_hr.shape}")
        expect_shape("w_hr", w_hr, (P, H), f"(proj_size, hidden_size={H} from w_ih)")
    w_hh = as_float_array("w_hh", w_hh, dtype, ndim=2)
    expect_shape("w_hh", w_hh, (G * H, P), f"(gates * hidden_size, {_h_size(w_hr)})")
    if (b_ih is None) != (b_hh is None):
        raise ValueError("b_ih and b_hh must both be given or both be None")
    if b_ih is not None:
        b_ih = as_float_array("b_ih", b_ih, dtype, ndim=1)
        expect_shape("b_ih", b_ih, (G * H,), "(gates * hidden_size,)")
        b_hh = as_float_array("b_hh", b_hh, dtype, ndim=1)
        expect_shape("b_hh", b_hh, (G * H,), "(gates * hidden_size,)")
    if w_peephole is not None:
        w_peephole = as_float_array("w_peephole", w_peephole, dtype, ndim=1)
        expect_shape("w_peephole", w_peephole, (3 * H,), "(3 * hidden_size,), gates i, f, o")
    if batch_sizes is None:
        T, B, _ = x.shape
        batch = padded_batch(T, B)
        x = x.reshape(T * B, I)
    else:
        given = [st for st in states if st is not None]
        batch = _packed_batch(batch_sizes, x, given[0] if given else None)
    h0 = _state("h0", states[0], dtype, batch.B, P, _h_size(w_hr))
    states = (h0,) + tuple(_state("c0", c0, dtype, batch.B, H) for c0 in states[1:])
    return x, states, (w_ih, w_hh, b_ih, b_hh, w_hr, w_peephole), batch


LN_WEIGHTS = CELLS["lnlstm"].weights[4:]    # g_ih, g_hh, g_c, b_c
_LN_MEANINGS = ("(4 * hidden_size,), the gain of LN(x W_ih^T)",
                "(4 * hidden_size,), the gain of LN(h W_hh^T)",
                "(hidden_size,), the gain of LN(c)", "(hidden_size,), the bias of LN(c)")


def check_layer_norm(dtype, H, g_ih, g_hh, g_c, b_c, name="{}"):
    """The layer-normalised LSTM's gains and c's bias, (4H,), (4H,), (H,), (H,), as contiguous
    arrays of ``dtype``; ``name`` formats each one's name for the messages."""
    out = []
    for kind, a, n, meaning in zip(LN_WEIGHTS, (g_ih, g_hh, g_c, b_c), (4 * H, 4 * H, H, H),
                                   _LN_MEANINGS):
        what = name.format(kind)
        if a is None:
            raise TypeError(f"{what} must be an array of shape {(n,)} {meaning}, got None")
        a = as_float_array(what, a, dtype, ndim=1)
        expect_shape(what, a, (n,), meaning)
        out.append(a)
    return tuple(out)


def _packed_batch(batch_sizes, x, h0):
    """The Batch of a packed call; B is the initial states' rows (sequences of length 0 come
    after the batch_sizes[0] running ones), or batch_sizes[0] without them."""
    if not isinstance(batch_sizes, np.ndarray):
        try:
            batch_sizes = np.asarray(batch_sizes)
        except Exception as exc:
            raise TypeError(f"batch_sizes must be a 1-D array of integers, got "
                            f"{describe(batch_sizes)}") from exc
        if batch_sizes.size == 0:
            batch_sizes = batch_sizes.astype(np.int64)   # [] is float64 to NumPy
    if batch_sizes.ndim != 1 or batch_sizes.dtype.kind not in "iu":
        raise TypeError(f"batch_sizes must be a 1-D array of integers, got "
                        f"{describe(batch_sizes)}")
    if batch_sizes.size and batch_sizes.max() > np.iinfo(np.int64).max:
        raise ValueError(f"batch_sizes must fit in int64, got {batch_sizes.max()}")
    sizes = batch_sizes.astype(np.int64)
    if np.any(sizes < 0) or np.any(sizes[1:] > sizes[:-1]):
        raise ValueError(f"batch_sizes must be non-negative and non-increasing (sequences "
                         f"sorted longest first), got {sizes.tolist()}")
    total = sum(sizes.tolist())   # in Python's integers: a sum past int64 must not wrap around
    if total != x.shape[0]:
        raise ValueError(f"x must have sum(batch_sizes) = {total} rows, got {x.shape[0]}")
    first = int(sizes[0]) if len(sizes) else 0
    h0_shape = () if h0 is None else np.shape(h0)
    B = h0_shape[0] if h0_shape else first      # a malformed h0 is refused by its own check
    if first > B:
        raise ValueError(f"batch_sizes[0] = {first} is more sequences than the initial states' "
                         f"{B} rows")
    return Batch(sizes, B, padded=False)


def check_backward(cell, ctx, dy, state_grads):
    """Check a backward call's arguments against its context; None gradients mean zeros.
    Returns dy as its (N, P) rows and the state gradients."""
    if not isinstance(ctx, Context):
        hint = " (a forward with training=False returns none)" if ctx is None else ""
        raise TypeError(f"ctx must be the Context returned by {cell}_forward, got "
                        f"{describe(ctx)}{hint}")
    if ctx.cell != cell:
        raise ValueError(f"ctx comes from {ctx.cell}_forward, expected a context of {cell}_forward")
    _check_context(ctx)
    dtype = ctx.hs.dtype
    batch, P = ctx.batch, ctx.hs.shape[1]
    dy = _output_grad(dy, batch, P, dtype)
    dh_n = _state("dh_n", state_grads[0], dtype, batch.B, P, _h_size(ctx.w_hr))
    H = ctx.hidden_size
    return dy, (dh_n,) + tuple(_state("dc_n", dc, dtype, batch.B, H) for dc in state_grads[1:])


# The arrays a backward reads from the context of each cell (w_hr and w_peephole: when given).
CONTEXT_ARRAYS = {name: ("x", "hs", "w_hh") + cell.saved + cell.weights[4:]
                  for name, cell in CELLS.items()}


def _output_grad(dy, batch, P, dtype):
    """A backward's ``dy`` (the shape of the forward's y, or None for zeros) as its (N, P) rows."""
    if dy is None:
        return np.zeros((batch.N, P), dtype)
    y_shape = (batch.T, batch.B, P) if batch.padded else (batch.N, P)
    dy = as_float_array("dy", dy, dtype, ndim=len(y_shape))
    expect_shape("dy", dy, y_shape, "(the shape of y)")
    return dy.reshape(batch.N, P)


def _check_context(ctx):
    """Refuse a context whose arrays no longer fit together (one replaced after the forward):
    the native backward reads them as memory of the sizes its batch and weights give."""
    cell, batch, hs, w_ih, w_hr = ctx.cell, ctx.batch, ctx.hs, ctx.w_ih, ctx.w_hr
    if not isinstance(batch, Batch):
        raise TypeError(f"ctx.batch must be the Batch its forward made, got {describe(batch)}")
    if cell == "rnn" and ctx.nonlinearity not in NONLINEARITIES:
        raise ValueError(f"ctx.nonlinearity must be 'tanh' or 'relu', got {ctx.nonlinearity!r}")
    if not (isinstance(hs, np.ndarray) and hs.ndim == 2 and hs.dtype.type in DTYPES
            and isinstance(w_ih, np.ndarray) and w_ih.ndim == 2
            and w_ih.shape[0] % GATES[cell] == 0):
        raise ValueError(f"ctx.hs and ctx.w_ih must be the arrays its forward made, got "
                         f"{describe(hs)} and {describe(w_ih)}")
    (GH, I), P = w_ih.shape, hs.shape[1]
    H, N, B = GH // GATES[cell], batch.N, batch.B
    shapes = {"x": (N, I), "hs": (B + N, H if w_hr is None else P), "w_hh": (GH, P),
              "cs": (B + N, H), "gates": (N, GH), "hn": (N, H), "w_hr": (P, H),
              "w_peephole": (3 * H,), "normed": (N, 9 * H), "rstd": (N, 3), "g_ih": (GH,),
              "g_hh": (GH,), "g_c": (H,), "b_c": (H,)}
    names = CONTEXT_ARRAYS[cell]
    for name in ("w_hr", "w_peephole"):
        if getattr(ctx, name) is not None:
            if name not in CELLS[cell].options:
                raise ValueError(f"ctx.{name} must be None in a context of {cell}_forward, got "
                                 f"{describe(getattr(ctx, name))}")
            names += (name,)
    for name in names:
        a = getattr(ctx, name)
        if not (isinstance(a, np.ndarray) and a.shape == shapes[name] and a.dtype == hs.dtype
                and a.flags.c_contiguous):
            raise ValueError(f"ctx.{name} must be a C-contiguous {hs.dtype} array of shape "
                             f"{shapes[name]}, as its forward made it, got {describe(a)}")


def _state(name, s, dtype, B, n, size="hidden_size"):
    """A (B, n) state or state gradient (n: P for h, H for c); None means zeros."""
    if s is None:
        return np.zeros((B, n), dtype)
    s = as_float_array(name, s, dtype, ndim=2)
    expect_shape(name, s, (B, n), f"(batch, {size})")
    return s


def _h_size(w_hr):
    return "hidden_size" if w_hr is None else "proj_size"


# ---------------------------------------------------------------- stacks with feedback
#
# stack_forward / stack_backward run a whole unidirectional stack of L layers in one time loop,
# so that a layer's output of step t-1 can feed an earlier layer at step t (see
# fastlstm.reference.stack_forward). Their weights come as one dict per layer, with the keys
# below; w_fb (G * H, F_k) is the weight of the outputs fed back into layer k, F_k = P times the
# number of its sources.

STACK_WEIGHTS = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_peephole", "w_fb")


@dataclass(slots=True, repr=False, eq=False)
class StackContext:
    """What a stack forward keeps for its backward (treat as opaque).

    ``layers`` holds one :class:`Context` per layer, in the layout of the single-layer functions:
    layer k's ``x`` is its normal input (N, I_k), the rows of x for layer 0 and of layer k-1's
    output times ``masks[k]`` for the others; its hs, cs, gates and hn are as a single layer's.
    The outputs fed back into a layer are not stored again: they are rows of their sources' hs
    (``batch.prev_rows()``). ``w_fb`` holds each layer's feedback weight or None, ``feedback``
    the sorted (source, target) pairs, ``masks`` each layer's dropout mask or None.
    """

    cell: str
    batch: Batch
    feedback: tuple
    layers: list
    w_fb: list
    masks: list
    _: KW_ONLY
    nonlinearity: str = None

    @property
    def num_layers(self):
        return len(self.layers)

    def sources(self, target):
        """The layers feeding ``target``, in increasing order."""
        return [s for s, t in self.feedback if t == target]

    def __repr__(self):
        b = self.batch
        first = self.layers[0] if self.layers else None
        what = "" if first is None else f", H={first.hidden_size}, dtype={first.hs.dtype}"
        return (f"StackContext(cell={self.cell!r}, L={self.num_layers}, T={b.T}, B={b.B}"
                f"{what}, feedback={list(self.feedback)})")


def check_feedback(feedback, L, name="feedback"):
    """``feedback`` as a tuple of (source, target) int pairs sorted by (target, source), or a
    ValueError/TypeError naming ``name``: each pair ``0 <= target < source < L``, no duplicates.
    """
    expected = (f"a sequence of (source, target) pairs of layer indices with 0 <= target < "
                f"source < num_layers={L}, no pair twice")
    if isinstance(feedback, (str, bytes)) or not hasattr(feedback, "__iter__"):
        raise TypeError(f"{name} must be {expected}, got {describe(feedback)}")
    pairs = []
    for pair in feedback:
        if isinstance(pair, np.ndarray):
            pair = pair.tolist()
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                for v in pair):
            raise TypeError(f"{name} must be {expected}, got the item {pair!r}")
        source, target = int(pair[0]), int(pair[1])
        if not 0 <= target < source < L:
            raise ValueError(f"{name} must be {expected}, got the pair {(source, target)}"
                             + (" (a source must be a later layer than its target)"
                                if 0 <= source <= target < L else ""))
        if (source, target) in pairs:
            raise ValueError(f"{name} must be {expected}, got the pair {(source, target)} "
                             f"twice")
        pairs.append((source, target))
    return tuple(sorted(pairs, key=lambda p: (p[1], p[0])))


def check_stack_forward(cell, x, states, weights, feedback, nonlinearity="tanh",
                        batch_sizes=None, masks=None):
    """Check a stack_forward call's arguments; return them as contiguous arrays of one dtype.

    Returns ``(x, states, weights, feedback, batch, masks)``: x as its (N, I) rows; states a
    list of L tuples ``(h0,)`` or ``(h0, c0)`` of arrays, zeros where not given; weights a list
    of L dicts with every key of STACK_WEIGHTS (None where absent), and for "lnlstm" those of
    LN_WEIGHTS; feedback the sorted pairs; the :class:`Batch`; masks a list of L entries, None
    or an (N, I_k) array.
    """
    if cell not in GATES:
        raise ValueError(f"cell must be 'rnn', 'lstm', 'gru' or 'lnlstm', got {cell!r}")
    if cell == "rnn" and nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    if isinstance(weights, dict) or not isinstance(weights, (list, tuple)) or not weights:
        raise TypeError(f"weights must be a list of one dict per layer (at least one), got "
                        f"{describe(weights)}")
    L = len(weights)
    for k, w in enumerate(weights):
        if not hasattr(w, "keys"):
            raise TypeError(f"weights[{k}] must be a dict of layer {k}'s weights, got "
                            f"{describe(w)}")
        known = STACK_WEIGHTS + CELLS[cell].weights[4:]
        unknown = sorted(set(w.keys()) - set(known))
        if unknown:
            raise ValueError(f"weights[{k}] has unknown keys {unknown}; expected some of "
                             f"{list(known)}")
    feedback = check_feedback(feedback, L)
    if feedback and not CELLS[cell].feedback:
        raise ValueError(f"feedback must be empty for the {cell} cell, which runs in no stack "
                         f"with feedback, got {list(feedback)}")
    x = _input(x, batch_sizes)
    dtype, G = x.dtype, GATES[cell]

    # The options of layer 0 fix those of every layer: a layer object's stack shares them.
    first = weights[0]
    if first.get("w_ih") is None:
        raise TypeError("weights[0]['w_ih'] must be layer 0's input weight of shape "
                        "(gates * hidden_size, input_size), got None")
    w_ih0 = as_float_array("weights[0]['w_ih']", first.get("w_ih"), dtype, ndim=2)
    if w_ih0.shape[0] % G or w_ih0.shape[0] == 0:
        raise ValueError(f"weights[0]['w_ih'] must have shape ({G} * hidden_size, input_size) "
                         f"with hidden_size >= 1, got {w_ih0.shape}")
    H = w_ih0.shape[0] // G
    has = {kind: first.get(kind) is not None for kind in ("b_ih", "w_hr", "w_peephole")}
    P = H
    if has["w_hr"]:
        w_hr0 = as_float_array("weights[0]['w_hr']", first["w_hr"], dtype, ndim=2)
        P = w_hr0.shape[0]
        if P == 0:
            raise ValueError(f"weights[0]['w_hr'] must have shape (proj_size, hidden_size) "
                             f"with proj_size >= 1, got {w_hr0.shape}")
    size = _h_size(first.get("w_hr"))
    sources = {k: [s for s, t in feedback if t == k] for k in range(L)}
    checked = []
    for k, w in enumerate(weights):
        name = f"weights[{k}]"
        I_k = x.shape[-1] if k == 0 else P
        for kind, present in has.items():
            if (w.get(kind) is not None) != present:
                raise ValueError(f"{name}['{kind}'] must be {'given' if present else 'None'} "
                                 f"like weights[0]['{kind}']: every layer of a stack has the "
                                 f"same options")
        if (w.get("b_ih") is None) != (w.get("b_hh") is None):
            raise ValueError(f"{name}['b_ih'] and {name}['b_hh'] must both be given or both "
                             f"be None")
        for kind in ("w_hr", "w_peephole"):
            if kind not in CELLS[cell].options and w.get(kind) is not None:
                raise ValueError(f"{name}['{kind}'] must be None for the {cell} cell (an "
                                 f"option of the plain LSTM), got {describe(w[kind])}")
        shapes = {"w_ih": ((G * H, I_k), f"(gates * hidden_size={G * H}, "
                           + ("input_size from x)" if k == 0 else f"{size}={P}: layer {k - 1}'s"
                              " output)")),
                  "w_hh": ((G * H, P), f"(gates * hidden_size, {size})"),
                  "b_ih": ((G * H,), "(gates * hidden_size,)"),
                  "b_hh": ((G * H,), "(gates * hidden_size,)"),
                  "w_hr": ((P, H), f"(proj_size={P}, hidden_size={H})"),
                  "w_peephole": ((3 * H,), "(3 * hidden_size,), gates i, f, o"),
                  "w_fb": ((G * H, P * len(sources[k])),
                           f"(gates * hidden_size, {size} * {len(sources[k])}: the outputs of "
                           f"layers {sources[k]} fed back into layer {k})")}
        out = {}
        for kind in STACK_WEIGHTS:
            a = w.get(kind)
            if kind == "w_fb" and not sources[k]:
                if a is not None:
                    raise ValueError(f"{name}['w_fb'] must be None: no feedback pair targets "
                                     f"layer {k} (feedback={list(feedback)}), got "
                                     f"{describe(a)}")
                out[kind] = None
                continue
            if a is None:
                if kind in ("w_ih", "w_hh", "w_fb"):
                    what = ("a weight" if kind != "w_fb" else
                            f"the weight of the outputs of layers {sources[k]} fed back")
                    raise TypeError(f"{name}['{kind}'] must be {what} of shape "
                                    f"{shapes[kind][0]}, got None")
                out[kind] = None
                continue
            shape, meaning = shapes[kind]
            a = as_float_array(f"{name}['{kind}']", a, dtype, ndim=len(shape))
            expect_shape(f"{name}['{kind}']", a, shape, meaning)
            out[kind] = a
        if cell == "lnlstm":
            out.update(zip(LN_WEIGHTS, check_layer_norm(dtype, H, *(w.get(kind) for kind in
                                                                    LN_WEIGHTS),
                                                        name=f"{name}['{{}}']")))
        checked.append(out)

    if batch_sizes is None:
        T, B, I = x.shape
        batch = padded_batch(T, B)
        x = x.reshape(T * B, I)
    else:
        given = [s for entry in (states or ()) if isinstance(entry, (tuple, list))
                 for s in entry if s is not None]
        batch = _packed_batch(batch_sizes, x, given[0] if given else None)

    out_states = _stack_states("states", states, ("h0", "c0"), "initial states", cell, L,
                               dtype, batch.B, P, H, size)

    out_masks = []
    for k, m in enumerate(_per_layer("masks", masks, L, "None or an array")):
        if m is None:
            out_masks.append(None)
            continue
        if k == 0:
            raise ValueError(f"masks[0] must be None: dropout acts between layers, on the "
                             f"inputs of layers 1 and up, got {describe(m)}")
        m = as_float_array(f"masks[{k}]", m, dtype, ndim=2)
        expect_shape(f"masks[{k}]", m, (batch.N, P), f"(N={batch.N} rows, {size}): layer "
                     f"{k}'s normal input")
        out_masks.append(m)
    return x, out_states, checked, feedback, batch, out_masks


def _per_layer(name, entries, L, each):
    """``entries``: None (None for every layer) or a list of L, one per layer, each ``each``;
    else a TypeError naming ``name``."""
    if entries is None:
        return [None] * L
    if not isinstance(entries, (list, tuple)) or len(entries) != L:
        raise TypeError(f"{name} must be None or a list of {L} entries (one per layer), each "
                        f"{each}, got {describe(entries)}")
    return entries


def _stack_states(name, entries, names, what, cell, L, dtype, B, P, H, size):
    """``entries`` (None, or one tuple of a layer's states or None per layer) as a list of L
    tuples of (B, P) and, for the LSTM, (B, H) arrays, zeros where not given; ``names``: those
    of h's and c's entries, ``what`` they are, for the messages."""
    n_states = CELLS[cell].n_states
    pair = f"({', '.join(names[:n_states])}{',' * (n_states == 1)})"
    out = []
    for k, entry in enumerate(_per_layer(name, entries, L, f"{pair} or None")):
        if entry is None:
            entry = (None,) * n_states
        if not isinstance(entry, (tuple, list)) or len(entry) != n_states:
            raise TypeError(f"{name}[{k}] must be a tuple {pair} of layer {k}'s {what} or None, "
                            f"got {describe(entry)}")
        h = _state(f"{name}[{k}][0]", entry[0], dtype, B, P, size)
        out.append((h,) + tuple(_state(f"{name}[{k}][1]", c, dtype, B, H) for c in entry[1:]))
    return out


def check_stack_backward(ctx, dy, dfinals):
    """Check a stack_backward call's arguments against its context; None gradients mean zeros.
    Returns ``(dy, dfinals)``: dy as its (N, P) rows, dfinals a list of L tuples of arrays."""
    if not isinstance(ctx, StackContext):
        hint = " (a forward with training=False returns none)" if ctx is None else ""
        raise TypeError(f"ctx must be the StackContext returned by stack_forward, got "
                        f"{describe(ctx)}{hint}")
    if not (isinstance(ctx.layers, list) and ctx.layers
            and all(isinstance(c, Context) and c.cell == ctx.cell for c in ctx.layers)):
        raise ValueError(f"ctx.layers must be the list of {ctx.cell} Contexts its forward made, "
                         f"got {describe(ctx.layers)}")
    for c in ctx.layers:
        if c.batch is not ctx.batch:
            raise ValueError("ctx.layers must share the batch of ctx, as its forward made them")
        _check_context(c)
    L, batch, first = ctx.num_layers, ctx.batch, ctx.layers[0]
    dtype, P, H = first.hs.dtype, first.hs.shape[1], first.hidden_size
    if any(c.hs.dtype != dtype or c.hs.shape[1] != P or c.hidden_size != H
           or (k > 0 and c.w_ih.shape[1] != P) for k, c in enumerate(ctx.layers)):
        raise ValueError("ctx.layers must be the layers of one stack, as its forward made them")
    # The native backward reads these as memory of the sizes the layers give: a context
    # changed after its forward is refused here, not read out of bounds.
    if not isinstance(ctx.feedback, tuple) or check_feedback(ctx.feedback, L) != ctx.feedback:
        raise ValueError(f"ctx.feedback must be the sorted pairs its forward made, got "
                         f"{describe(ctx.feedback)}")
    for name, arrays in (("w_fb", ctx.w_fb), ("masks", ctx.masks)):
        if not isinstance(arrays, list) or len(arrays) != L:
            raise ValueError(f"ctx.{name} must be the list of {L} entries its forward made, got "
                             f"{describe(arrays)}")
    for k in range(L):
        n_sources = sum(1 for _, t in ctx.feedback if t == k)
        for name, a, shape in ((f"w_fb[{k}]", ctx.w_fb[k], (first.w_hh.shape[0], P * n_sources)
                                if n_sources else None),
                               (f"masks[{k}]", ctx.masks[k], (batch.N, P) if k else None)):
            if a is None and (name.startswith("masks") or shape is None):
                continue
            if not (shape is not None and isinstance(a, np.ndarray) and a.shape == shape
                    and a.dtype == dtype and a.flags.c_contiguous):
                raise ValueError(f"ctx.{name} must be "
                                 + ("None" if shape is None else f"a C-contiguous {dtype} array "
                                    f"of shape {shape}") + f", as its forward made it, got "
                                 f"{describe(a)}")
    dy = _output_grad(dy, batch, P, dtype)
    out = _stack_states("dfinals", dfinals, ("dh_n", "dc_n"), "final states' gradients",
                        ctx.cell, L, dtype, batch.B, P, H, _h_size(first.w_hr))
    return dy, out
