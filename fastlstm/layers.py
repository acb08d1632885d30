"""Layers with torch.nn's arguments, weight names, shapes, gate order and return values.

A layer owns its parameters and stacks the single-layer, single-direction functions of its
backend (``fastlstm.native`` or ``fastlstm.reference``) into layers and directions::

    rnn = fastlstm.RNN(10, 128, num_layers=2, bidirectional=True)
    y, h_n = rnn(x)                     # x: (T, B, 10); y: (T, B, 256); h_n: (4, B, 128)
    dx, dh0 = rnn.backward(dy)          # accumulates into rnn.grads

Every argument is checked before anything changes, so a call that raises leaves the layer as it
was: parameters, gradients, the saved forward pass and the dropout generator.
"""

import numbers
import warnings

import numpy as np

from . import native, reference
from ._driver import Driver, Layout, Packing, check_states
from ._functional import LN_WEIGHTS, NONLINEARITIES, as_array, check_feedback, describe
from ._module import (Module, check_allocatable, check_bool, check_choice, check_dtype, check_int,
                      check_seed)
from .cells import CELLS

BACKENDS = {"native": native, "reference": reference}
RECURRENT_INITS = ("uniform", "orthogonal")


def feedback_pairs(feedback, num_layers, bidirectional):
    """A layer's ``feedback`` argument as the sorted (source, target) pairs, or None for None.

    "top" is ``[(num_layers - 1, 0)]``; a list of pairs is checked: ``0 <= target < source <
    num_layers``, no pair twice. Feedback needs a unidirectional stack of at least two layers.
    Shared by the layers and fastlstm.torch's modules.
    """
    if feedback is None:
        return None
    expected = ("None, 'top' or a list of (source, target) layer pairs with 0 <= target < "
                f"source < num_layers={num_layers}")
    if bidirectional:
        raise ValueError(f"feedback needs a unidirectional stack (bidirectional=False): the "
                         f"reverse direction runs from the end of the sequence, so there is no "
                         f"earlier step to feed back from; got feedback={feedback!r} with "
                         f"bidirectional=True")
    if isinstance(feedback, str):
        if feedback != "top":
            raise ValueError(f"feedback must be {expected}, got {feedback!r}")
        if num_layers < 2:
            raise ValueError(f"feedback='top' feeds the top layer back into layer 0, so it needs "
                             f"num_layers >= 2, got num_layers={num_layers}")
        return ((num_layers - 1, 0),)
    try:
        pairs = check_feedback(feedback, num_layers)
    except TypeError as exc:
        raise ValueError(f"feedback must be {expected}, got {feedback!r}") from exc
    if not pairs:
        raise ValueError(f"feedback must be {expected}, with at least one pair (None for no "
                         f"feedback), got {feedback!r}")
    return pairs




def check_layer_norm_options(layer_norm, proj_size, peephole, feedback):
    """An LSTM's ``layer_norm`` as a bool, refusing the options it does not combine with.
    Shared by the layers and fastlstm.torch's LSTM."""
    layer_norm = check_bool("layer_norm", layer_norm)
    if layer_norm:
        for name, value in (("proj_size", proj_size), ("peephole", peephole),
                            ("feedback", feedback)):
            if value:
                raise ValueError(f"layer_norm=True does not combine with {name} (the "
                                 f"layer-normalised LSTM has no projection, peepholes or "
                                 f"feedback), got {name}={value!r}")
    return layer_norm


def _orthogonal(rng, rows, cols):
    """A random (rows, cols) matrix with orthonormal columns (rows >= cols) or rows, drawn from
    the uniform (Haar) distribution: QR of a Gaussian matrix, with R's diagonal made positive."""
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
    q *= np.where(np.diag(r) < 0, -1, 1)
    return q if rows >= cols else q.T


class _Recurrent(Module):
    """What every layer shares; a subclass names its cell and runs one layer-direction.

    Feedback from later layers (``feedback=``, unidirectional stacks only): each pair
    ``(source, target)``, ``source > target``, concatenates layer ``source``'s output of step
    t-1 after layer ``target``'s normal input at step t (several sources in increasing order);
    ``"top"`` means ``[(num_layers - 1, 0)]``, None (the default) no feedback. The first step
    feeds the sources' initial states (zeros unless h0 is given). Each target layer k has one
    more parameter, ``weight_fb_l{k}`` (gates * hidden_size, the sources' output sizes summed),
    initialised like weight_hh. The stack then runs in one time loop, steps outermost (the
    backend's ``stack_forward``). Dropout between layers acts on the normal inputs only: the
    fed-back outputs are not dropped, since feedback carries the state of its source layer as
    it is, the very state that layer carries on to its own next step.
    """

    cell = None        # the backend functions' cell, a name in fastlstm.cells.CELLS
    proj_size = 0      # the LSTM's projection; 0 means none
    peephole = False   # the LSTM's peepholes

    def __init__(self, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                 bidirectional, dtype, backend, seed, recurrent_init, feedback=None):
        self.input_size = check_int("input_size", input_size, 1)
        self.hidden_size = check_int("hidden_size", hidden_size, 1)
        self.num_layers = check_int("num_layers", num_layers, 1)
        self.bias = check_bool("bias", bias)
        self.batch_first = check_bool("batch_first", batch_first)
        self.bidirectional = check_bool("bidirectional", bidirectional)
        if (isinstance(dropout, bool) or not isinstance(dropout, numbers.Real)
                or not 0 <= dropout <= 1):
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        self.dropout = float(dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn("dropout acts between stacked layers only, so it has no effect with "
                          f"num_layers=1 (got dropout={self.dropout})", stacklevel=3)
        self.dtype = check_dtype(dtype)
        self.backend = check_choice("backend", backend, tuple(BACKENDS))
        self.seed = check_seed(seed)
        self.recurrent_init = check_choice("recurrent_init", recurrent_init, RECURRENT_INITS)
        self._feedback = feedback_pairs(feedback, self.num_layers, self.bidirectional)
        # as given, for repr: "top" or the pairs as a list
        self.feedback = None if feedback is None else \
            "top" if isinstance(feedback, str) else [tuple(p) for p in self._feedback]
        options = (self.cell, self.input_size, self.hidden_size, self.num_layers,
                   self.bidirectional, self.bias, self.proj_size, self.peephole, self._feedback)
        check_allocatable(f"{type(self).__name__}(input_size={self.input_size}, hidden_size="
                          f"{self.hidden_size}, num_layers={self.num_layers})'s parameters and "
                          f"their gradients", 2 * Layout.parameter_count(*options), self.dtype)
        self._layout = Layout(*options)
        # Two independent streams from one seed: the initial weights do not depend on whether
        # dropout draws, and the dropout masks repeat from the same seed.
        init_seq, dropout_seq = np.random.SeedSequence(seed).spawn(2)
        self._dropout_rng = np.random.default_rng(dropout_seq)
        Module.__init__(self, self._init_params(np.random.default_rng(init_seq)))
        self._saved = None    # what the last training forward kept for backward

    # ------------------------------------------------------------------ parameters

    @property
    def _cell(self):
        return CELLS[self.cell]

    @property
    def n_states(self):
        """States carried between steps: h, and the LSTMs' c."""
        return self._cell.n_states

    @property
    def gates(self):
        """Pre-activation blocks per hidden unit."""
        return self._cell.gates

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    @property
    def output_size(self):
        """The size of h and of each direction's output: proj_size, or hidden_size without it."""
        return self.proj_size or self.hidden_size

    def _state_sizes(self):
        """The last dimension of each state: h, then the LSTM's c."""
        return self._layout.state_sizes

    def _init_params(self, rng):
        """torch's default, every parameter uniform in [-1/sqrt(H), 1/sqrt(H)] (the peepholes
        too, like the biases; the layer norms' gains 1 and bias 0, drawing nothing); then the
        options: orthogonal recurrent weights (each gate's (H, P) block of weight_hh), and the
        LSTM's unit forget bias.

        The feedback weights are drawn last, like weight_hh (uniform, or each gate's block
        orthogonal), so that the other parameters are those of the same layer without feedback
        and the same seed."""
        bound = 1 / np.sqrt(self.hidden_size)
        params = {}
        for entry in self._layout:
            for kind, (name, shape) in entry.items():
                if kind in LN_WEIGHTS:       # the layer norms start as the identity
                    params[name] = np.full(shape, kind != "b_c", self.dtype)
                elif kind != "w_fb":
                    params[name] = rng.uniform(-bound, bound, shape).astype(self.dtype)
        H, P = self.hidden_size, self.output_size
        if self.recurrent_init == "orthogonal":
            for entry in self._layout:
                w_hh = params[entry["w_hh"][0]]
                for g in range(self.gates):
                    w_hh[g * H:(g + 1) * H] = _orthogonal(rng, H, P)
        self._init_biases(params)
        for entry in self._layout:
            if "w_fb" in entry:
                name, shape = entry["w_fb"]
                w_fb = params[name] = rng.uniform(-bound, bound, shape).astype(self.dtype)
                if self.recurrent_init == "orthogonal":
                    for g in range(self.gates):
                        w_fb[g * H:(g + 1) * H] = _orthogonal(rng, H, shape[1])
        return params

    def _init_biases(self, params):
        """A subclass's change to the initial biases (the LSTM's unit_forget_bias)."""

    def _weights(self, idx):
        """The parameters of layer-direction ``idx`` as ``{kind: array}``."""
        return {kind: self._params[name] for kind, (name, _) in self._layout[idx].items()}

    # ------------------------------------------------------------------ checks

    def _check_dtype(self, name, a):
        if a.dtype != self.dtype:
            raise TypeError(f"{name} must have dtype {self.dtype} (the layer's dtype), got "
                            f"{a.dtype}; convert it with .astype(np.{self.dtype})")

    def _check_input(self, x):
        """x as a C-contiguous (T, B, input_size) array of the layer's dtype."""
        x = as_array("x", x)
        self._check_dtype("x", x)
        layout = "(batch, seq_len, input_size)" if self.batch_first else \
            "(seq_len, batch, input_size)"
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(f"x must be 3-D {layout} with input_size={self.input_size}, got "
                             f"shape {x.shape}")
        if self.batch_first:
            x = x.transpose(1, 0, 2)
        # A copy in training mode: backward reads x, and the caller may change theirs in place.
        return np.array(x, order="C", copy=True) if self.training else np.ascontiguousarray(x)

    def _check_states(self, name, states, B):
        """``states`` (a tuple of n_states arrays or None) as arrays (L * D, B, n) or Nones."""
        def convert(n, s):
            s = as_array(n, s)
            self._check_dtype(n, s)
            return np.ascontiguousarray(s)
        pair = {"hx": "(h0, c0)", "dhx": "(dh_n, dc_n)"}.get(name, "(h, c)") + " of two arrays"
        return check_states(name, states, self._layout, B, convert, pair)

    @staticmethod
    def _check_lengths(lengths, T, B):
        """``lengths`` as B int64 values in [0, T], or None."""
        if lengths is None:
            return None
        if hasattr(lengths, "detach"):   # a torch tensor: as NumPy; lists stay lists (below)
            lengths = as_array("lengths", lengths)
        shape_error = f"lengths must be 1-D with one length per sequence, shape ({B},), got "
        range_error = f"lengths must lie in [0, {T}] (x has {T} steps), got values from "
        if isinstance(lengths, (list, tuple)):
            # Item by item: NumPy would turn integers too large for int64 into floats.
            if len(lengths) != B:
                raise ValueError(shape_error + f"{len(lengths)} values")
            if not all(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
                       for v in lengths):
                raise TypeError(f"lengths must be integers, got {describe(lengths)}: "
                                f"{list(lengths)!r:.80}")
            if lengths and (min(lengths) < 0 or max(lengths) > T):
                raise ValueError(range_error + f"{min(lengths)} to {max(lengths)}")
            return np.array(lengths, np.int64)
        a = as_array("lengths", lengths)
        if a.shape != (B,):
            raise ValueError(shape_error + f"shape {a.shape}")
        if a.dtype.kind not in "iu" and a.size:
            raise TypeError(f"lengths must be integers, got dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() > T):   # in a's own dtype: no wrap-around
            raise ValueError(range_error + f"{a.min()} to {a.max()}")
        return a.astype(np.int64)

    # ------------------------------------------------------------------ forward and backward

    @property
    def _driver(self):
        return Driver(self._layout, BACKENDS[self.backend], getattr(self, "nonlinearity", "tanh"))

    def _forward(self, x, states, lengths):
        x = self._check_input(x)
        T, B, _ = x.shape
        packing = Packing(self._check_lengths(lengths, T, B), T, B)
        states = self._check_states("hx" if self.n_states > 1 else "h0", states, B)
        L, D, P = self.num_layers, self.num_directions, self.output_size
        sizes = self._state_sizes()
        # None for zeros, but in a packed batch, whose backend call learns B from its states (a
        # sequence of length 0 has no rows)
        init = [tuple(s[idx][packing.order] if s is not None
                      else None if packing.full else np.zeros((B, n), self.dtype)
                      for s, n in zip(states, sizes)) for idx in range(L * D)]
        # The dropout masks of the inputs of layers 1 and up. With feedback, they act on the
        # normal inputs only: feedback carries the state of its source as it is.
        use_dropout = self.training and self.dropout > 0 and L > 1
        masks = [None] + [packing.pack(self._dropout_mask((T, B, D * P))) if use_dropout
                          else None for _ in range(1, L)]
        y, layer_finals, self._saved = self._driver.forward(
            packing, packing.pack(x), init, [self._weights(idx) for idx in range(L * D)], masks,
            self.training)
        finals = [np.empty((L * D, B, n), self.dtype) for n in sizes]
        for idx, final in enumerate(layer_finals):
            for f, v in zip(finals, final):
                f[idx][packing.order] = v
        y = packing.unpack(y)
        y = y.transpose(1, 0, 2) if self.batch_first else y
        # Copies, so that the caller's changes to y never reach what backward reads.
        y = np.array(y, order="C", copy=True) if self.training else np.ascontiguousarray(y)
        return y, finals

    def _cell_forward(self, x, init, w, batch_sizes, training):
        """One layer-direction's forward on the backend: y, the final states, the context."""
        return self._cell.call_forward(BACKENDS[self.backend], x, init, w, batch_sizes,
                                       training, getattr(self, "nonlinearity", "tanh"))

    def _cell_backward(self, ctx, dy, dfinal):
        """Its backward: dx, the initial states' gradients, the weights' gradients by kind."""
        grads = self._cell.call_backward(BACKENDS[self.backend], ctx, dy, dfinal)
        return (grads.pop("x"), tuple(grads.pop(s) for s in self._cell.states), grads)

    def _dropout_mask(self, shape):
        keep = 1 - self.dropout
        if keep == 0:
            return np.zeros(shape, self.dtype)
        return (self._dropout_rng.random(shape) < keep).astype(self.dtype) / self.dtype.type(keep)

    def _backward(self, dy, dstates):
        if self._saved is None:
            raise RuntimeError("backward needs the last forward to have run in training mode "
                               "(layer.train()); there is no saved forward pass")
        packing = self._saved[2]
        T, B = packing.T, packing.B
        L, D, P = self.num_layers, self.num_directions, self.output_size
        y_shape = (B, T, D * P) if self.batch_first else (T, B, D * P)
        dy = np.zeros(y_shape, self.dtype) if dy is None else as_array("dy", dy)
        self._check_dtype("dy", dy)
        if dy.shape != y_shape:
            raise ValueError(f"dy must have the shape of y, {y_shape}, got {dy.shape}")
        dstates = self._check_states("dhx" if self.n_states > 1 else "dh_n", dstates, B)
        if self.batch_first:
            dy = dy.transpose(1, 0, 2)
        dfinals = [tuple(None if s is None else s[idx][packing.order] for s in dstates)
                   for idx in range(L * D)]
        d_in, dinits, grads = self._driver.backward(self._saved, packing.pack(dy), dfinals)
        dinit = [np.empty((L * D, B, n), self.dtype) for n in self._state_sizes()]
        for idx, (dinit_idx, grads_idx) in enumerate(zip(dinits, grads)):
            for a, v in zip(dinit, dinit_idx):
                a[idx][packing.order] = v
            for kind, g_w in grads_idx.items():
                self.grads[self._layout[idx][kind][0]] += g_w
        dx = packing.unpack(d_in)
        dx = dx.transpose(1, 0, 2) if self.batch_first else dx
        return np.ascontiguousarray(dx), dinit

    def stream(self, batch_size):
        """A :class:`fastlstm.stream.Stream` stepping this layer one time step per call, for
        inference with low latency (unidirectional layers only; it copies the weights now)."""
        from .stream import Stream
        return Stream(self, batch_size)

    def __repr__(self):
        args = [str(self.input_size), str(self.hidden_size)]
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0,
                    "bidirectional": False, **self._extra_defaults}
        args += [f"{k}={getattr(self, k)!r}" for k, v in defaults.items() if getattr(self, k) != v]
        if self.dtype != np.float32:
            args.append(f"dtype={self.dtype}")
        if self.backend != "native":
            args.append(f"backend={self.backend!r}")
        if self.recurrent_init != "uniform":
            args.append(f"recurrent_init={self.recurrent_init!r}")
        if self.feedback is not None:
            args.append(f"feedback={self.feedback!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    _extra_defaults = {}  # a subclass's own arguments and their defaults, for __repr__


class _OneState(_Recurrent):
    """The forward and backward of the cells with one state, h (RNN and GRU)."""

    def forward(self, x, h0=None, lengths=None):
        """Run the layer. x: (T, B, input_size), or (B, T, input_size) with batch_first; h0:
        (num_layers * num_directions, B, hidden_size) or None for zeros.

        Returns ``y, h_n``: y (T, B, num_directions * hidden_size) (batch first if asked),
        h_n like h0.
        """
        y, (h_n,) = self._forward(x, h0, lengths)
        return y, h_n

    def backward(self, dy=None, dh_n=None):
        """Backpropagate ``dy`` (shape of y) and ``dh_n`` (shape of h_n; None means zeros) through
        the last training forward. Adds the parameter gradients into ``grads``; returns
        ``dx, dh0``."""
        dx, (dh0,) = self._backward(dy, dh_n)
        return dx, dh0


class RNN(_OneState):
    """Elman RNN: ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or relu).

    Arguments, parameter names and shapes, and return values as ``torch.nn.RNN``; in addition
    ``dtype`` (np.float32 or np.float64), ``backend`` ("native" or "reference"), ``seed``
    (initial weights and dropout masks), ``recurrent_init`` ("uniform", torch's default, or
    "orthogonal" weight_hh) and ``feedback`` (see :class:`_Recurrent`). See
    ``fastlstm.reference`` for the equations.
    """

    cell = "rnn"
    _extra_defaults = {"nonlinearity": "tanh"}

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, *, dtype=np.float32,
                 backend="native", seed=None, recurrent_init="uniform", feedback=None):
        self.nonlinearity = check_choice("nonlinearity", nonlinearity, NONLINEARITIES)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, backend, seed, recurrent_init, feedback)

class GRU(_OneState):
    """GRU with torch.nn.GRU's equations and gate order r, z, n::

        r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)     z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
        n = tanh(W_in x + b_in + r * (W_hn h + b_hn))  h' = (1 - z) * n + z * h

    Arguments, parameter names and shapes, and return values as ``torch.nn.GRU``; in addition
    ``dtype`` (np.float32 or np.float64), ``backend`` ("native" or "reference"), ``seed``
    (initial weights and dropout masks), ``recurrent_init`` ("uniform", torch's default, or
    "orthogonal": each gate's block of weight_hh orthogonal) and ``feedback`` (see
    :class:`_Recurrent`; the fed-back outputs are inputs like x, outside ``r``'s product). See
    ``fastlstm.reference``.
    """

    cell = "gru"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, *, dtype=np.float32, backend="native",
                 seed=None, recurrent_init="uniform", feedback=None):
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, backend, seed, recurrent_init, feedback)

class LSTM(_Recurrent):
    """LSTM with torch.nn.LSTM's gate order i, f, g, o (``c_t = f c_{t-1} + i g``,
    ``h_t = o tanh(c_t)``, or ``h_t = W_hr (o tanh(c_t))`` with ``proj_size > 0``).

    Arguments, parameter names and shapes, and return values as ``torch.nn.LSTM``; in addition:

    - ``peephole``: connections from the cell to the gates (Gers & Schmidhuber 2000),
      ``i = sigmoid(... + p_i c_{t-1})``, ``f = sigmoid(... + p_f c_{t-1})``,
      ``o = sigmoid(... + p_o c_t)``, with parameters ``weight_peephole_l{k}`` (and
      ``_reverse``) of shape (3 * hidden_size,), ordered i, f, o, initialised like the biases.
    - ``unit_forget_bias``: Keras's initialisation, every bias zero except the forget gate's,
      whose total is 1 (bias_ih's forget block 1, bias_hh's 0).
    - ``recurrent_init``: "uniform" (torch's default) or "orthogonal" (each gate's block of
      weight_hh orthogonal, like Keras's recurrent initializer).
    - ``dtype`` (np.float32 or np.float64), ``backend`` ("native" or "reference") and ``seed``
      (initial weights and dropout masks).
    - ``feedback``: outputs of later layers fed back into earlier ones (see
      :class:`_Recurrent`); with proj_size, a fed-back output has proj_size entries.
    - ``layer_norm``: the layer-normalised LSTM (Ba, Kiros & Hinton 2016, as haste's
      LayerNormLSTM): ``a = LN(W_ih x) g_ih + LN(W_hh h) g_hh + b_ih + b_hh`` and
      ``h = o tanh(LN(c) g_c + b_c)``, each LN over a row's 4H (or H) entries, eps 1e-5; the
      cell carries c un-normalised. Parameters ``layernorm_ih_weight_l{k}`` and
      ``layernorm_hh_weight_l{k}`` (4 * hidden_size, ones), ``layernorm_c_weight_l{k}``
      (hidden_size, ones) and ``layernorm_c_bias_l{k}`` (hidden_size, zeros), with ``_reverse``.
      It has no projection, peepholes or feedback (each refused).

    See ``fastlstm.reference`` for the equations.
    """

    cell = "lstm"
    _extra_defaults = {"proj_size": 0, "peephole": False, "unit_forget_bias": False,
                       "layer_norm": False}

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, *, peephole=False,
                 unit_forget_bias=False, layer_norm=False, dtype=np.float32, backend="native",
                 seed=None, recurrent_init="uniform", feedback=None):
        self.proj_size = check_int("proj_size", proj_size, 0)
        hidden = check_int("hidden_size", hidden_size, 1)
        if self.proj_size >= hidden:
            raise ValueError(f"proj_size must be smaller than hidden_size={hidden}, got "
                             f"proj_size={self.proj_size}")
        self.peephole = check_bool("peephole", peephole)
        self.unit_forget_bias = check_bool("unit_forget_bias", unit_forget_bias)
        if self.unit_forget_bias and not bias:
            raise ValueError("unit_forget_bias=True sets the forget gate's bias, so it needs "
                             "bias=True")
        self.layer_norm = check_layer_norm_options(layer_norm, self.proj_size, self.peephole,
                                                   feedback)
        self.cell = "lnlstm" if self.layer_norm else "lstm"
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, backend, seed, recurrent_init, feedback)

    def _init_biases(self, params):
        if not self.unit_forget_bias:
            return
        H = self.hidden_size
        for entry in self._layout:
            b_ih, b_hh = params[entry["b_ih"][0]], params[entry["b_hh"][0]]
            b_ih.fill(0)
            b_hh.fill(0)
            b_ih[H:2 * H] = 1                  # gate order i, f, g, o: the forget gate's block

    def forward(self, x, hx=None, lengths=None):
        """Run the layer. x: (T, B, input_size), or (B, T, input_size) with batch_first; hx:
        ``(h0, c0)`` or None for zeros, h0 (num_layers * num_directions, B, P) with P =
        proj_size or hidden_size, c0 (num_layers * num_directions, B, hidden_size).

        Returns ``y, (h_n, c_n)``: y (T, B, num_directions * P) (batch first if asked), h_n and
        c_n like h0 and c0.
        """
        y, (h_n, c_n) = self._forward(x, hx, lengths)
        return y, (h_n, c_n)

    def backward(self, dy=None, dhx=None):
        """Backpropagate ``dy`` (shape of y) and ``dhx = (dh_n, dc_n)`` (None means zeros) through
        the last training forward. Adds the parameter gradients into ``grads``; returns
        ``dx, (dh0, dc0)``."""
        dx, (dh0, dc0) = self._backward(dy, dhx)
        return dx, (dh0, dc0)
