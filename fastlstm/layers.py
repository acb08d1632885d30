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
from ._functional import DTYPES, NONLINEARITIES, describe

BACKENDS = {"native": native, "reference": reference}


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _to_numpy(value):
    """Arrays as they are; torch tensors (anything with .detach().cpu().numpy()) as NumPy."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return value


class _Recurrent:
    """What RNN and LSTM share; a subclass names its cell and runs one layer-direction."""

    n_states = 1       # states carried between steps: h for the RNN, h and c for the LSTM
    gates = 1          # pre-activation blocks per hidden unit

    def __init__(self, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                 bidirectional, dtype, backend, seed):
        self.input_size = _check_int("input_size", input_size, 1)
        self.hidden_size = _check_int("hidden_size", hidden_size, 1)
        self.num_layers = _check_int("num_layers", num_layers, 1)
        self.bias = _check_bool("bias", bias)
        self.batch_first = _check_bool("batch_first", batch_first)
        self.bidirectional = _check_bool("bidirectional", bidirectional)
        if (isinstance(dropout, bool) or not isinstance(dropout, numbers.Real)
                or not 0 <= dropout <= 1):
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        self.dropout = float(dropout)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn("dropout acts between stacked layers only, so it has no effect with "
                          f"num_layers=1 (got dropout={self.dropout})", stacklevel=3)
        try:
            if dtype is None:  # np.dtype(None) is float64; torch's None means its default
                raise TypeError
            self.dtype = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"dtype must be np.float32 or np.float64, got {dtype!r}") from exc
        if self.dtype not in DTYPES:
            raise TypeError(f"dtype must be np.float32 or np.float64, got {self.dtype}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be 'native' or 'reference', got {backend!r}")
        self.backend = backend
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or seed < 0):
            raise ValueError(f"seed must be None or a non-negative integer, got {seed!r}")
        self.seed = seed
        # Two independent streams from one seed: the initial weights do not depend on whether
        # dropout draws, and the dropout masks repeat from the same seed.
        init_seq, dropout_seq = np.random.SeedSequence(seed).spawn(2)
        self._dropout_rng = np.random.default_rng(dropout_seq)
        self._params = self._init_params(np.random.default_rng(init_seq))
        self.grads = {name: np.zeros_like(p) for name, p in self._params.items()}
        self.training = True
        self._saved = None    # what the last training forward kept for backward

    # ------------------------------------------------------------------ parameters

    @property
    def num_directions(self):
        return 2 if self.bidirectional else 1

    def _param_shapes(self):
        """Names and shapes in torch's order: per layer, per direction, w_ih, w_hh, b_ih, b_hh."""
        H, GH = self.hidden_size, self.gates * self.hidden_size
        shapes = {}
        for k in range(self.num_layers):
            layer_in = self.input_size if k == 0 else self.num_directions * H
            for suffix in ("", "_reverse")[:self.num_directions]:
                shapes[f"weight_ih_l{k}{suffix}"] = (GH, layer_in)
                shapes[f"weight_hh_l{k}{suffix}"] = (GH, H)
                if self.bias:
                    shapes[f"bias_ih_l{k}{suffix}"] = (GH,)
                    shapes[f"bias_hh_l{k}{suffix}"] = (GH,)
        return shapes

    def _init_params(self, rng):
        """torch's default: every parameter uniform in [-1/sqrt(H), 1/sqrt(H)]."""
        bound = 1 / np.sqrt(self.hidden_size)
        return {name: rng.uniform(-bound, bound, shape).astype(self.dtype)
                for name, shape in self._param_shapes().items()}

    def _weights(self, k, d):
        suffix = "_reverse" if d else ""
        p = self._params
        if self.bias:
            return (p[f"weight_ih_l{k}{suffix}"], p[f"weight_hh_l{k}{suffix}"],
                    p[f"bias_ih_l{k}{suffix}"], p[f"bias_hh_l{k}{suffix}"])
        return p[f"weight_ih_l{k}{suffix}"], p[f"weight_hh_l{k}{suffix}"], None, None

    def named_parameters(self):
        """Yield ``(name, array)`` for every parameter: the live arrays, updated in place."""
        yield from self._params.items()

    def parameters(self):
        """The live parameter arrays, in the order of :meth:`named_parameters`."""
        return list(self._params.values())

    def state_dict(self):
        """A dict of copies of the parameters, with torch.nn's names."""
        return {name: p.copy() for name, p in self._params.items()}

    def load_state_dict(self, state_dict):
        """Copy parameters in from ``state_dict``: NumPy arrays or torch tensors, torch's names.

        The keys must be exactly this layer's; every value must have the parameter's shape and a
        floating dtype (cast to the layer's dtype). Nothing changes unless every entry is right.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping of names to arrays, got "
                            f"{describe(state_dict)}")
        expected = self._params.keys()
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in expected]
        if missing or unexpected:
            raise ValueError(f"state_dict does not match this layer: missing keys {missing}, "
                             f"unexpected keys {unexpected}")
        loaded = {}
        for name, current in self._params.items():
            value = _to_numpy(state_dict[name])
            try:
                value = np.asarray(value)
            except Exception as exc:
                raise TypeError(f"state_dict[{name!r}] must be an array, got "
                                f"{describe(value)}") from exc
            if value.dtype.kind != "f":
                raise TypeError(f"state_dict[{name!r}] must have a floating dtype, got "
                                f"{value.dtype}")
            if value.shape != current.shape:
                raise ValueError(f"state_dict[{name!r}] must have shape {current.shape}, got "
                                 f"{value.shape}")
            loaded[name] = value
        for name, value in loaded.items():
            self._params[name][...] = value

    def zero_grad(self):
        """Set every accumulated gradient to zero."""
        for g in self.grads.values():
            g.fill(0)

    def train(self, mode=True):
        """Training mode (the default): dropout acts, and forward keeps what backward needs."""
        self.training = _check_bool("mode", mode)
        return self

    def eval(self):
        """Inference mode: no dropout, nothing kept for backward."""
        return self.train(False)

    # ------------------------------------------------------------------ checks

    def _check_input(self, x):
        """x as a C-contiguous (T, B, input_size) array of the layer's dtype."""
        if not isinstance(x, np.ndarray):
            x = np.asarray(_to_numpy(x))
        if x.dtype != self.dtype:
            raise TypeError(f"x must have dtype {self.dtype} (the layer's dtype), got {x.dtype}; "
                            f"convert it with x.astype(np.{self.dtype})")
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
        """``states`` (a tuple of n_states arrays or None) as arrays (L * D, B, H) or Nones."""
        if states is None:
            return (None,) * self.n_states
        if self.n_states > 1:
            if not isinstance(states, (tuple, list)) or len(states) != self.n_states:
                pair = "(h0, c0)" if name == "hx" else "(dh_n, dc_n)"
                raise TypeError(f"{name} must be a tuple {pair} of two arrays or None, got "
                                f"{describe(states)}")
            names = [f"{name}[{i}]" for i in range(self.n_states)]
        else:
            states, names = (states,), [name]
        shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        checked = []
        for n, s in zip(names, states):
            if s is None:
                raise TypeError(f"{n} must be an array of shape {shape}, got None")
            s = np.asarray(_to_numpy(s))
            if s.dtype != self.dtype:
                raise TypeError(f"{n} must have dtype {self.dtype} (the layer's dtype), got "
                                f"{s.dtype}")
            if s.shape != shape:
                raise ValueError(f"{n} must have shape {shape} (num_layers * num_directions, "
                                 f"batch, hidden_size), got {s.shape}")
            checked.append(np.ascontiguousarray(s))
        return tuple(checked)

    # ------------------------------------------------------------------ forward and backward

    def _forward(self, x, states, lengths):
        if lengths is not None:
            raise NotImplementedError("lengths (variable-length batches) is not supported yet")
        x = self._check_input(x)
        T, B, _ = x.shape
        states = self._check_states("hx" if self.n_states > 1 else "h0", states, B)
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        use_dropout = self.training and self.dropout > 0 and L > 1
        finals = [np.empty((L * D, B, H), self.dtype) for _ in range(self.n_states)]
        ctxs, masks = [], []
        layer_in = x
        for k in range(L):
            outs = []
            for d in range(D):
                idx = k * D + d
                inp = layer_in[::-1] if d else layer_in     # the reverse direction reads time backwards
                init = tuple(None if s is None else s[idx] for s in states)
                y, final, ctx = self._cell_forward(inp, init, self._weights(k, d))
                outs.append(y[::-1] if d else y)
                for f, v in zip(finals, final):
                    f[idx] = v
                ctxs.append(ctx)
            layer_out = outs[0] if D == 1 else np.concatenate(outs, axis=2)
            if use_dropout and k < L - 1:
                masks.append(self._dropout_mask(layer_out.shape))
                layer_out = layer_out * masks[-1]
            layer_in = layer_out
        y = layer_in.transpose(1, 0, 2) if self.batch_first else layer_in
        # Copies, so that the caller's changes to y never reach what backward reads.
        y = np.array(y, order="C", copy=True) if self.training else np.ascontiguousarray(y)
        self._saved = (ctxs, masks, T, B) if self.training else None
        return y, finals

    def _dropout_mask(self, shape):
        keep = 1 - self.dropout
        if keep == 0:
            return np.zeros(shape, self.dtype)
        return (self._dropout_rng.random(shape) < keep).astype(self.dtype) / self.dtype.type(keep)

    def _backward(self, dy, dstates):
        if self._saved is None:
            raise RuntimeError("backward needs the last forward to have run in training mode "
                               "(layer.train()); there is no saved forward pass")
        ctxs, masks, T, B = self._saved
        L, D, H = self.num_layers, self.num_directions, self.hidden_size
        y_shape = (B, T, D * H) if self.batch_first else (T, B, D * H)
        dy = np.zeros(y_shape, self.dtype) if dy is None else np.asarray(_to_numpy(dy))
        if dy.dtype != self.dtype:
            raise TypeError(f"dy must have dtype {self.dtype} (the layer's dtype), got {dy.dtype}")
        if dy.shape != y_shape:
            raise ValueError(f"dy must have the shape of y, {y_shape}, got {dy.shape}")
        dstates = self._check_states("dhx" if self.n_states > 1 else "dh_n", dstates, B)
        if self.batch_first:
            dy = dy.transpose(1, 0, 2)
        new_grads = {}
        dinit = [np.empty((L * D, B, H), self.dtype) for _ in range(self.n_states)]
        d_out = dy
        for k in reversed(range(L)):
            if masks and k < L - 1:
                d_out = d_out * masks[k]
            d_in = None
            for d in range(D):
                idx = k * D + d
                g = d_out[:, :, d * H:(d + 1) * H]
                g = g[::-1] if d else g
                dfinal = tuple(None if s is None else s[idx] for s in dstates)
                dx, dinit_kd, dweights = self._cell_backward(ctxs[idx], g, dfinal)
                dx = dx[::-1] if d else dx
                d_in = dx if d_in is None else d_in + dx
                for a, v in zip(dinit, dinit_kd):
                    a[idx] = v
                suffix = "_reverse" if d else ""
                names = (f"weight_ih_l{k}{suffix}", f"weight_hh_l{k}{suffix}",
                         f"bias_ih_l{k}{suffix}", f"bias_hh_l{k}{suffix}")
                for name, g_w in zip(names, dweights):
                    if g_w is not None:
                        new_grads[name] = g_w
            d_out = d_in
        for name, g_w in new_grads.items():
            self.grads[name] += g_w
        dx = d_out.transpose(1, 0, 2) if self.batch_first else d_out
        return np.ascontiguousarray(dx), dinit

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def __repr__(self):
        args = [str(self.input_size), str(self.hidden_size)]
        defaults = {"num_layers": 1, "bias": True, "batch_first": False, "dropout": 0.0,
                    "bidirectional": False}
        args += [f"{k}={getattr(self, k)}" for k, v in defaults.items() if getattr(self, k) != v]
        args += self._repr_extra()
        if self.dtype != np.float32:
            args.append(f"dtype={self.dtype}")
        if self.backend != "native":
            args.append(f"backend={self.backend!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    def _repr_extra(self):
        return []


class RNN(_Recurrent):
    """Elman RNN: ``h_t = tanh(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh)`` (or relu).

    Arguments, parameter names and shapes, and return values as ``torch.nn.RNN``; in addition
    ``dtype`` (np.float32 or np.float64), ``backend`` ("native" or "reference") and ``seed``
    (initial weights and dropout masks). See ``fastlstm.reference`` for the equations.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, *, dtype=np.float32,
                 backend="native", seed=None):
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, backend, seed)

    def _cell_forward(self, x, init, weights):
        y, h_n, ctx = BACKENDS[self.backend].rnn_forward(x, init[0], *weights,
                                                         nonlinearity=self.nonlinearity)
        return y, (h_n,), ctx

    def _cell_backward(self, ctx, dy, dfinal):
        dx, dh0, *dweights = BACKENDS[self.backend].rnn_backward(ctx, dy, dfinal[0])
        return dx, (dh0,), dweights

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

    def _repr_extra(self):
        return [] if self.nonlinearity == "tanh" else [f"nonlinearity={self.nonlinearity!r}"]


class LSTM(_Recurrent):
    """LSTM with torch.nn.LSTM's gate order i, f, g, o (``c_t = f c_{t-1} + i g``,
    ``h_t = o tanh(c_t)``).

    Arguments, parameter names and shapes, and return values as ``torch.nn.LSTM``; in addition
    ``dtype`` (np.float32 or np.float64), ``backend`` ("native" or "reference") and ``seed``
    (initial weights and dropout masks). See ``fastlstm.reference`` for the equations.
    """

    n_states = 2
    gates = 4

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, proj_size=0, *, dtype=np.float32,
                 backend="native", seed=None):
        proj_size = _check_int("proj_size", proj_size, 0)
        if proj_size:
            raise NotImplementedError("proj_size > 0 (projected LSTM) is not supported yet")
        self.proj_size = proj_size
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, backend, seed)

    def _cell_forward(self, x, init, weights):
        y, h_n, c_n, ctx = BACKENDS[self.backend].lstm_forward(x, *init, *weights)
        return y, (h_n, c_n), ctx

    def _cell_backward(self, ctx, dy, dfinal):
        dx, dh0, dc0, *dweights = BACKENDS[self.backend].lstm_backward(ctx, dy, *dfinal)
        return dx, (dh0, dc0), dweights

    def forward(self, x, hx=None, lengths=None):
        """Run the layer. x: (T, B, input_size), or (B, T, input_size) with batch_first; hx:
        ``(h0, c0)``, each (num_layers * num_directions, B, hidden_size), or None for zeros.

        Returns ``y, (h_n, c_n)``: y (T, B, num_directions * hidden_size) (batch first if
        asked), h_n and c_n like h0 and c0.
        """
        y, (h_n, c_n) = self._forward(x, hx, lengths)
        return y, (h_n, c_n)

    def backward(self, dy=None, dhx=None):
        """Backpropagate ``dy`` (shape of y) and ``dhx = (dh_n, dc_n)`` (None means zeros) through
        the last training forward. Adds the parameter gradients into ``grads``; returns
        ``dx, (dh0, dc0)``."""
        dx, (dh0, dc0) = self._backward(dy, dhx)
        return dx, (dh0, dc0)
