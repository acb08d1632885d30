"""The NumPy reference: the executable specification of every fastlstm layer.

Written to be read. Each function is one layer in one direction; ``fastlstm.native`` has the
same functions with the same signatures, and the layers (``fastlstm.RNN``, ``fastlstm.LSTM``)
stack them into layers and directions. Notation, shared with ``csrc/``, is in
``fastlstm._functional``: x is (T, B, I), or packed (N, I) for sequences of different lengths,
hidden states are (B, H), weights have torch.nn's shapes.

The Elman network
-----------------
An Elman layer keeps a copy of its own outputs and feeds them back, one step later, as extra
inputs. Step t therefore sees ``I + H`` inputs: the ``I`` normal ones, ``x_t``, with the ``H``
fed-back ones, ``h_{t-1}``, concatenated after them (10 inputs and 128 hidden units make a layer
with 138 inputs). Nothing has been fed back before the first step, so ``h_{-1}`` is zeros unless
the caller gives an initial state::

    z_t = [x_t, h_{t-1}]                        (B, I + H)
    h_t = tanh(z_t @ [W_ih, W_hh].T + b_ih + b_hh)

torch.nn stores the single weight matrix ``[W_ih, W_hh]`` as its two blocks ``weight_ih`` and
``weight_hh``; so do we.

Why the gradient vanishes
-------------------------
Backpropagation through time runs the recurrence backwards. The error signal arriving at
``h_{t-1}`` from ``h_t`` is ``(dL/dh_t * tanh'(a_t)) @ W_hh``. The derivative of tanh lies in
(0, 1], and it is 1 only at 0, so each step back multiplies the signal by a Jacobian whose size is
at most ``|W_hh|`` times a factor below one. Over k steps these factors multiply: unless the
weights are large enough to make the network unstable, the influence of an input on an error k
steps later shrinks exponentially in k. An Elman network therefore cannot learn to link events
that lie many steps apart: the signal that would teach it has vanished before it arrives.

The LSTM cell
-------------
The LSTM (Hochreiter & Schmidhuber 1997, with the forget gate of Gers et al. 2000) gives each unit
a cell ``c`` whose update is additive::

    i = sigmoid(a_i)    input gate: how much of the candidate to write
    f = sigmoid(a_f)    forget gate: how much of the old cell to keep
    g = tanh(a_g)       candidate value
    o = sigmoid(a_o)    output gate: how much of the cell to show
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)

where ``[a_i, a_f, a_g, a_o] = z_t @ [W_ih, W_hh].T + b_ih + b_hh`` in torch's gate order. Going
back one step, ``dL/dc_{t-1} = dL/dc_t * f``: no squashing derivative and no weight matrix, only
the forget gate. While the forget gate stays open (f near 1) the error signal flows back across
hundreds of steps unchanged, the "constant error carousel", and the input and output gates
decide when a unit listens and when it speaks.

Two options extend the cell. **Peepholes** (Gers & Schmidhuber 2000) let the gates see the cell
itself, through one weight per unit: ``a_i += p_i * c_{t-1}``, ``a_f += p_f * c_{t-1}`` and,
once the new cell is known, ``a_o += p_o * c_t``. With the cell in view the gates can time their
actions precisely, which the hidden state, squashed and gated by ``o``, does not always allow.
A **projection** (LSTMP, Sak et al. 2014) shrinks what the cell shows to the rest of the network:
``h_t = W_hr (o * tanh(c_t))`` has ``P < H`` entries, and because ``h`` is also the recurrent
input, ``W_hh`` shrinks to ``(4H, P)``. The cell keeps its ``H`` units.

The layer-normalised LSTM
-------------------------
As training changes the weights, the sums ``x_t @ W_ih.T`` and ``h_{t-1} @ W_hh.T`` drift in
size, and every gate has to follow; and the cell state, which only adds up, can grow with the
length of a sequence until tanh(c_t) saturates. Layer normalisation (Ba, Kiros & Hinton 2016)
takes the size out of a vector: it shifts and scales each row to mean 0 and variance 1 over its
own entries, and a learned gain (and bias) per entry then sets the size the network wants.
Unlike batch normalisation it needs no statistics over the batch, so it computes the same thing
at every step, in training and in inference, for any batch size. With mean(v) and the biased
variance var(v) of one row::

    LN(v) = (v - mean(v)) / sqrt(var(v) + eps)          eps = 1e-5, as torch's layer_norm

The layer-normalised cell (in the form of haste's LayerNormLSTM) normalises the two sums apart,
each over all 4H pre-activations of its row, and the cell state, over its H units, on its way
out to h::

    a_t = LN(x_t @ W_ih.T) * g_ih + LN(h_{t-1} @ W_hh.T) * g_hh + b_ih + b_hh
    [i, f, g, o] = sigmoid, sigmoid, tanh, sigmoid of a_t's four blocks, as in the LSTM
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(LN(c_t) * g_c + b_c)

Normalised apart, neither sum can swamp the other: each has its own gain. The biases come after
the normalisation, which would remove the part of them common to a row. The cell carried to the
next step is c_t itself, not LN(c_t): going back, c_{t-1} still gets ``dL/dc_t * f`` through the
cell, and the carousel runs as in the LSTM. Back through ``xhat = LN(v)``, with ``rstd = 1 /
sqrt(var(v) + eps)``, per row::

    dL/dv = rstd * (dL/dxhat - mean(dL/dxhat) - xhat * mean(dL/dxhat * xhat))

Shifting v by the same amount in every entry leaves xhat as it was, and so (but for eps) does
scaling it: the gradient loses its mean and its part along xhat.

The GRU
-------
The gated recurrent unit (Cho et al. 2014) gets by with one state and three gates (``W_ir``,
``W_iz``, ``W_in`` are the row blocks of torch's ``weight_ih``, ``W_hr``, ``W_hz``, ``W_hn``
those of ``weight_hh``; this ``W_hr`` is not the LSTM's projection)::

    r = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)          reset gate
    z = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)          update gate
    n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn))       candidate
    h_t = (1 - z) * n + z * h_{t-1}

The update gate interpolates between the old state and the candidate, so ``dL/dh_{t-1}`` has a
term ``z * dL/dh_t`` that meets no weight matrix and no squashing derivative: while ``z`` stays
near 1, the signal survives, as in the LSTM's cell. Because ``r`` multiplies only the recurrent
part of ``n``, the two products cannot be merged into one over ``[x_t, h_{t-1}]``; and
``b_hn`` sits inside the product with ``r``, which is why torch keeps two bias vectors.

Feedback from later layers
--------------------------
The stored outputs fed back as extra inputs need not come from the layer itself: they may also
come from a later layer and feed an earlier one. :func:`stack_forward` runs a stack of layers
where, for each pair ``(source, target)``, ``source > target``, layer ``target`` sees at step t
``[x_k(t), h_source(t-1), h_k(t-1)]``, its normal input, the source's stored output and its
own, with one more weight block ``W_fb`` for the source's part. Since layer ``target`` at step
t needs layer ``source`` at step t-1, the loop runs over steps, and over the layers inside.
"""

import numpy as np

from ._functional import (Context, StackContext, check_backward, check_bool, check_forward,
                          check_layer_norm, check_stack_backward, check_stack_forward)
from .cells import CELLS


def sigmoid(a):
    """The logistic function, without overflow for large negative ``a``."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


def _weight_grads(ctx, da, da_h=None):
    """Gradients of the weights from the pre-activation gradients ``da`` (N, G*H), by name.

    Every step used the same weights, so their gradient is the sum over all steps and all
    sequences of ``da_t.T @ x_t`` and ``da_t.T @ h_{t-1}``: one product over all N rows each. The
    two biases are added to the same pre-activation, so they get the same gradient; except in
    the GRU, whose recurrent side has its own ``da_h`` (``b_hn`` sits inside ``r * (...)``).
    """
    da_h = da if da_h is None else da_h
    grads = {"w_ih": da.T @ ctx.x, "w_hh": da_h.T @ ctx.hs[ctx.batch.prev_rows()]}
    if ctx.has_bias:
        grads |= {"b_ih": da.sum(axis=0), "b_hh": da_h.sum(axis=0)}
    return grads


def _bias(b, n, dtype):
    return np.zeros(n, dtype) if b is None else b


def _outputs(ctx, training, *states):
    """What a forward returns: y in the caller's form, then each state's last value per sequence
    (``states`` the saved hs, and cs for the LSTM), then the context (None unless training)."""
    last = ctx.batch.last_rows()
    B = ctx.batch.B
    return ((ctx.batch.outside(ctx.hs[B:]),) + tuple(s[last] for s in states)
            + (ctx if training else None,))


# Every function below takes a batch in either form (see fastlstm._functional): padded, x of
# shape (T, B, I), or packed as torch's PackedSequence holds it, x (N, I) with batch_sizes. It
# runs the packed form: step t works on the first n_t sequences, ``rows`` its rows of x, and
# reads the states it starts from at ``prev`` of hs (and cs) and writes the new ones at ``out``.
# Sequences that have ended simply drop out; their last state stays where they left it.

def rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh", batch_sizes=None,
                training=True):
    """Run an Elman layer over a sequence.

    Parameters
    ----------
    x : (T, B, I) float32 or float64, or packed (N, I) with batch_sizes
    h0 : (B, H) or None for zeros
    w_ih : (H, I); w_hh : (H, H); b_ih, b_hh : (H,) or both None
    nonlinearity : "tanh" or "relu"
    batch_sizes : None for padded x, else (T,) the number of sequences running at each step,
        non-increasing (sequences sorted longest first, as in torch's PackedSequence); h0's
        rows beyond batch_sizes[0] are sequences of length 0
    training : True (the default) returns the Context that backward needs; False, for
        inference, returns None in its place (and spares the native backend storing the LSTM's
        and the GRU's gate activations)

    Returns
    -------
    y : (T, B, H), the hidden state after every step (packed: (N, H))
    h_n : (B, H), each sequence's state after its last step (h0 for a sequence of length 0)
    ctx : Context for :func:`rnn_backward`, or None when not training
    """
    training = check_bool("training", training)
    x, (h0,), (w_ih, w_hh, b_ih, b_hh, _, _), batch = check_forward(
        "rnn", x, (h0,), w_ih, w_hh, b_ih, b_hh, nonlinearity, batch_sizes=batch_sizes)
    H = w_hh.shape[0]
    phi = _rnn_phi(nonlinearity)
    w = np.concatenate([w_ih, w_hh], axis=1)            # one matrix over [x_t, h_{t-1}]
    b = _bias(b_ih, H, x.dtype) + _bias(b_hh, H, x.dtype)
    hs = np.empty((batch.B + batch.N, H), x.dtype)
    hs[:batch.B] = h0
    for rows, prev, out in batch.steps():
        z = np.concatenate([x[rows], hs[prev]], axis=1)  # the fed-back state as extra inputs
        hs[out] = phi(z @ w.T + b)
    ctx = Context("rnn", batch, x, hs, w_ih, w_hh, b_ih is not None, nonlinearity=nonlinearity)
    return _outputs(ctx, training, hs)


def _rnn_phi(nonlinearity):
    return np.tanh if nonlinearity == "tanh" else (lambda a: np.maximum(a, 0))


def _rnn_dphi(h, nonlinearity):
    """The derivative of the RNN's nonlinearity, written with its output h."""
    return 1 - h * h if nonlinearity == "tanh" else (h > 0).astype(h.dtype)


def rnn_backward(ctx, dy, dh_n, input_grad=True):
    """Backpropagation through time for :func:`rnn_forward`.

    Parameters
    ----------
    ctx : the Context returned by rnn_forward
    dy : gradient of the loss with respect to y (y's shape), or None for zeros
    dh_n : (B, H) gradient with respect to h_n, or None for zeros
    input_grad : False to skip dx (a layer whose input needs no gradient), which is then None

    Returns
    -------
    The gradients by the forward's argument names (see fastlstm.cells): ``x`` (None when not
    input_grad), ``h0``, ``w_ih``, ``w_hh``, and ``b_ih``, ``b_hh`` when the forward had biases.
    """
    input_grad = check_bool("input_grad", input_grad)
    dy, (dh,) = check_backward("rnn", ctx, dy, (dh_n,))
    hs, w_ih, w_hh = ctx.hs, ctx.w_ih, ctx.w_hh
    da = np.empty_like(dy)                              # dL/da_t, a_t the pre-activation
    dh = dh.copy()           # dL/dh of each sequence's latest state, carried back through time
    for rows, _, out in reversed(list(ctx.batch.steps())):
        n = rows.stop - rows.start
        dh[:n] += dy[rows]                              # the output at t and the future use h_t
        h = hs[out]
        # The derivative of the nonlinearity, written with its output: tanh' = 1 - tanh^2 lies in
        # (0, 1], so every step back shrinks the signal (unless W_hh is large): the vanishing
        # gradient.
        da[rows] = dh[:n] * _rnn_dphi(h, ctx.nonlinearity)
        dh[:n] = da[rows] @ w_hh                        # what reaches h_{t-1} through W_hh
    dx = ctx.batch.outside(da @ w_ih) if input_grad else None
    return {"x": dx, "h0": dh} | _weight_grads(ctx, da)


def _lstm_cell(a, c_prev, w_hr, w_peephole):
    """One LSTM step from its pre-activations ``a`` (n, 4H) and the cell ``c_prev``: returns
    h_t, c_t and the gate activations [i, f, g, o] (n, 4H)."""
    H = c_prev.shape[1]
    a_i, a_f, a_g, a_o = (a[:, k * H:(k + 1) * H] for k in range(4))
    if w_peephole is not None:                          # the input and forget gates see c_{t-1}
        p_i, p_f, p_o = w_peephole[:H], w_peephole[H:2 * H], w_peephole[2 * H:]
        a_i, a_f = a_i + p_i * c_prev, a_f + p_f * c_prev
    i, f, g = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g)
    c = f * c_prev + i * g                              # additive: the constant error carousel
    if w_peephole is not None:                          # the output gate sees c_t
        a_o = a_o + p_o * c
    o = sigmoid(a_o)
    m = o * np.tanh(c)
    h = m if w_hr is None else m @ w_hr.T
    return h, c, np.concatenate([i, f, g, o], axis=1)


def _lstm_cell_backward(dh, dc, gates, c, c_prev, w_hr, w_peephole, dw_hr):
    """Back through one LSTM step: from dL/dh_t (n, P) and dL/dc_t (n, H), with the step's gate
    activations, c_t and c_{t-1}, to the pre-activations' gradient ``da`` (n, 4H) and
    dL/dc_{t-1} through the cell. Adds the step's share of dL/dW_hr into ``dw_hr``."""
    H = dc.shape[1]
    i, f, g, o = (gates[:, k * H:(k + 1) * H] for k in range(4))
    tanh_c = np.tanh(c)
    if w_hr is None:
        dm = dh                                         # dL/dm_t, m_t = o * tanh(c_t)
    else:                                               # back through h_t = W_hr m_t
        dw_hr += dh.T @ (o * tanh_c)
        dm = dh @ w_hr
    da_o = dm * tanh_c * o * (1 - o)                    # sigmoid' = s (1 - s)
    dct = dc + dm * o * (1 - tanh_c * tanh_c)           # through m_t = o * tanh(c_t)
    if w_peephole is not None:
        p_i, p_f, p_o = (w_peephole[k * H:(k + 1) * H] for k in range(3))
        dct += da_o * p_o                               # and through o's peephole
    da_i = dct * g * i * (1 - i)
    da_f = dct * c_prev * f * (1 - f)
    da = np.concatenate([da_i, da_f, dct * i * (1 - g * g), da_o], axis=1)
    dc_prev = dct * f                                   # the carousel: only the forget gate
    if w_peephole is not None:
        dc_prev += da_i * p_i + da_f * p_f              # (and the peepholes)
    return da, dc_prev


def _lstm_option_grads(ctx, da, dw_hr):
    """The gradients of the LSTM's optional weights the forward was given: ``w_hr``'s, summed
    by the steps, and ``w_peephole``'s over all rows (p_i and p_f saw c_{t-1}, p_o saw c_t)."""
    grads = {} if ctx.w_hr is None else {"w_hr": dw_hr}
    if ctx.w_peephole is not None:
        H = ctx.cs.shape[1]
        c_prev, c = ctx.cs[ctx.batch.prev_rows()], ctx.cs[ctx.batch.B:]
        grads["w_peephole"] = np.concatenate([(da[:, :H] * c_prev).sum(axis=0),
                                              (da[:, H:2 * H] * c_prev).sum(axis=0),
                                              (da[:, 3 * H:] * c).sum(axis=0)])
    return grads


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr=None, w_peephole=None,
                 batch_sizes=None, training=True):
    """Run an LSTM layer over a sequence.

    Parameters
    ----------
    x : (T, B, I) float32 or float64, or packed (N, I) with batch_sizes
    h0 : (B, P) and c0 : (B, H), or None for zeros (P = H without projection)
    w_ih : (4H, I); w_hh : (4H, P); b_ih, b_hh : (4H,) or both None; gate order i, f, g, o
    w_hr : (P, H) projection, or None for none (torch's weight_hr)
    w_peephole : (3H,) peephole weights of gates i, f, o, or None for none
    batch_sizes : None for padded x, else packed steps as in :func:`rnn_forward`
    training : as in :func:`rnn_forward`

    Returns
    -------
    y : (T, B, P) (packed: (N, P)); h_n : (B, P) and c_n : (B, H), each sequence's states after
    its last step; ctx : Context for :func:`lstm_backward` (None when not training)
    """
    training = check_bool("training", training)
    x, (h0, c0), weights, batch = check_forward("lstm", x, (h0, c0), w_ih, w_hh, b_ih, b_hh,
                                                w_hr=w_hr, w_peephole=w_peephole,
                                                batch_sizes=batch_sizes)
    w_ih, w_hh, b_ih, b_hh, w_hr, w_peephole = weights
    H, P, B = w_ih.shape[0] // 4, w_hh.shape[1], batch.B
    w = np.concatenate([w_ih, w_hh], axis=1)
    b = _bias(b_ih, 4 * H, x.dtype) + _bias(b_hh, 4 * H, x.dtype)
    hs = np.empty((B + batch.N, P), x.dtype)
    cs = np.empty((B + batch.N, H), x.dtype)
    gates = np.empty((batch.N, 4 * H), x.dtype)
    hs[:B], cs[:B] = h0, c0
    for rows, prev, out in batch.steps():
        a = np.concatenate([x[rows], hs[prev]], axis=1) @ w.T + b
        hs[out], cs[out], gates[rows] = _lstm_cell(a, cs[prev], w_hr, w_peephole)
    ctx = Context("lstm", batch, x, hs, w_ih, w_hh, b_ih is not None, cs=cs, gates=gates,
                  w_hr=w_hr, w_peephole=w_peephole)
    return _outputs(ctx, training, hs, cs)


def lstm_backward(ctx, dy, dh_n, dc_n, input_grad=True):
    """Backpropagation through time for :func:`lstm_forward`.

    Parameters
    ----------
    ctx : the Context returned by lstm_forward
    dy : y's shape, or None; dh_n : (B, P) or None; dc_n : (B, H) or None (None means zeros)
    input_grad : False to skip dx, which is then None

    Returns
    -------
    The gradients by the forward's argument names: ``x`` (None when not input_grad), ``h0``,
    ``c0``, ``w_ih``, ``w_hh``, and each other weight the forward was given (``b_ih`` and
    ``b_hh``, ``w_hr``, ``w_peephole``).
    """
    input_grad = check_bool("input_grad", input_grad)
    dy, (dh, dc) = check_backward("lstm", ctx, dy, (dh_n, dc_n))
    cs, gates, w_ih, w_hh, w_hr = ctx.cs, ctx.gates, ctx.w_ih, ctx.w_hh, ctx.w_hr
    da = np.empty_like(gates)
    dw_hr = None if w_hr is None else np.zeros_like(w_hr)
    dh, dc = dh.copy(), dc.copy()                       # per sequence, as in rnn_backward
    for rows, prev, out in reversed(list(ctx.batch.steps())):
        n = rows.stop - rows.start
        dh[:n] += dy[rows]
        da[rows], dc[:n] = _lstm_cell_backward(dh[:n], dc[:n], gates[rows], cs[out], cs[prev],
                                               w_hr, ctx.w_peephole, dw_hr)
        dh[:n] = da[rows] @ w_hh
    dx = ctx.batch.outside(da @ w_ih) if input_grad else None
    return {"x": dx, "h0": dh, "c0": dc} | _weight_grads(ctx, da) | _lstm_option_grads(
        ctx, da, dw_hr)


LN_EPS = 1e-5   # the eps of every layer normalisation, as torch's layer_norm has it


def _layer_norm(v):
    """Each row of ``v`` (n, k) normalised over its k entries: returns xhat (n, k), whose rows
    have mean 0 and variance var / (var + eps), and rstd (n,) = 1 / sqrt(var + eps), var the
    row's biased variance."""
    d = v - v.mean(axis=1, keepdims=True)
    rstd = 1 / np.sqrt((d * d).mean(axis=1) + LN_EPS)
    return d * rstd[:, None], rstd


def _layer_norm_backward(dxhat, xhat, rstd):
    """Back through :func:`_layer_norm`: dL/dv (n, k) from dL/dxhat, with the xhat and rstd it
    returned. The gradient loses its mean and its part along xhat (the module's docstring)."""
    return rstd[:, None] * (dxhat - dxhat.mean(axis=1, keepdims=True)
                            - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))


def _normed_columns(H):
    """The three blocks of a row of the context's ``normed`` (N, 9H): LN(x_t W_ih^T) (4H), then
    LN(h_{t-1} W_hh^T) (4H), then LN(c_t) (H); ``rstd``'s three columns follow the same order."""
    return slice(0, 4 * H), slice(4 * H, 8 * H), slice(8 * H, 9 * H)


def _lnlstm_cell(a, c_prev, g_c, b_c):
    """One layer-normalised LSTM step from its pre-activations ``a`` (n, 4H), the normalised
    sums already added, and the cell ``c_prev``: returns h_t, c_t, the gate activations
    [i, f, g, o] (n, 4H), and LN(c_t) with its rstd."""
    H = c_prev.shape[1]
    i, f = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H])
    g, o = np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
    c = f * c_prev + i * g                  # carried on as it is: the carousel of the LSTM
    c_hat, rstd_c = _layer_norm(c)          # only its way out to h is normalised
    h = o * np.tanh(c_hat * g_c + b_c)
    return h, c, np.concatenate([i, f, g, o], axis=1), c_hat, rstd_c


def _lnlstm_cell_backward(dh, dc, gates, c_hat, rstd_c, c_prev, g_c, b_c):
    """Back through one layer-normalised LSTM step: from dL/dh_t and dL/dc_t (n, H), with the
    step's gate activations, LN(c_t) and its rstd, and c_{t-1}, to the pre-activations' gradient
    ``da`` (n, 4H), dL/dc_{t-1}, and dL/du_t, u_t = LN(c_t) * g_c + b_c (for g_c and b_c)."""
    H = dc.shape[1]
    i, f, g, o = (gates[:, k * H:(k + 1) * H] for k in range(4))
    tanh_u = np.tanh(c_hat * g_c + b_c)
    da_o = dh * tanh_u * o * (1 - o)
    du = dh * o * (1 - tanh_u * tanh_u)                 # through h_t = o * tanh(u_t)
    dct = dc + _layer_norm_backward(du * g_c, c_hat, rstd_c)   # and back through LN(c_t)
    da_i = dct * g * i * (1 - i)
    da_f = dct * c_prev * f * (1 - f)
    da = np.concatenate([da_i, da_f, dct * i * (1 - g * g), da_o], axis=1)
    return da, dct * f, du                              # the carousel: only the forget gate


def lnlstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, batch_sizes=None,
                   training=True):
    """Run a layer-normalised LSTM layer over a sequence (the module's docstring has its
    equations).

    Parameters
    ----------
    x : (T, B, I) float32 or float64, or packed (N, I) with batch_sizes
    h0, c0 : (B, H), or None for zeros
    w_ih : (4H, I); w_hh : (4H, H); b_ih, b_hh : (4H,) or both None; gate order i, f, g, o
    g_ih, g_hh : (4H,) the gains of LN(x_t W_ih^T) and LN(h_{t-1} W_hh^T)
    g_c, b_c : (H,) the gain and the bias of LN(c_t)
    batch_sizes : None for padded x, else packed steps as in :func:`rnn_forward`
    training : as in :func:`rnn_forward`

    Returns
    -------
    y : (T, B, H) (packed: (N, H)); h_n and c_n : (B, H), each sequence's states after its last
    step (c_n as carried, not normalised); ctx : Context for :func:`lnlstm_backward` (None when
    not training)
    """
    training = check_bool("training", training)
    x, (h0, c0), (w_ih, w_hh, b_ih, b_hh, _, _), batch = check_forward(
        "lnlstm", x, (h0, c0), w_ih, w_hh, b_ih, b_hh, batch_sizes=batch_sizes)
    H, B, N = w_hh.shape[1], batch.B, batch.N
    g_ih, g_hh, g_c, b_c = check_layer_norm(x.dtype, H, g_ih, g_hh, g_c, b_c)
    ln_ih, ln_hh, ln_c = _normed_columns(H)
    hs = np.empty((B + N, H), x.dtype)
    cs = np.empty((B + N, H), x.dtype)
    gates = np.empty((N, 4 * H), x.dtype)
    normed = np.empty((N, 9 * H), x.dtype)
    rstd = np.empty((N, 3), x.dtype)
    hs[:B], cs[:B] = h0, c0
    # The input side does not depend on the recurrence: every row at once, before the loop.
    normed[:, ln_ih], rstd[:, 0] = _layer_norm(x @ w_ih.T)
    ax = normed[:, ln_ih] * g_ih + _bias(b_ih, 4 * H, x.dtype) + _bias(b_hh, 4 * H, x.dtype)
    for rows, prev, out in batch.steps():
        normed[rows, ln_hh], rstd[rows, 1] = _layer_norm(hs[prev] @ w_hh.T)
        a = ax[rows] + normed[rows, ln_hh] * g_hh
        hs[out], cs[out], gates[rows], normed[rows, ln_c], rstd[rows, 2] = _lnlstm_cell(
            a, cs[prev], g_c, b_c)
    ctx = Context("lnlstm", batch, x, hs, w_ih, w_hh, b_ih is not None, cs=cs, gates=gates,
                  normed=normed, rstd=rstd, g_ih=g_ih, g_hh=g_hh, g_c=g_c, b_c=b_c)
    return _outputs(ctx, training, hs, cs)


def lnlstm_backward(ctx, dy, dh_n, dc_n, input_grad=True):
    """Backpropagation through time for :func:`lnlstm_forward`.

    Parameters
    ----------
    ctx : the Context returned by lnlstm_forward
    dy : y's shape, or None; dh_n, dc_n : (B, H) or None (None means zeros)
    input_grad : False to skip dx, which is then None

    Returns
    -------
    dict of the gradients, keyed by the forward's argument names: "x" (None when not
    input_grad), "h0", "c0", "w_ih", "w_hh", "b_ih" and "b_hh" (only when the forward had
    biases), "g_ih", "g_hh", "g_c", "b_c"
    """
    input_grad = check_bool("input_grad", input_grad)
    dy, (dh, dc) = check_backward("lnlstm", ctx, dy, (dh_n, dc_n))
    cs, gates, normed, rstd = ctx.cs, ctx.gates, ctx.normed, ctx.rstd
    H = cs.shape[1]
    ln_ih, ln_hh, ln_c = _normed_columns(H)
    da = np.empty_like(gates)           # dL/da_t, a_t the sum of the normalised products
    dv_hh = np.empty_like(gates)        # dL/d(h_{t-1} W_hh^T), before its normalisation
    du = np.empty((len(gates), H), gates.dtype)   # dL/du_t, u_t = LN(c_t) * g_c + b_c
    dh, dc = dh.copy(), dc.copy()       # per sequence, as in rnn_backward
    for rows, prev, _ in reversed(list(ctx.batch.steps())):
        n = rows.stop - rows.start
        dh[:n] += dy[rows]
        da[rows], dc[:n], du[rows] = _lnlstm_cell_backward(
            dh[:n], dc[:n], gates[rows], normed[rows, ln_c], rstd[rows, 2], cs[prev], ctx.g_c,
            ctx.b_c)
        dv_hh[rows] = _layer_norm_backward(da[rows] * ctx.g_hh, normed[rows, ln_hh],
                                           rstd[rows, 1])
        dh[:n] = dv_hh[rows] @ ctx.w_hh
    # The input side, every row at once, as in the forward.
    dv_ih = _layer_norm_backward(da * ctx.g_ih, normed[:, ln_ih], rstd[:, 0])
    grads = {"x": ctx.batch.outside(dv_ih @ ctx.w_ih) if input_grad else None, "h0": dh,
             "c0": dc, "w_ih": dv_ih.T @ ctx.x, "w_hh": dv_hh.T @ ctx.hs[ctx.batch.prev_rows()]}
    if ctx.has_bias:                    # added to a_t after the normalisations
        db = da.sum(axis=0)
        grads |= {"b_ih": db, "b_hh": db.copy()}
    # Every step used the same gains and bias: each gets, summed over all rows, the gradient of
    # what it feeds times the normalised vector it scales (the bias: times one).
    grads["g_ih"] = (da * normed[:, ln_ih]).sum(axis=0)
    grads["g_hh"] = (da * normed[:, ln_hh]).sum(axis=0)
    grads["g_c"] = (du * normed[:, ln_c]).sum(axis=0)
    grads["b_c"] = du.sum(axis=0)
    return grads


def _gru_cell(ax, ah, h_prev):
    """One GRU step from the input side ``ax`` (n, 3H) and the recurrent side ``ah`` (n, 3H) of
    its pre-activations: returns h_t, the gate activations [r, z, n] and ``W_hn h + b_hn``."""
    H = h_prev.shape[1]
    r = sigmoid(ax[:, :H] + ah[:, :H])
    z = sigmoid(ax[:, H:2 * H] + ah[:, H:2 * H])
    hn = ah[:, 2 * H:]
    n = np.tanh(ax[:, 2 * H:] + r * hn)
    return (1 - z) * n + z * h_prev, np.concatenate([r, z, n], axis=1), hn


def _gru_cell_backward(d, gates, hn, h_prev):
    """Back through one GRU step from dL/dh_t ``d``: the gradients of the input side ``da`` and
    of the recurrent side ``da_h`` of the pre-activations (they differ in n, where r scales only
    the recurrent part). dL/dh_{t-1} is then ``d * z + da_h @ W_hh``."""
    H = h_prev.shape[1]
    r, z, n = (gates[:, k * H:(k + 1) * H] for k in range(3))
    da_n = d * (1 - z) * (1 - n * n)
    da_z = d * (h_prev - n) * z * (1 - z)
    da_r = da_n * hn * r * (1 - r)
    return (np.concatenate([da_r, da_z, da_n], axis=1),
            np.concatenate([da_r, da_z, da_n * r], axis=1))


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes=None, training=True):
    """Run a GRU layer over a sequence (torch.nn.GRU's equations and layout).

    Parameters
    ----------
    x : (T, B, I) float32 or float64, or packed (N, I) with batch_sizes
    h0 : (B, H) or None for zeros
    w_ih : (3H, I); w_hh : (3H, H); b_ih, b_hh : (3H,) or both None; gate order r, z, n
    batch_sizes : None for padded x, else packed steps as in :func:`rnn_forward`
    training : as in :func:`rnn_forward`

    Returns
    -------
    y : (T, B, H) (packed: (N, H)); h_n : (B, H), each sequence's state after its last step;
    ctx : Context for :func:`gru_backward` (None when not training)
    """
    training = check_bool("training", training)
    x, (h0,), (w_ih, w_hh, b_ih, b_hh, _, _), batch = check_forward(
        "gru", x, (h0,), w_ih, w_hh, b_ih, b_hh, batch_sizes=batch_sizes)
    H = w_hh.shape[1]
    b_hh_ = _bias(b_hh, 3 * H, x.dtype)
    ax = x @ w_ih.T + _bias(b_ih, 3 * H, x.dtype)       # the input side of every step at once
    hs = np.empty((batch.B + batch.N, H), x.dtype)
    gates = np.empty((batch.N, 3 * H), x.dtype)
    hn = np.empty((batch.N, H), x.dtype)
    hs[:batch.B] = h0
    for rows, prev, out in batch.steps():
        h_prev = hs[prev]
        ah = h_prev @ w_hh.T + b_hh_                    # the recurrent side, all three gates
        hs[out], gates[rows], hn[rows] = _gru_cell(ax[rows], ah, h_prev)
    ctx = Context("gru", batch, x, hs, w_ih, w_hh, b_ih is not None, gates=gates, hn=hn)
    return _outputs(ctx, training, hs)


def gru_backward(ctx, dy, dh_n, input_grad=True):
    """Backpropagation through time for :func:`gru_forward`.

    Parameters
    ----------
    ctx : the Context returned by gru_forward
    dy : y's shape, or None; dh_n : (B, H) or None (None means zeros)
    input_grad : False to skip dx, which is then None

    Returns
    -------
    The gradients by name, as :func:`rnn_backward`'s.
    """
    input_grad = check_bool("input_grad", input_grad)
    dy, (dh,) = check_backward("gru", ctx, dy, (dh_n,))
    hs, gates, hn = ctx.hs, ctx.gates, ctx.hn
    H = dh.shape[1]
    da = np.empty_like(gates)                           # dL/d(input side of the pre-activations)
    da_h = np.empty_like(gates)                         # dL/d(recurrent side, W_hh h + b_hh)
    dh = dh.copy()                                      # per sequence, as in rnn_backward
    for rows, prev, _ in reversed(list(ctx.batch.steps())):
        n_rows = rows.stop - rows.start
        dh[:n_rows] += dy[rows]
        d = dh[:n_rows]
        da[rows], da_h[rows] = _gru_cell_backward(d, gates[rows], hn[rows], hs[prev])
        z = gates[rows, H:2 * H]
        dh[:n_rows] = d * z + da_h[rows] @ ctx.w_hh      # the direct path through z, and W_hh
    dx = ctx.batch.outside(da @ ctx.w_ih) if input_grad else None
    return {"x": dx, "h0": dh} | _weight_grads(ctx, da, da_h)


# ---------------------------------------------------------------- stacks with feedback

def stack_forward(cell, x, states, weights, feedback=(), nonlinearity="tanh", batch_sizes=None,
                  training=True, masks=None):
    """Run a unidirectional stack of L layers of one cell, with feedback from later layers.

    An Elman layer stores its outputs and feeds them back, next step, as extra inputs
    concatenated to its normal ones. The stored outputs may also come from a later layer and
    feed an earlier one (Jordan-style, top-down feedback): for each pair ``(source, target)`` of
    ``feedback``, ``target < source``, layer ``target`` at step t sees, after its normal input
    ``x_k(t)`` (x for layer 0, layer k-1's output at step t for the others), the output of
    layer ``source`` from step t-1::

        z_k(t) = [x_k(t), h_{s1}(t-1), h_{s2}(t-1), ..., h_k(t-1)]   sources s1 < s2 < ...
        a_k(t) = z_k(t) @ [W_ih, W_fb, W_hh].T + b_ih + b_hh

    ``W_fb`` (G*H, F_k) is the weight of the fed-back outputs, F_k = P times the number of
    sources. Nothing has been fed back before the first step: ``h_s(-1)`` is the source's
    initial state h0 (zeros unless given). For the GRU the fed-back outputs are inputs like x,
    outside the reset gate's product: GRU(x) over ``[x_k(t), fed-back outputs]``, with input
    weight ``[W_ih, W_fb]``. The LSTM feeds back h, of P = proj_size entries with a projection.

    Because layer ``target`` at step t needs layer ``source`` at step t-1, the layers cannot run
    one after another over the whole sequence: the loop runs over steps, and inside each step
    over the layers, bottom to top. Sequences of a packed batch drop out at their own ends, and
    so does their feedback. With ``feedback=()`` this is the per-layer functions run one after
    another.

    Parameters
    ----------
    cell : "rnn", "lstm", "gru" or "lnlstm" (the layer-normalised LSTM takes no feedback)
    x : (T, B, I) float32 or float64, or packed (N, I) with batch_sizes
    states : None, or L entries, layer k's ``(h0,)`` or for the LSTM ``(h0, c0)``, or None;
        h0 (B, P), c0 (B, H); None means zeros
    weights : L dicts with the keys w_ih, w_hh, b_ih, b_hh, w_hr, w_peephole (as the per-layer
        functions; absent or None where a layer has none), for the lnlstm g_ih, g_hh, g_c, b_c,
        and for a target, w_fb (G*H, F_k).
        Layer k > 0 reads layer k-1's output: w_ih (G*H, P)
    feedback : (source, target) pairs, ``0 <= target < source < L``, no duplicates
    nonlinearity : the RNN's "tanh" or "relu"
    batch_sizes : as in :func:`rnn_forward`
    training : True returns the context stack_backward needs; False returns None in its place
    masks : None, or L entries: None, or for k >= 1 an (N, P) array multiplying layer k's
        normal input (dropout between layers, scaled by 1/keep). Fed-back outputs are not
        multiplied: feedback carries the source's state as it is

    Returns
    -------
    y : (T, B, P), the top layer's outputs (packed: (N, P))
    finals : L tuples ``(h_n,)`` or ``(h_n, c_n)``, each sequence's states after its last step
    ctx : StackContext for :func:`stack_backward`, or None when not training
    """
    training = check_bool("training", training)
    x, states, weights, feedback, batch, masks = check_stack_forward(
        cell, x, states, weights, feedback, nonlinearity, batch_sizes, masks)
    if cell == "lnlstm":        # no feedback (the check refuses it): layer after layer
        return _lnlstm_stack_forward(x, states, weights, batch, training, masks)
    L, B, N, dtype = len(weights), batch.B, batch.N, x.dtype
    GH, P = weights[0]["w_hh"].shape
    sources = [[s for s, t in feedback if t == k] for k in range(L)]
    xs = [x] + [np.empty((N, P), dtype) for _ in range(1, L)]    # each layer's normal input
    hs = [np.empty((B + N, P), dtype) for _ in range(L)]
    cs = gates = hn = [None] * L
    if cell == "lstm":
        cs = [np.empty((B + N, GH // 4), dtype) for _ in range(L)]
    if cell != "rnn":
        gates = [np.empty((N, GH), dtype) for _ in range(L)]
    if cell == "gru":
        hn = [np.empty((N, GH // 3), dtype) for _ in range(L)]
    w, b = [], []
    for k, wk in enumerate(weights):
        hs[k][:B] = states[k][0]
        if cell == "lstm":
            cs[k][:B] = states[k][1]
        inputs = [wk["w_ih"]] + ([wk["w_fb"]] if sources[k] else [])
        if cell == "gru":     # the input side [x_k, fed back] and the recurrent side apart
            w.append((np.concatenate(inputs, axis=1), wk["w_hh"]))
            b.append((_bias(wk["b_ih"], GH, dtype), _bias(wk["b_hh"], GH, dtype)))
        else:                 # one matrix over [x_k, fed back, h_{t-1}]
            w.append(np.concatenate(inputs + [wk["w_hh"]], axis=1))
            b.append(_bias(wk["b_ih"], GH, dtype) + _bias(wk["b_hh"], GH, dtype))
    for rows, prev, out in batch.steps():
        for k in range(L):
            if k > 0:                                   # the layer below's output of this step
                xs[k][rows] = hs[k - 1][out] if masks[k] is None else \
                    hs[k - 1][out] * masks[k][rows]
            # the stored outputs of the later layers, from step t-1, as extra inputs
            fed = [hs[s][prev] for s in sources[k]]
            inp = np.concatenate([xs[k][rows]] + fed, axis=1) if fed else xs[k][rows]
            h_prev = hs[k][prev]
            if cell == "gru":
                ax = inp @ w[k][0].T + b[k][0]
                ah = h_prev @ w[k][1].T + b[k][1]
                hs[k][out], gates[k][rows], hn[k][rows] = _gru_cell(ax, ah, h_prev)
                continue
            a = np.concatenate([inp, h_prev], axis=1) @ w[k].T + b[k]
            if cell == "lstm":
                hs[k][out], cs[k][out], gates[k][rows] = _lstm_cell(
                    a, cs[k][prev], weights[k]["w_hr"], weights[k]["w_peephole"])
            else:
                hs[k][out] = _rnn_phi(nonlinearity)(a)
    layers = [Context(cell, batch, xs[k], hs[k], wk["w_ih"], wk["w_hh"], wk["b_ih"] is not None,
                      nonlinearity=nonlinearity if cell == "rnn" else None, cs=cs[k],
                      gates=gates[k], hn=hn[k], w_hr=wk["w_hr"], w_peephole=wk["w_peephole"])
              for k, wk in enumerate(weights)]
    ctx = StackContext(cell, batch, feedback, layers, [wk["w_fb"] for wk in weights], masks,
                       nonlinearity=nonlinearity if cell == "rnn" else None)
    last = batch.last_rows()
    finals = [(hs[k][last],) + (() if cell != "lstm" else (cs[k][last],)) for k in range(L)]
    return batch.outside(hs[L - 1][B:]), finals, ctx if training else None


def stack_backward(ctx, dy, dfinals, input_grad=True):
    """Backpropagation through time for :func:`stack_forward`.

    The steps run backwards, and inside each step the layers top down: the gradient reaching
    ``h_k(t)`` is complete once every layer above has been through step t (the layer above
    sends it ``da_{k+1}(t) @ W_ih``, times its dropout mask) and step t+1 is done (layer k's own
    recurrence, ``da_k(t+1) @ W_hh``, and every target it feeds, ``da_target(t+1) @ W_fb``'s
    block of k: the fed-back outputs' share of the target's input gradient).

    Parameters
    ----------
    ctx : the StackContext returned by stack_forward
    dy : gradient with respect to y (y's shape), or None for zeros
    dfinals : None, or L entries ``(dh_n,)`` / ``(dh_n, dc_n)`` or None (None means zeros)
    input_grad : False to skip dx, which is then None

    Returns
    -------
    dx : like x (None when not input_grad)
    dinits : L tuples ``(dh0,)`` or ``(dh0, dc0)``
    grads : L dicts with the gradients of the weights the forward was given: w_ih, w_hh, b_ih
        and b_hh (with biases), w_hr, w_peephole, w_fb (where present)
    """
    input_grad = check_bool("input_grad", input_grad)
    dy, dfinals = check_stack_backward(ctx, dy, dfinals)
    if ctx.cell == "lnlstm":
        return _lnlstm_stack_backward(ctx, dy, dfinals, input_grad)
    cell, batch, layers, L = ctx.cell, ctx.batch, ctx.layers, ctx.num_layers
    P = layers[0].hs.shape[1]
    sources = [ctx.sources(k) for k in range(L)]
    dh = [d[0].copy() for d in dfinals]   # dL/dh of each sequence's latest state, per layer
    dc = [d[1].copy() for d in dfinals] if cell == "lstm" else None
    da = [np.empty((batch.N, c.w_ih.shape[0]), dy.dtype) for c in layers]
    da_h = [np.empty_like(a) for a in da] if cell == "gru" else da
    dw_hr = [None if c.w_hr is None else np.zeros_like(c.w_hr) for c in layers]
    for rows, prev, out in reversed(list(batch.steps())):
        n = rows.stop - rows.start
        dh[L - 1][:n] += dy[rows]
        for k in reversed(range(L)):
            c, d = layers[k], dh[k][:n]
            if cell == "lstm":
                da[k][rows], dc[k][:n] = _lstm_cell_backward(
                    d, dc[k][:n], c.gates[rows], c.cs[out], c.cs[prev], c.w_hr, c.w_peephole,
                    dw_hr[k])
                dh[k][:n] = da[k][rows] @ c.w_hh        # to h_k(t-1), through W_hh
            elif cell == "gru":
                da[k][rows], da_h[k][rows] = _gru_cell_backward(d, c.gates[rows], c.hn[rows],
                                                                c.hs[prev])
                z = c.gates[rows, c.hidden_size:2 * c.hidden_size]
                dh[k][:n] = d * z + da_h[k][rows] @ c.w_hh
            else:
                da[k][rows] = d * _rnn_dphi(c.hs[out], ctx.nonlinearity)
                dh[k][:n] = da[k][rows] @ c.w_hh
            if k > 0:                                   # to the layer below's output h_{k-1}(t)
                dx_k = da[k][rows] @ c.w_ih
                dh[k - 1][:n] += dx_k if ctx.masks[k] is None else dx_k * ctx.masks[k][rows]
            for j, s in enumerate(sources[k]):          # to the sources' outputs h_s(t-1)
                dh[s][:n] += da[k][rows] @ ctx.w_fb[k][:, j * P:(j + 1) * P]
    dx = batch.outside(da[0] @ layers[0].w_ih) if input_grad else None
    dinits = [(dh[k],) + (() if cell != "lstm" else (dc[k],)) for k in range(L)]
    grads = []
    prev_rows = batch.prev_rows()
    for k, c in enumerate(layers):
        g = _weight_grads(c, da[k], None if cell != "gru" else da_h[k])
        if cell == "lstm":
            g |= _lstm_option_grads(c, da[k], dw_hr[k])
        if sources[k]:   # the fed-back rows each step read: the sources' h_{t-1}
            fed = np.concatenate([layers[s].hs[prev_rows] for s in sources[k]], axis=1)
            g["w_fb"] = da[k].T @ fed
        grads.append(g)
    return dx, dinits, grads


def _lnlstm_stack_forward(x, states, weights, batch, training, masks):
    """A stack of layer-normalised LSTM layers without feedback: each layer's whole sequence
    after the one below's, which is the same as steps outermost when no output feeds back."""
    ctxs, finals = [], []
    for k, w in enumerate(weights):
        if masks[k] is not None:
            x = x * masks[k]
        y, h_n, c_n, ctx = lnlstm_forward(batch.outside(x), *states[k],
                                          *(w[name] for name in CELLS["lnlstm"].weights),
                                          batch_sizes=None if batch.padded else batch.batch_sizes,
                                          training=training)
        if training:
            ctx.batch = batch     # the layers of a stack share its Batch
        ctxs.append(ctx)
        finals.append((h_n, c_n))
        x = y.reshape(-1, y.shape[-1])
    y = batch.outside(x)
    if not training:
        return y, finals, None
    return y, finals, StackContext("lnlstm", batch, (), ctxs, [None] * len(ctxs), masks)


def _lnlstm_stack_backward(ctx, dy, dfinals, input_grad):
    """Back through :func:`_lnlstm_stack_forward`, the top layer first."""
    grads, dinits = [None] * ctx.num_layers, [None] * ctx.num_layers
    for k in reversed(range(ctx.num_layers)):
        g = lnlstm_backward(ctx.layers[k], ctx.batch.outside(dy), *dfinals[k],
                            input_grad=input_grad or k > 0)
        dinits[k] = (g.pop("h0"), g.pop("c0"))
        dx = g.pop("x")
        grads[k] = g
        if dx is None:
            return None, dinits, grads
        dy = dx.reshape(-1, dx.shape[-1])
        if k > 0 and ctx.masks[k] is not None:
            dy = dy * ctx.masks[k]
    return ctx.batch.outside(dy), dinits, grads
