"""Each cell described once: what the checks, the backends, the layers, the torch bridge, the
benchmarks and the tests read instead of branching on the cell's name.

A cell's functional pair is ``<name>_forward`` / ``<name>_backward`` in both backends
(``fastlstm.reference`` and ``fastlstm.native``). The forward takes ``x``, the initial states
(:attr:`Cell.states`), the weights (:attr:`Cell.weights`, then the keyword-only
:attr:`Cell.options`), ``batch_sizes`` and ``training``; it returns ``y``, the final states and a
context. The backward takes the context, ``dy`` and the final states' gradients and returns the
gradients as a dict keyed by the forward's argument names: ``"x"`` (None without
``input_grad``), every state, and every weight the forward was given (not None).

To add a cell: describe it here, write its pair in ``fastlstm.reference`` (the specification)
and in the kernels (its row of the C cell table ``fl_cells`` in ``csrc/kernels_common.h``, its
step functions behind ``cell_forward``/``cell_backward`` in ``csrc/kernels_impl.h``, and the
binding's slots for arrays of its own).
"""

from dataclasses import dataclass

# torch.nn's parameter names of the backend functions' weights, in torch's order; the layers
# name layer k's parameter ``{torch name}_l{k}``, and ``_reverse`` for the backward direction.
TORCH_NAMES = {"w_ih": "weight_ih", "w_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh",
               "w_hr": "weight_hr", "w_peephole": "weight_peephole",
               "g_ih": "layernorm_ih_weight", "g_hh": "layernorm_hh_weight",
               "g_c": "layernorm_c_weight", "b_c": "layernorm_c_bias", "w_fb": "weight_fb"}


@dataclass(frozen=True)
class Cell:
    """One recurrent cell."""

    name: str             # the functional pair's prefix, and the contexts' ``cell``
    gates: int            # G: blocks of H pre-activations per unit, in torch's gate order
    states: tuple         # the forward's initial-state arguments: h0, then the LSTMs' c0
    weights: tuple        # the forward's positional weight arguments: w_ih, w_hh, b_ih, b_hh
                          # (the biases None or both), then the cell's own
    options: tuple = ()   # its keyword weight arguments, None when the layer lacks them
    saved: tuple = ()     # the context arrays its backward reads, beyond x, hs and w_hh
    feedback: bool = True  # whether it runs in a stack with feedback from later layers

    def forward(self, backend):
        return getattr(backend, f"{self.name}_forward")

    def backward(self, backend):
        return getattr(backend, f"{self.name}_backward")

    @property
    def n_states(self):
        return len(self.states)

    def weight_shapes(self, I, H, P, bias=True, proj=False, peephole=False):
        """The shapes of one layer-direction's weights that read I features, by argument name,
        in torch's order (P = H without a projection)."""
        GH = self.gates * H
        shapes = {"w_ih": (GH, I), "w_hh": (GH, P)}
        if bias:
            shapes["b_ih"] = shapes["b_hh"] = (GH,)
        if proj:
            shapes["w_hr"] = (P, H)
        if peephole:
            shapes["w_peephole"] = (3 * H,)
        layer_norm = {"g_ih": (GH,), "g_hh": (GH,), "g_c": (H,), "b_c": (H,)}
        return shapes | {name: layer_norm[name] for name in self.weights[4:]}

    def call_forward(self, backend, x, states, weights, batch_sizes=None, training=True,
                     nonlinearity="tanh"):
        """Run the backend's forward with ``weights`` a dict by argument name (a missing
        weight is None); return ``y``, the tuple of final states and the context."""
        args = {name: weights.get(name) for name in self.weights + self.options}
        if self.name == "rnn":
            args["nonlinearity"] = nonlinearity
        y, *finals, ctx = self.forward(backend)(x, *states, **args, batch_sizes=batch_sizes,
                                                training=training)
        return y, tuple(finals), ctx

    def call_backward(self, backend, ctx, dy, dfinals, input_grad=True):
        """Run the backend's backward; the final states' gradients as a tuple (None: zeros).
        Returns the gradients by name."""
        return self.backward(backend)(ctx, dy, *dfinals, input_grad=input_grad)


_WEIGHTS = ("w_ih", "w_hh", "b_ih", "b_hh")

CELLS = {cell.name: cell for cell in (
    Cell("rnn", 1, ("h0",), _WEIGHTS),
    Cell("lstm", 4, ("h0", "c0"), _WEIGHTS, ("w_hr", "w_peephole"),     # gates i, f, g, o
         saved=("cs", "gates")),
    Cell("gru", 3, ("h0",), _WEIGHTS, saved=("gates", "hn")),             # gates r, z, n
    # Ba, Kiros & Hinton's layer normalisation (fastlstm.reference, "The layer-normalised LSTM")
    Cell("lnlstm", 4, ("h0", "c0"), _WEIGHTS + ("g_ih", "g_hh", "g_c", "b_c"),
         saved=("cs", "gates", "normed", "rstd"), feedback=False),
)}


def cell_of(name):
    """The :class:`Cell` called ``name``, or a ValueError listing the cells."""
    try:
        return CELLS[name]
    except (KeyError, TypeError):
        raise ValueError(f"cell must be one of {', '.join(map(repr, CELLS))}, got "
                         f"{name!r}") from None
