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
    x      (T, B, I)        input sequence
    hs     (T + 1, B, P)    hs[0] = h0, hs[t + 1] = h after step t; y = hs[1:]
    cs     (T + 1, B, H)    LSTM cell states, cs[0] = c0
    gates  (T, B, G * H)    LSTM and GRU: gate activations after their nonlinearities
    hn     (T, B, H)        GRU: W_hn h_{t-1} + b_hn, the part of n that the reset gate scales
    w_ih (G * H, I)   w_hh (G * H, P)   b_ih, b_hh (G * H,)   w_hr (P, H)   torch.nn's shapes
    w_peephole (3 * H,)     LSTM peephole weights of the gates i, f, o
"""

from dataclasses import KW_ONLY, dataclass

import numpy as np

DTYPES = (np.float32, np.float64)
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
NONLINEARITIES = ("tanh", "relu")


@dataclass(slots=True, repr=False, eq=False)
class Context:
    """What a forward pass keeps for its backward pass (treat as opaque).

    It holds references, not copies, to the input ``x`` and the weights, and the forward's
    outputs ``y``, ``h_n`` and ``c_n`` are views of its saved states: changing any of them in
    place between forward and backward makes the gradients wrong (torch would refuse such a
    backward). The layers copy what they hand out, so only direct callers need to care.
    Arrays in the notation above; None where the cell or its options have no such array.
    """

    cell: str                  # "rnn", "lstm" or "gru"
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

    @property
    def hidden_size(self):
        return self.w_hh.shape[0] // GATES[self.cell]

    def __repr__(self):
        T, B, P = self.hs.shape[0] - 1, self.hs.shape[1], self.hs.shape[2]
        extra = "" if self.w_hr is None else f", proj_size={P}"
        extra += "" if self.w_peephole is None else ", peephole=True"
        return (f"Context(cell={self.cell!r}, T={T}, B={B}, H={self.hidden_size}{extra}, "
                f"dtype={self.hs.dtype})")


def describe(a):
    """A short description of an array-like for error messages."""
    if isinstance(a, np.ndarray):
        return f"an array of shape {a.shape} and dtype {a.dtype}"
    if isinstance(a, (tuple, list)):
        return f"a {type(a).__name__} of {len(a)} items"
    return f"{type(a).__name__} {a!r}"[:120]


def as_float_array(name, a, dtype=None, ndim=None):
    """Return ``a`` as a C-contiguous float32/float64 array, or raise naming ``name``.

    ``dtype`` None accepts either float dtype (the first array of a call fixes the dtype of the
    rest). Lists and other array-likes are converted; integer or other dtypes are refused rather
    than silently cast, because a silently truncated or widened input is a bug the caller wants to
    hear about.
    """
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as exc:  # an object numpy cannot turn into an array
            raise TypeError(f"{name} must be an array, got {describe(a)}") from exc
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
    return np.ascontiguousarray(a)


def expect_shape(name, a, shape, meaning):
    if a.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} {meaning}, got {a.shape}")


def check_forward(cell, x, states, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh", w_hr=None,
                  w_peephole=None):
    """Check a forward call's arguments; return them as contiguous arrays of one dtype.

    ``states`` is ``(h0,)`` for the RNN and GRU and ``(h0, c0)`` for the LSTM; a None state means
    zeros. ``w_hr`` and ``w_peephole`` (LSTM only) may be None. Returns ``(x, states, weights)``
    with ``weights = (w_ih, w_hh, b_ih, b_hh, w_hr, w_peephole)``; biases stay None when both are.
    """
    if cell == "rnn" and nonlinearity not in NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
    x = as_float_array("x", x, ndim=3)
    dtype = x.dtype
    T, B, I = x.shape
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
    h0 = _state("h0", states[0], dtype, B, P, _h_size(w_hr))
    states = (h0,) + tuple(_state("c0", c0, dtype, B, H) for c0 in states[1:])
    return x, states, (w_ih, w_hh, b_ih, b_hh, w_hr, w_peephole)


def check_backward(cell, ctx, dy, state_grads):
    """Check a backward call's arguments against its context; None gradients mean zeros."""
    if not isinstance(ctx, Context):
        raise TypeError(f"ctx must be the Context returned by {cell}_forward, got {describe(ctx)}")
    if ctx.cell != cell:
        raise ValueError(f"ctx comes from {ctx.cell}_forward, expected a context of {cell}_forward")
    dtype = ctx.hs.dtype
    T, B, P = ctx.hs.shape[0] - 1, ctx.hs.shape[1], ctx.hs.shape[2]
    if dy is None:
        dy = np.zeros((T, B, P), dtype)
    else:
        dy = as_float_array("dy", dy, dtype, ndim=3)
        expect_shape("dy", dy, (T, B, P), "(the shape of y)")
    dh_n = _state("dh_n", state_grads[0], dtype, B, P, _h_size(ctx.w_hr))
    H = ctx.hidden_size
    return dy, (dh_n,) + tuple(_state("dc_n", dc, dtype, B, H) for dc in state_grads[1:])


def _state(name, s, dtype, B, n, size="hidden_size"):
    """A (B, n) state or state gradient (n: P for h, H for c); None means zeros."""
    if s is None:
        return np.zeros((B, n), dtype)
    s = as_float_array(name, s, dtype, ndim=2)
    expect_shape(name, s, (B, n), f"(batch, {size})")
    return s


def _h_size(w_hr):
    return "hidden_size" if w_hr is None else "proj_size"


def extra_grads(ctx, dw_hr, dw_peephole):
    """The LSTM's optional gradients, one for each optional weight its forward was given."""
    return (() if ctx.w_hr is None else (dw_hr,)) + \
        (() if ctx.w_peephole is None else (dw_peephole,))
