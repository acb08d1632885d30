"""What the NumPy layers (fastlstm.layers) and the torch modules (fastlstm.torch) share: the
parameter layout of a stack of layers, where the rows of a batch go, and the driver that runs
the backend's single-layer, single-direction functions over every layer and direction (or its
stack functions, for feedback) forward and backward.

Both callers check their own arguments (NumPy arrays or tensors) and hand the driver packed
rows: x (N, I) and dy (N, D * P), the initial states and the final states' gradients per
layer-direction ``idx = k * D + d`` as tuples of (B, n) arrays in the packed order of the
sequences (None for zeros), and the weights per layer-direction as dicts by the backend's
argument names.
"""

import functools
import math

import numpy as np

from ._functional import Batch, describe
from .cells import CELLS, TORCH_NAMES


class Layout:
    """The parameters of a stack: per layer-direction (index k * num_directions + d), a dict
    ``{kind: (name, shape)}`` in torch's order, the kind being the backend function's argument
    name and the name torch's (``weight_ih_l0``, ``..._reverse``); a target layer of feedback
    also has ``w_fb`` (``weight_fb_l{k}``: gates * hidden_size by the sources' outputs).
    Indexing and iterating give these dicts."""

    def __init__(self, cell, input_size, hidden_size, num_layers, bidirectional, bias=True,
                 proj_size=0, peephole=False, feedback=None):
        self.cell = CELLS[cell]
        self.num_layers, self.num_directions = num_layers, 2 if bidirectional else 1
        H, P = hidden_size, proj_size or hidden_size
        self.hidden_size, self.output_size = H, P
        self.feedback = feedback
        self.entries = []
        for k in range(num_layers):
            shapes = self.cell.weight_shapes(input_size if k == 0 else self.num_directions * P,
                                             H, P, bias, proj_size > 0, peephole)
            for suffix in ("", "_reverse")[:self.num_directions]:
                self.entries.append({kind: (f"{TORCH_NAMES[kind]}_l{k}{suffix}", shape)
                                     for kind, shape in shapes.items()})
        for k in sorted({t for _, t in feedback or ()}):   # unidirectional: entry k is layer k
            shape = (self.cell.gates * H, P * len(self.sources(k)))
            self.entries[k]["w_fb"] = (f"weight_fb_l{k}", shape)

    def __getitem__(self, idx):
        return self.entries[idx]

    def __iter__(self):
        return iter(self.entries)

    def __len__(self):
        return len(self.entries)

    def sources(self, target):
        """The layers whose outputs feed back into layer ``target``, in increasing order."""
        return [s for s, t in self.feedback or () if t == target]

    @property
    def state_sizes(self):
        """The last dimension of each state: h (the output size), then the LSTMs' c."""
        return (self.output_size, self.hidden_size)[:self.cell.n_states]

    @staticmethod
    def parameter_count(cell, input_size, hidden_size, num_layers, bidirectional, bias=True,
                        proj_size=0, peephole=False, feedback=None):
        """How many numbers the parameters of such a layout hold, counted without making it
        (a layer's constructor checks that they fit in memory before it lays them out)."""
        cell, D = CELLS[cell], 2 if bidirectional else 1
        H, P = hidden_size, proj_size or hidden_size
        first, other = (sum(math.prod(shape) for shape in cell.weight_shapes(
            n, H, P, bias, proj_size > 0, peephole).values()) for n in (input_size, D * P))
        fed_back = len(feedback or ()) * cell.gates * H * P
        return D * (first + (num_layers - 1) * other) + fed_back


def check_states(name, states, layout, B, convert, pair, errors=(TypeError, ValueError),
                 batched=True):
    """The initial states of a stack, or their gradients, checked: ``states`` None, one array
    for a cell with one state, or for two a tuple ``pair`` (as the messages spell it: "(h0,
    c0) of two arrays"); each one ``convert(name, s)`` checks (type, dtype, device; it returns it)
    and must have the shape (num_layers * num_directions, B, n), without B when not
    ``batched``. ``errors``: the exception types for a wrong kind of argument and a wrong shape.
    Returns a tuple of the states (Nones for None). The NumPy layers and the torch modules both
    check through it, so their messages agree."""
    type_error, shape_error = errors
    n_states = layout.cell.n_states
    if states is None:
        return (None,) * n_states
    if n_states > 1:
        if not isinstance(states, (tuple, list)) or len(states) != n_states:
            raise type_error(f"{name} must be a tuple {pair} or None, got {describe(states)}")
        names = [f"{name}[{i}]" for i in range(n_states)]
    else:
        states, names = (states,), [name]
    LD = layout.num_layers * layout.num_directions
    checked = []
    for n, s, size in zip(names, states, layout.state_sizes):
        if s is None:
            raise type_error(f"{n} must be an array of shape {(LD, B, size)}, got None")
        s = convert(n, s)
        shape = (LD, B, size) if batched else (LD, size)
        if tuple(s.shape) != shape:
            what = "proj_size" if size != layout.hidden_size else "hidden_size"
            form = f"(num_layers * num_directions, {'batch, ' if batched else ''}{what})"
            raise shape_error(f"{n} must have shape {shape} {form}, got {tuple(s.shape)}")
        checked.append(s)
    return tuple(checked)


class Packing:
    """Where the rows of a right-padded (T, B, ...) batch go in the packed form the backends run
    (see fastlstm._functional): sequences sorted by length, longest first, and of each one only
    the steps it really has, so that no work is spent on padding.

    ``lengths`` None (or all T) means every sequence has all T steps: the packed rows are then
    the padded array's own rows, in the same order, and the backend functions get the batch
    padded, (T, B, ...) without batch_sizes (see :meth:`to_call`): a layer called on one step
    at a time, as a stream is, then spends nothing on packing. :meth:`of_batch_sizes` describes
    a batch that is packed already (torch's PackedSequence).
    """

    def __init__(self, lengths, T, B):
        self.T, self.B = T, B
        self.full = lengths is None or bool((lengths == T).all())
        if self.full:
            self.order = slice(None)                      # packed position -> batch row
            self.batch_sizes = None
            return
        self.order = np.argsort(-lengths, kind="stable")
        sorted_lengths = lengths[self.order]
        steps = int(sorted_lengths[0]) if B else 0
        # sequences still running at step t: those longer than t
        self.batch_sizes = B - np.searchsorted(sorted_lengths[::-1], np.arange(steps),
                                               side="right")
        off = np.concatenate([[0], np.cumsum(self.batch_sizes)])
        t = np.repeat(np.arange(steps), self.batch_sizes)   # the step of each packed row
        pos = np.arange(off[-1]) - off[t]                   # and its sequence's position
        self.rows = (t, self.order[pos])                    # where it lives in the padded batch

    @classmethod
    def of_batch_sizes(cls, batch_sizes, B):
        """The packing of rows packed already, sequences in their packed order."""
        packing = cls.__new__(cls)
        packing.T, packing.B, packing.full = len(batch_sizes), B, False
        packing.order, packing.batch_sizes = slice(None), np.asarray(batch_sizes, np.int64)
        return packing

    @functools.cached_property
    def reverse(self):
        """The packed rows in the order the reverse direction reads them: each sequence
        backwards from its own end."""
        sizes = np.full(self.T, self.B, np.int64) if self.full else self.batch_sizes
        return Batch(sizes, self.B, padded=False).reversed_rows()

    def to_call(self, a):
        """Packed rows (N, n) in the form the backend functions take with ``batch_sizes``:
        (T, B, n) for a full batch, whose batch_sizes is None."""
        return a.reshape(self.T, self.B, a.shape[-1]) if self.full else a

    @staticmethod
    def from_call(a):
        """What a backend function returns in the form of ``to_call``, as packed rows (N, n)."""
        return a.reshape(-1, a.shape[-1])

    def pack(self, a):
        """(T, B, n) padded -> (N, n) packed rows."""
        return a.reshape(-1, a.shape[-1]) if self.full else a[self.rows]

    def unpack(self, a):
        """(N, n) packed rows -> (T, B, n) padded, zeros past each sequence's end."""
        if self.full:
            return a.reshape(self.T, self.B, a.shape[-1])
        out = np.zeros((self.T, self.B, a.shape[-1]), a.dtype)
        out[self.rows] = a
        return out


class Driver:
    """Runs a stack of ``layout``'s layers on ``backend`` (fastlstm.native or .reference).

    Without feedback, the layers one after another, each direction a call of the cell's
    functions, the reverse direction reading each sequence backwards from its own end; with
    feedback (a unidirectional stack), one call of the backend's stack functions.
    ``masks``: per layer, None or the (N, D * P) dropout mask its input is multiplied by (layer
    0's is None).
    """

    def __init__(self, layout, backend, nonlinearity="tanh"):
        self.layout, self.backend, self.nonlinearity = layout, backend, nonlinearity
        self.cell = layout.cell

    def forward(self, packing, x, init, weights, masks, training, direction=None,
                concat=np.concatenate):
        """y (N, D * P) rows, the final states per layer-direction, and what backward needs
        (None unless ``training``).

        ``direction(idx, inp)`` runs layer-direction idx on its input rows and returns its y
        rows, final states and context; by default the backend's functions on ``init[idx]``
        and ``weights[idx]``. The torch modules pass one that applies an autograd Function,
        and torch.cat as ``concat`` (of the directions' outputs, along axis 1); autograd then
        composes the backward, so they need no :meth:`backward`.
        """
        L, D = self.layout.num_layers, self.layout.num_directions
        if self.layout.feedback:
            y, finals, ctx = self.backend.stack_forward(
                self.cell.name, packing.to_call(x), init, weights, self.layout.feedback,
                nonlinearity=self.nonlinearity, batch_sizes=packing.batch_sizes,
                training=training, masks=masks)
            return packing.from_call(y), finals, (ctx, masks, packing) if training else None
        if direction is None:
            def direction(idx, inp):
                y, final, ctx = self.cell.call_forward(
                    self.backend, packing.to_call(inp), init[idx], weights[idx],
                    packing.batch_sizes, training, self.nonlinearity)
                return packing.from_call(y), final, ctx
        ctxs, finals = [], []
        for k in range(L):
            if masks[k] is not None:
                x = x * masks[k]
            outs = []
            for d in range(D):
                # the reverse direction reads each sequence backwards from its own end
                y, final, ctx = direction(k * D + d, x[packing.reverse] if d else x)
                outs.append(y[packing.reverse] if d else y)
                finals.append(final)
                ctxs.append(ctx)
            x = outs[0] if D == 1 else concat(outs, 1)
        return x, finals, (ctxs, masks, packing) if training else None

    def backward(self, saved, dy, dfinals, input_grad=True):
        """dx (N, I) rows (None without ``input_grad``), the initial states' gradients per
        layer-direction, and the weights' gradients per layer-direction by kind, from the
        gradients of y's rows and of the final states (tuples per layer-direction, None for
        zeros)."""
        ctxs, masks, packing = saved
        if self.layout.feedback:
            dx, dinits, grads = self.backend.stack_backward(ctxs, packing.to_call(dy), dfinals,
                                                            input_grad=input_grad)
            return None if dx is None else packing.from_call(dx), dinits, grads
        L, D, P = self.layout.num_layers, self.layout.num_directions, self.layout.output_size
        dinits, grads = [None] * (L * D), [None] * (L * D)
        for k in reversed(range(L)):
            d_in = None
            for d in range(D):
                idx = k * D + d
                g = dy[:, d * P:(d + 1) * P]
                g = g[packing.reverse] if d else g
                got = self.cell.call_backward(self.backend, ctxs[idx], packing.to_call(g),
                                              dfinals[idx], input_grad=input_grad or k > 0)
                dinits[idx] = tuple(got.pop(s) for s in self.cell.states)
                dx = got.pop("x")
                grads[idx] = got
                if dx is not None:
                    dx = packing.from_call(dx)
                    dx = dx[packing.reverse] if d else dx
                    d_in = dx if d_in is None else d_in + dx
            dy = d_in if masks[k] is None or d_in is None else d_in * masks[k]
        return dy, dinits, grads
