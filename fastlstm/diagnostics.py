"""Seeing the vanishing gradient: how the error signal decays as it travels back in time.

:func:`gradient_flow` backpropagates from the sum of a layer's last output and records, at every
step, the norm of the gradient that reaches the hidden state (and the LSTM's cell). Through a
tanh RNN whose recurrent map is contractive, each step back multiplies the signal by
``W_hh^T diag(1 - h^2)``, and it decays exponentially with distance; through an LSTM whose forget
gate is open, the cell carries it back multiplied only by the forget gate's values near 1
(Hochreiter & Schmidhuber 1997). :func:`plot_gradient_flow` draws the two side by side.
"""

import numpy as np

from .layers import LSTM, _Recurrent


def gradient_flow(layer, x):
    """Per-step norms of the error signal of ``L = sum(y[T-1])`` in a one-layer,
    unidirectional layer run over ``x`` from zero states.

    Returns ``{"h": (T,) array, "c": (T,) array (LSTM only)}``: entry t is the Frobenius norm,
    over the batch, of ``dL/dh_t`` (``dL/dc_t``), the gradient with respect to the state that
    step t hands on to step t + 1, h and c taken as the recurrence's separate variables. So
    ``dL/dh_{T-1}`` is all ones and ``dL/dc_{T-1}`` is zero (L reads h only); earlier entries
    hold what every later step sends back. The layer's parameters and gradients are unchanged.
    """
    if not isinstance(layer, _Recurrent):
        raise TypeError(f"layer must be a fastlstm RNN, GRU or LSTM, got {type(layer).__name__}")
    if getattr(layer, "feedback", None) is not None:
        # Feedback needs two layers or more, and the signal this function draws is one layer's
        # recurrence: in a feedback stack each layer's signal also arrives through the loop of
        # the layers above it, so no single curve per state says how far it reaches.
        raise ValueError(f"gradient_flow follows the error signal through the recurrence of a "
                         f"one-layer unidirectional layer; a layer with feedback "
                         f"(feedback={layer.feedback!r}) stacks {layer.num_layers} layers whose "
                         f"signals mix through the fed-back outputs, which it does not measure")
    if layer.num_layers != 1 or layer.bidirectional:
        raise ValueError(f"gradient_flow needs a one-layer unidirectional layer, got "
                         f"num_layers={layer.num_layers}, bidirectional={layer.bidirectional}")
    x = layer._check_input(x)             # (T, B, I), batch_first undone
    T, B, _ = x.shape
    weights = layer._weights(0)
    one_step = np.array([B], np.int64)
    states = tuple(np.zeros((B, n), layer.dtype) for n in layer._state_sizes())
    contexts = []
    for t in range(T):                    # one step per call, so every state's gradient shows
        # training=True whatever the layer's mode: these forwards must keep what backward
        # reads (one layer, so the mode changes nothing else: there is no dropout)
        _, states, ctx = layer._cell_forward(x[t], states, weights, one_step, training=True)
        contexts.append(ctx)
    P = layer.output_size
    grads = (np.ones((B, P), layer.dtype),) + tuple(np.zeros_like(s) for s in states[1:])
    norms = np.zeros((len(grads), T))
    for t in reversed(range(T)):
        norms[:, t] = [np.linalg.norm(g) for g in grads]
        _, grads, _ = layer._cell_backward(contexts[t], np.zeros((B, P), layer.dtype), grads)
    return dict(zip(("h", "c") if isinstance(layer, LSTM) else ("h",), norms))


def plot_gradient_flow(flows, path, title="Error signal back through time"):
    """Plot the norms of :func:`gradient_flow` against the distance from the last step, on a
    log scale, one line per entry of ``flows`` (``{label: flow}``); save a PNG to ``path``.
    Needs matplotlib (``pip install matplotlib``)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plot_gradient_flow needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, flow in flows.items():
        for state, norms in flow.items():
            distance = np.arange(len(norms))[::-1]
            shown = np.where(norms > 0, norms, np.nan)     # dL/dc is zero at the last step
            ax.semilogy(distance, shown, label=f"{label}: |dL/d{state}_t|")
    ax.set_xlabel("steps back from the last output (T - 1 - t)")
    ax.set_ylabel("norm of the error signal")
    ax.set_title(title)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
