"""torch.nn.RNN, LSTM and GRU running on fastlstm's kernels: the same modules, faster on the CPU.

    import fastlstm.torch
    fastlstm.torch.convert(model)     # every torch.nn.RNN, LSTM and GRU inside model, in place
    lstm = fastlstm.torch.LSTM(10, 128, num_layers=2, batch_first=True)   # or build them directly

``fastlstm.torch.RNN``, ``LSTM`` and ``GRU`` subclass their torch.nn namesakes and replace only
``forward``. Everything else is torch.nn's own: the constructor, the attributes, the parameters
(real ``torch.nn.Parameter``s with torch's names, shapes and initialisation), ``state_dict``,
``.to(torch.float64)`` and pickling; and the forward takes and returns what torch.nn's does,
``hx``, ``batch_first``, unbatched (2-D) input and ``PackedSequence`` input included.

Each layer and direction runs as one :class:`torch.autograd.Function`. Its forward hands
zero-copy NumPy views of the tensors to ``fastlstm.native`` and, when a gradient is wanted,
keeps the kernel's context, whose backpropagation through time is the Function's backward
(without one, it runs the kernels' inference forward and keeps nothing). Autograd composes
these Functions with the dropout between layers and the reordering of the reverse direction.

Feedback from later layers (``feedback="top"`` or a list of ``(source, target)`` pairs, as
:class:`fastlstm.LSTM` takes it; unidirectional stacks only): no torch.nn module has it, so the
module registers one more ``torch.nn.Parameter`` per target layer k, ``weight_fb_l{k}`` (gates *
hidden_size, the sources' output sizes summed), initialised like weight_hh (and by
``reset_parameters``, like the others), and runs the whole stack as one autograd Function around
the kernels' ``stack_forward``/``stack_backward``. torch.nn's own parameters keep their names and
shapes. Its dropout masks come from torch's generator and act on the normal inputs between
layers only, not on the fed-back outputs (see fastlstm.LSTM). ``feedback=None``, the default, is
the module above, unchanged.

The layer-normalised LSTM (``fastlstm.torch.LSTM(..., layer_norm=True)``, as
:class:`fastlstm.LSTM` has it): the module registers ``layernorm_ih_weight_l{k}``,
``layernorm_hh_weight_l{k}``, ``layernorm_c_weight_l{k}`` and ``layernorm_c_bias_l{k}`` (and
``_reverse``), ones and zeros at the start and after ``reset_parameters``; ``proj_size`` and
``feedback`` are refused with it.

Limits, each refused with a clear error: tensors must be on the CPU, float32 or float64; the
backward pass is not itself differentiable (no double backward). Bad input raises fastlstm's
messages as exceptions that are also of the type torch.nn raises for the same mistake
(:class:`ShapeError`, :class:`DtypeError`, :class:`DeviceError`, :class:`ArgumentTypeError`).

Threads: ``fastlstm.set_num_threads`` sets the kernels' threads and ``torch.set_num_threads``
torch's; both start from ``OMP_NUM_THREADS``. A source build of fastlstm links GNU OpenMP
(libgomp) under the soname torch's does, which the dynamic linker loads once per process, so they
share its threads; a wheel of fastlstm carries its own renamed copy, and each keeps a pool.
Importing this module imports torch; ``import fastlstm`` does not.
"""

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence

from . import native
from ._functional import LN_WEIGHTS, Batch, Context
from ._driver import Driver, Layout, Packing, check_states
from ._module import check_bool
from .cells import CELLS
from .layers import check_layer_norm_options, feedback_pairs

__all__ = ["RNN", "LSTM", "GRU", "convert", "ShapeError", "DtypeError", "DeviceError",
           "ArgumentTypeError"]

_DTYPES = (torch.float32, torch.float64)


# Bad input raises fastlstm's own exception types (ValueError for shapes and devices, TypeError
# for dtypes and kinds of argument, as the layers do) with fastlstm's messages; torch.nn raises
# others for the same mistakes, and a drop-in must not slip past a caller's ``except`` written
# for torch's. Each class below is both.
class ShapeError(ValueError, RuntimeError):
    """An input or state of the wrong shape. torch.nn raises RuntimeError (input_size, hidden
    states) or ValueError (an input neither 2-D nor 3-D)."""


class DtypeError(TypeError, ValueError, RuntimeError):
    """An input or state whose dtype is not the parameters'. torch.nn raises ValueError for the
    input's, RuntimeError (from its kernels) for a state's."""


class DeviceError(ValueError, RuntimeError):
    """A tensor not on the CPU. torch.nn raises RuntimeError for an input on another device than
    its parameters."""


class ArgumentTypeError(TypeError, RuntimeError):
    """An argument of the wrong kind: an LSTM's hx not a pair, a tensor not dense. torch.nn
    raises RuntimeError ("lstm expects two hidden states", a sparse tensor it cannot reshape)."""


def _numpy(t):
    """A NumPy view of a CPU tensor, zero-copy when it is contiguous (None stays None)."""
    return None if t is None else t.detach().contiguous().resolve_neg().numpy()


def _tensors(arrays):
    return tuple(None if a is None else torch.from_numpy(a) for a in arrays)


class _LayerDirection(torch.autograd.Function):
    """One layer in one direction over packed rows (the form of fastlstm._functional): the
    native forward, and backpropagation through time as its backward.

    Inputs: the cell (a name in fastlstm.cells.CELLS), the RNN's nonlinearity, the batch (a
    fastlstm._functional.Batch), whether to keep what backward needs (``training``; without
    it, the kernels' inference forward), ``kinds`` (the backend's names of the weights given),
    then the tensors x (N, I), the cell's initial states (h0 (B, P), and c0 (B, H) for the
    LSTMs) and the weights in the order of ``kinds``. Outputs: y (N, P) and the final states.
    """

    @staticmethod
    def forward(ctx, cell, nonlinearity, batch, training, kinds, x, *tensors):
        spec = CELLS[cell]
        states, weights = tensors[:spec.n_states], tensors[spec.n_states:]
        y, finals, saved = spec.call_forward(
            native, _numpy(x), tuple(map(_numpy, states)), dict(zip(kinds, map(_numpy, weights))),
            batch.batch_sizes, training, nonlinearity)
        if not training:
            return _tensors((y, *finals))
        arrays = _tensors(getattr(saved, name) for name in ("hs",) + spec.saved)
        ctx.cell, ctx.nonlinearity, ctx.batch, ctx.kinds = cell, nonlinearity, batch, kinds
        # Everything the kernel's backward reads goes through save_for_backward: torch frees it
        # after the backward, as it does its own layers' saved state, and its version counters
        # refuse a backward after any of it was changed in place (y is a view of hs).
        ctx.save_for_backward(x, *weights, *arrays)
        return (arrays[0][batch.B:], *_tensors(finals))

    @staticmethod
    def backward(ctx, dy, *dfinals):
        # The engine runs a backward with grad mode on exactly when it builds a graph of the
        # gradients (create_graph=True: a gradient penalty, gradgradcheck, a Hessian). The
        # kernels' BPTT is not differentiable, and gradients handed back without a graph would
        # silently drop their second-order terms: refuse. (torch's once_differentiable refuses
        # only when an incoming gradient requires grad, and out.sum()'s does not.)
        _refuse_double_backward(ctx.cell)
        spec, kinds = CELLS[ctx.cell], ctx.kinds
        x, *rest = map(_numpy, ctx.saved_tensors)
        weights = dict(zip(kinds, rest))
        arrays = dict(zip(("hs",) + spec.saved, rest[len(kinds):]))
        # the Context keeps every weight but the biases, of which it needs only whether they are
        kept = {kind: w for kind, w in weights.items() if kind not in ("b_ih", "b_hh")}
        saved = Context(ctx.cell, ctx.batch, x, arrays.pop("hs"), kept.pop("w_ih"),
                        kept.pop("w_hh"), "b_ih" in weights, nonlinearity=ctx.nonlinearity,
                        **arrays, **kept)
        # A None gradient (an output autograd did not materialise) means zeros, which the
        # native backward takes None for. No dx when x needs no gradient (the input of a
        # model's first layer, commonly).
        grads = spec.call_backward(native, saved, _numpy(dy), tuple(map(_numpy, dfinals)),
                                   input_grad=ctx.needs_input_grad[5])
        return ((None,) * 5 + _tensors((grads["x"],))
                + _tensors(grads[name] for name in spec.states + kinds))


def _refuse_double_backward(cell):
    # The engine runs a backward with grad mode on exactly when it builds a graph of the
    # gradients (create_graph=True); see _LayerDirection.backward.
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"fastlstm.torch cannot differentiate twice: the backward of its {cell} kernels is "
            f"not itself differentiable, so no create_graph=True (double backward: gradient "
            f"penalties, gradgradcheck, Hessians) may pass through the layer; use the torch.nn "
            f"module for that part of the model")


class _Stack(torch.autograd.Function):
    """A whole unidirectional stack with feedback over packed rows: the kernels' stack_forward,
    and its stack_backward as the Function's backward.

    Inputs: the cell, the RNN's nonlinearity, the batch, ``training`` (keep what backward
    needs), the sorted feedback pairs, the dropout masks (None, or L NumPy arrays or Nones),
    ``kinds`` (per layer, the backend's names of the weights that follow), then the tensors
    x (N, I), h0 (L, B, P), c0 (L, B, H) or None, and every layer's weights in the order of
    ``kinds``. Outputs: y (N, P), h_n, and the LSTM's c_n.
    """

    @staticmethod
    def forward(ctx, cell, nonlinearity, batch, training, feedback, masks, kinds, x, h0, c0,
                *weights):
        flat = iter(map(_numpy, weights))
        layer_weights = [{kind: next(flat) for kind in layer_kinds} for layer_kinds in kinds]
        h0_, c0_ = _numpy(h0), _numpy(c0)
        states = [(h0_[k],) if c0_ is None else (h0_[k], c0_[k]) for k in range(len(kinds))]
        y, finals, saved = native.stack_forward(
            cell, _numpy(x), states, layer_weights, feedback, nonlinearity or "tanh",
            batch_sizes=batch.batch_sizes, training=training, masks=masks)
        # y copied: the kernels' y may be a view of the states their backward reads
        outputs = (torch.from_numpy(np.array(y)),) + tuple(
            torch.from_numpy(np.stack([f[j] for f in finals])) for j in range(len(finals[0])))
        if training:
            ctx.stack, ctx.cell, ctx.kinds = saved, cell, kinds
            # For torch's version counters only: a backward after an in-place change of the
            # input, the states or a weight is refused, as its own layers refuse it (the context
            # reads them).
            ctx.save_for_backward(x, h0, c0, *weights)
        return outputs

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n=None):
        _refuse_double_backward(ctx.cell)
        ctx.saved_tensors   # raises if any of them changed in place since the forward
        L = len(ctx.kinds)
        dfinals = [tuple(None if g is None else _numpy(g[k]) for g in (dh_n, dc_n)
                         [:CELLS[ctx.cell].n_states]) for k in range(L)]
        dx, dinits, grads = native.stack_backward(ctx.stack, _numpy(dy), dfinals,
                                                  input_grad=ctx.needs_input_grad[7])
        dx = None if dx is None else torch.from_numpy(dx)
        dh0 = torch.from_numpy(np.stack([d[0] for d in dinits]))
        dc0 = torch.from_numpy(np.stack([d[1] for d in dinits])) if len(dinits[0]) > 1 else None
        dweights = [torch.from_numpy(grads[k][kind]) for k, layer_kinds in enumerate(ctx.kinds)
                    for kind in layer_kinds]
        return (None,) * 7 + (dx, dh0, dc0, *dweights)


class _Bridge:
    """The forward the three modules share; their torch.nn base class provides the rest."""

    cell = None       # the kernels' cell, a name in fastlstm.cells.CELLS
    feedback = None   # as given: None, "top" or a list of (source, target) pairs

    def __init__(self, *args, feedback=None, **kwargs):
        """torch.nn's constructor, and ``feedback`` (see fastlstm.torch)."""
        super().__init__(*args, **kwargs)
        pairs = feedback_pairs(feedback, self.num_layers, self.bidirectional)
        self._check_options(pairs)
        if pairs is not None:
            self.feedback = "top" if isinstance(feedback, str) else [tuple(p) for p in pairs]
            self._feedback_pairs = pairs
        # torch.nn registered its own parameters; the layout's others (feedback, layer norm)
        # join them here, on the same device and dtype
        like = self.weight_hh_l0
        for entry in self._layout:
            for name, shape in entry.values():
                if name not in self._parameters:
                    self.register_parameter(name, torch.nn.Parameter(
                        torch.empty(shape, dtype=like.dtype, device=like.device)))
        self._reset_own_parameters()

    def _check_options(self, pairs):
        """A subclass's refusal of options that do not combine (the LSTM's layer_norm)."""

    @property
    def _layout(self):
        """The parameters' fastlstm._driver.Layout, made again when an attribute it reads has
        changed (a module that convert() gave this class never ran its __init__)."""
        key = (self.cell, self.input_size, self.hidden_size, self.num_layers, self.bidirectional,
               self.bias, self.proj_size, self.__dict__.get("_feedback_pairs"))
        cached = self.__dict__.get("_layout_cache")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_layout_cache"] = (key, Layout(*key[:-1], feedback=key[-1]))
        return cached[1]

    def reset_parameters(self):
        super().reset_parameters()
        self._reset_own_parameters()

    def _reset_own_parameters(self):
        """The parameters torch.nn does not have: the feedback weights uniform in
        +-1/sqrt(hidden_size), like weight_hh; the layer norms' gains 1 and bias 0. (torch.nn's
        constructor calls reset_parameters before they are registered.)"""
        bound = 1 / self.hidden_size ** 0.5
        with torch.no_grad():
            for entry in self._layout:
                for kind, (name, _) in entry.items():
                    if name not in self._parameters:
                        continue
                    if kind == "w_fb":
                        self._parameters[name].uniform_(-bound, bound)
                    elif kind in LN_WEIGHTS:
                        self._parameters[name].fill_(kind != "b_c")

    def extra_repr(self):
        s = super().extra_repr()
        return s if self.feedback is None else f"{s}, feedback={self.feedback!r}"

    def forward(self, input, hx=None):
        """torch.nn's forward on fastlstm's kernels: the arguments and return values of the
        torch.nn module this class derives from."""
        dtype = _parameter_dtype(self)
        packed = isinstance(input, PackedSequence)
        if packed:
            x, batch_sizes, sorted_indices, unsorted_indices = _check_packed(
                input, dtype, self.input_size)
            B, unbatched = int(batch_sizes[0]), False
        else:
            _check_tensor("input", input, dtype)
            layout = "(batch, seq_len, input_size)" if self.batch_first else \
                "(seq_len, batch, input_size)"
            if input.dim() not in (2, 3) or input.shape[-1] != self.input_size:
                raise ShapeError(f"input must be 3-D {layout}, or 2-D (seq_len, input_size) for "
                                 f"one unbatched sequence, with input_size={self.input_size}; "
                                 f"got shape {tuple(input.shape)}")
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else \
                input.transpose(0, 1) if self.batch_first else input
            T, B = x.shape[:2]
            batch_sizes = np.full(T, B, np.int64)
            x = x.reshape(T * B, self.input_size)
            sorted_indices = unsorted_indices = None
        states = self._initial_states(hx, B, unbatched, dtype, sorted_indices)
        y, finals = self._run(x, Batch(batch_sizes, B, padded=False), states)
        if unsorted_indices is not None:
            finals = [s.index_select(1, unsorted_indices) for s in finals]
        if packed:
            output = PackedSequence(y, input.batch_sizes, sorted_indices, unsorted_indices)
        else:
            output = y.view(T, B, y.shape[-1])
            output = output.squeeze(1) if unbatched else \
                output.transpose(0, 1) if self.batch_first else output
            finals = [s.squeeze(1) for s in finals] if unbatched else finals
        return output, (tuple(finals) if len(finals) > 1 else finals[0])

    def _state_sizes(self):
        """The last dimension of each state: h (proj_size or hidden_size), then the LSTM's c."""
        return self._layout.state_sizes

    def _initial_states(self, hx, B, unbatched, dtype, sorted_indices):
        """hx as a list of (L * D, B, n) tensors, zeros where it is None; a packed batch's
        sorted_indices put the caller's order of sequences in the kernels' (longest first)."""
        if hx is None:
            LD = self.num_layers * (2 if self.bidirectional else 1)
            return [torch.zeros(LD, B, n, dtype=dtype) for n in self._state_sizes()]

        def convert(name, s):
            _check_tensor(name, s, dtype)
            return s
        states = check_states("hx", hx, self._layout, B, convert, "(h_0, c_0) of two tensors",
                              (ArgumentTypeError, ShapeError), batched=not unbatched)
        states = [s.unsqueeze(1) if unbatched else s for s in states]
        if sorted_indices is not None:
            states = [s.index_select(1, sorted_indices) for s in states]
        return states

    def _weights(self, idx):
        """The kinds (the backend's argument names) and tensors of the weights of
        layer-direction ``idx`` (k * num_directions + d)."""
        entry = self._layout[idx]
        # by attribute: a reparametrisation (weight_norm, WeightDrop) may set a weight there
        # and take it out of _parameters
        return tuple(entry), [getattr(self, name) for name, _ in entry.values()]

    def _dropout_masks(self, N, dtype):
        """Per layer, None or the mask its input is multiplied by: torch.nn.functional.dropout
        of ones, which draws from torch's generator what, and in the order, torch.nn's layers
        draw for the same dropout."""
        L, D = self.num_layers, 2 if self.bidirectional else 1
        P = self.proj_size or self.hidden_size
        if not (self.dropout and self.training and L > 1):
            return [None] * L
        return [None] + [torch.nn.functional.dropout(torch.ones(N, D * P, dtype=dtype),
                                                     self.dropout, training=True)
                         for _ in range(1, L)]

    def _run(self, x, batch, states):
        """Every layer and direction over the packed rows x, through the driver the NumPy
        layers use (fastlstm._driver); returns y and the final states as (L * D, B, n)
        tensors."""
        # Without a gradient to compute (torch.no_grad, inference_mode, or nothing that
        # requires one), the kernels' inference forward: it keeps nothing for backward.
        training = torch.is_grad_enabled() and any(
            t.requires_grad for t in (x, *states, *self.parameters()))
        nonlinearity = getattr(self, "nonlinearity", None)
        masks = self._dropout_masks(batch.N, x.dtype)
        weights = [self._weights(idx) for idx in range(len(self._layout))]
        if self.feedback is not None:
            return self._run_stack(x, batch, states, training, masks, weights)
        packing = Packing.of_batch_sizes(batch.batch_sizes, batch.B)
        init = [[s[idx] for s in states] for idx in range(len(self._layout))]

        def direction(idx, inp):
            kinds, w = weights[idx]
            y, *finals = _LayerDirection.apply(self.cell, nonlinearity, batch, training, kinds,
                                               inp, *init[idx], *w)
            return y, finals, None

        y, finals, _ = Driver(self._layout, native, nonlinearity).forward(
            packing, x, init, None, masks, training, direction=direction, concat=torch.cat)
        # one direction's y from a training forward is a view of the kernel's saved states,
        # which the caller may change in place only after it is copied (torch.cat copies)
        y = y.clone() if training and not self.bidirectional else y
        return y, [torch.stack(f) for f in zip(*finals)]

    def _run_stack(self, x, batch, states, training, masks, weights):
        """The stack with feedback over the packed rows x, as one autograd Function; returns y
        and the final states as (L, B, n) tensors."""
        masks = [None if m is None else m.numpy() for m in masks]
        kinds = tuple(k for k, _ in weights)
        c0 = states[1] if len(states) > 1 else None
        y, *finals = _Stack.apply(self.cell, getattr(self, "nonlinearity", None), batch,
                                  training, self._layout.feedback, masks, kinds, x,
                                  states[0], c0, *(w for _, ws in weights for w in ws))
        return y, finals


def _parameter_dtype(module):
    """The dtype of a recurrent module's parameters, after checking that fastlstm can run them."""
    dtypes = {p.dtype for p in module.parameters()}
    devices = {p.device for p in module.parameters()}
    what = type(module).__name__
    if any(d.type != "cpu" for d in devices):
        raise DeviceError(f"fastlstm.torch runs on the CPU, but this {what}'s parameters are "
                          f"on {', '.join(sorted(map(str, devices)))}; move the model to the CPU "
                          f"with .cpu()")
    if len(dtypes) != 1 or not dtypes <= set(_DTYPES):
        raise TypeError(f"fastlstm.torch runs float32 and float64, but this {what}'s parameters "
                        f"are {', '.join(sorted(map(str, dtypes)))}; convert the model with "
                        f".float() or .double()")
    return dtypes.pop()


def _check_tensor(name, t, dtype):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.layout != torch.strided:
        raise ArgumentTypeError(f"{name} must be a dense (strided) tensor, got layout "
                                f"{t.layout}")
    if t.device.type != "cpu":
        raise DeviceError(f"{name} is on {t.device}, but fastlstm.torch runs on the CPU; move it "
                          f"with .cpu()")
    if t.dtype != dtype:
        raise DtypeError(f"{name} must have dtype {dtype} (the parameters' dtype), got "
                         f"{t.dtype}")


def _check_packed(input, dtype, input_size):
    """A PackedSequence's data, batch sizes (as NumPy int64) and orderings, checked: torch.nn
    trusts them, and wrong ones would give the kernels a batch that does not add up."""
    x, batch_sizes, sorted_indices, unsorted_indices = input
    _check_tensor("input.data", x, dtype)
    if x.dim() != 2 or x.shape[1] != input_size:
        raise ShapeError(f"input.data must be 2-D (N, input_size={input_size}), got shape "
                         f"{tuple(x.shape)}")
    if not isinstance(batch_sizes, torch.Tensor) or batch_sizes.dim() != 1 or \
            batch_sizes.dtype != torch.int64 or batch_sizes.device.type != "cpu":
        raise TypeError(f"input.batch_sizes must be a 1-D int64 CPU tensor, as "
                        f"pack_padded_sequence makes it, got {_describe_tensor(batch_sizes)}")
    sizes = batch_sizes.numpy()
    if len(sizes) == 0 or sizes.min() < 1 or np.any(sizes[1:] > sizes[:-1]) or \
            sizes.sum() != x.shape[0]:
        raise ValueError(f"input.batch_sizes must be positive and non-increasing, summing to "
                         f"the {x.shape[0]} rows of input.data, got {sizes.tolist()}")
    B = int(sizes[0])
    if (sorted_indices is None) != (unsorted_indices is None):
        raise ValueError("input.sorted_indices and input.unsorted_indices must both be given or "
                         "both be None")
    if sorted_indices is not None:
        for name, order in (("sorted_indices", sorted_indices),
                            ("unsorted_indices", unsorted_indices)):
            if not isinstance(order, torch.Tensor) or order.shape != (B,) or \
                    order.dtype != torch.int64 or order.device.type != "cpu" or \
                    not torch.equal(order.sort().values, torch.arange(B)):
                raise ValueError(f"input.{name} must be a permutation of the {B} sequences, "
                                 f"got {_describe_tensor(order)}")
        if not torch.equal(sorted_indices[unsorted_indices], torch.arange(B)):
            raise ValueError("input.unsorted_indices must be the inverse of "
                             "input.sorted_indices")
    return x, sizes.astype(np.int64), sorted_indices, unsorted_indices


def _describe_tensor(t):
    if not isinstance(t, torch.Tensor):
        return type(t).__name__
    values = f" {t.tolist()}" if t.numel() <= 16 and t.device.type == "cpu" else ""
    return f"a tensor{values} of shape {tuple(t.shape)}, dtype {t.dtype}, on {t.device}"


class RNN(_Bridge, torch.nn.RNN):
    __doc__ = "torch.nn.RNN on fastlstm's kernels (see fastlstm.torch).\n\n" + \
        (torch.nn.RNN.__doc__ or "")
    cell = "rnn"


class LSTM(_Bridge, torch.nn.LSTM):
    __doc__ = "torch.nn.LSTM on fastlstm's kernels (see fastlstm.torch).\n\n" + \
        (torch.nn.LSTM.__doc__ or "")
    cell = "lstm"
    layer_norm = False

    def __init__(self, *args, layer_norm=False, feedback=None, **kwargs):
        """torch.nn's constructor, ``feedback`` and ``layer_norm``: the layer-normalised LSTM
        of :class:`fastlstm.LSTM`, with its parameters ``layernorm_ih_weight_l{k}``,
        ``layernorm_hh_weight_l{k}``, ``layernorm_c_weight_l{k}`` and ``layernorm_c_bias_l{k}``
        (and ``_reverse``), which start (and ``reset_parameters`` puts them back) at 1 and 0."""
        self.layer_norm = check_bool("layer_norm", layer_norm)
        self.cell = "lnlstm" if self.layer_norm else "lstm"
        super().__init__(*args, feedback=feedback, **kwargs)

    def _check_options(self, pairs):
        check_layer_norm_options(self.layer_norm, self.proj_size, False, pairs)

    def extra_repr(self):
        s = super().extra_repr()
        return f"{s}, layer_norm=True" if self.layer_norm else s


class GRU(_Bridge, torch.nn.GRU):
    __doc__ = "torch.nn.GRU on fastlstm's kernels (see fastlstm.torch).\n\n" + \
        (torch.nn.GRU.__doc__ or "")
    cell = "gru"


_TWINS = {torch.nn.RNN: RNN, torch.nn.LSTM: LSTM, torch.nn.GRU: GRU}


def convert(module):
    """Make every torch.nn.RNN, LSTM and GRU in ``module`` (itself included) run on fastlstm's
    kernels, in place; return ``module``.

    Each one becomes its fastlstm.torch twin while staying the same object: its parameters, their
    values and identities (so an optimizer made before keeps working), its hooks and its
    attributes are unchanged, and so are its outputs. Subclasses of the torch.nn modules are left
    alone, since they may have forwards of their own. The modules to convert must be on the CPU
    and float32 or float64.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    found = [(name, m) for name, m in module.named_modules() if type(m) in _TWINS]
    for name, m in found:    # check them all before changing any
        try:
            _parameter_dtype(m)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"cannot convert {name or 'module'}: {exc}") from None
    for _, m in found:
        m.__class__ = _TWINS[type(m)]
    return module
