"""The NumPy reference: the executable specification of every fastlstm layer.

Written to be read. Each function is one layer in one direction; ``fastlstm.native`` has the
same functions with the same signatures, and the layers (``fastlstm.RNN``, ``fastlstm.LSTM``)
stack them into layers and directions. Notation, shared with ``csrc/``, is in
``fastlstm._functional``: x is (T, B, I), hidden states are (B, H), weights have torch.nn's shapes.

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
"""

import numpy as np

from ._functional import Context, bias_grads, check_backward, check_forward, combined_bias


def sigmoid(a):
    """The logistic function, without overflow for large negative ``a``."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1 / (1 + e), e / (1 + e))


def _weight_grads(ctx, da):
    """Gradients of the weights from the pre-activation gradients ``da`` (T, B, G*H).

    Every step used the same weights, so their gradient is the sum over all steps and all batch
    rows of ``da_t.T @ z_t`` with ``z_t = [x_t, h_{t-1}]``: one product over all T*B rows. The
    two biases are added to the same pre-activation, so they get the same gradient.
    """
    T, B, I = ctx.x.shape
    H = ctx.hs.shape[2]
    z = np.concatenate([ctx.x, ctx.hs[:-1]], axis=2).reshape(T * B, I + H)
    dw = da.reshape(T * B, da.shape[2]).T @ z
    dw_ih, dw_hh = dw[:, :I], dw[:, I:]
    db = da.sum(axis=(0, 1))
    dw_ih, dw_hh = np.ascontiguousarray(dw_ih), np.ascontiguousarray(dw_hh)
    return (dw_ih, dw_hh) + bias_grads(ctx.has_bias, db)


def rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
    """Run an Elman layer over a sequence.

    Parameters
    ----------
    x : (T, B, I) float32 or float64
    h0 : (B, H) or None for zeros
    w_ih : (H, I); w_hh : (H, H); b_ih, b_hh : (H,) or both None
    nonlinearity : "tanh" or "relu"

    Returns
    -------
    y : (T, B, H), the hidden state after every step
    h_n : (B, H), the state after the last step (h0 when T = 0)
    ctx : Context for :func:`rnn_backward`
    """
    x, (h0,), w_ih, w_hh, b_ih, b_hh = check_forward("rnn", x, (h0,), w_ih, w_hh, b_ih, b_hh,
                                                     nonlinearity)
    T, B, _ = x.shape
    H = w_hh.shape[0]
    phi = np.tanh if nonlinearity == "tanh" else (lambda a: np.maximum(a, 0))
    w = np.concatenate([w_ih, w_hh], axis=1)            # one matrix over [x_t, h_{t-1}]
    b = combined_bias(b_ih, b_hh, H, x.dtype)
    hs = np.empty((T + 1, B, H), x.dtype)
    hs[0] = h0
    for t in range(T):
        z = np.concatenate([x[t], hs[t]], axis=1)       # the fed-back state as extra inputs
        hs[t + 1] = phi(z @ w.T + b)
    ctx = Context("rnn", nonlinearity, x, hs, None, None, w_ih, w_hh, b_ih is not None)
    return hs[1:], hs[T], ctx


def rnn_backward(ctx, dy, dh_n):
    """Backpropagation through time for :func:`rnn_forward`.

    Parameters
    ----------
    ctx : the Context returned by rnn_forward
    dy : (T, B, H) gradient of the loss with respect to y, or None for zeros
    dh_n : (B, H) gradient with respect to h_n, or None for zeros

    Returns
    -------
    dx, dh0, dw_ih, dw_hh, db_ih, db_hh (the bias gradients are None for a layer without biases)
    """
    dy, (dh,) = check_backward("rnn", ctx, dy, (dh_n,))
    hs, w_ih, w_hh = ctx.hs, ctx.w_ih, ctx.w_hh
    T = dy.shape[0]
    da = np.empty((T,) + dh.shape, dy.dtype)            # dL/da_t, a_t the pre-activation
    dh = dh.copy()                                      # dL/dh_t, carried back through time
    for t in reversed(range(T)):
        dh += dy[t]                                     # the output at t and the future both use h_t
        h = hs[t + 1]
        # The derivative of the nonlinearity, written with its output: tanh' = 1 - tanh^2 lies in
        # (0, 1], so every step back shrinks the signal (unless W_hh is large): the vanishing gradient.
        dphi = 1 - h * h if ctx.nonlinearity == "tanh" else (h > 0).astype(h.dtype)
        da[t] = dh * dphi
        dh = da[t] @ w_hh                               # what reaches h_{t-1} through W_hh
    dx = da @ w_ih
    return (dx, dh) + _weight_grads(ctx, da)


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """Run an LSTM layer over a sequence.

    Parameters
    ----------
    x : (T, B, I) float32 or float64
    h0, c0 : (B, H) or None for zeros
    w_ih : (4H, I); w_hh : (4H, H); b_ih, b_hh : (4H,) or both None; gate order i, f, g, o

    Returns
    -------
    y : (T, B, H); h_n, c_n : (B, H) after the last step; ctx : Context for :func:`lstm_backward`
    """
    x, (h0, c0), w_ih, w_hh, b_ih, b_hh = check_forward("lstm", x, (h0, c0), w_ih, w_hh,
                                                        b_ih, b_hh)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    w = np.concatenate([w_ih, w_hh], axis=1)
    b = combined_bias(b_ih, b_hh, 4 * H, x.dtype)
    hs = np.empty((T + 1, B, H), x.dtype)
    cs = np.empty((T + 1, B, H), x.dtype)
    gates = np.empty((T, B, 4 * H), x.dtype)
    hs[0], cs[0] = h0, c0
    for t in range(T):
        a = np.concatenate([x[t], hs[t]], axis=1) @ w.T + b
        i = sigmoid(a[:, 0 * H:1 * H])
        f = sigmoid(a[:, 1 * H:2 * H])
        g = np.tanh(a[:, 2 * H:3 * H])
        o = sigmoid(a[:, 3 * H:4 * H])
        cs[t + 1] = f * cs[t] + i * g                    # additive: the constant error carousel
        hs[t + 1] = o * np.tanh(cs[t + 1])
        gates[t] = np.concatenate([i, f, g, o], axis=1)
    ctx = Context("lstm", None, x, hs, cs, gates, w_ih, w_hh, b_ih is not None)
    return hs[1:], hs[T], cs[T], ctx


def lstm_backward(ctx, dy, dh_n, dc_n):
    """Backpropagation through time for :func:`lstm_forward`.

    Parameters
    ----------
    ctx : the Context returned by lstm_forward
    dy : (T, B, H) or None; dh_n, dc_n : (B, H) or None (None means zeros)

    Returns
    -------
    dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh (bias gradients None for a layer without biases)
    """
    dy, (dh, dc) = check_backward("lstm", ctx, dy, (dh_n, dc_n))
    cs, gates, w_ih, w_hh = ctx.cs, ctx.gates, ctx.w_ih, ctx.w_hh
    T = dy.shape[0]
    H = dh.shape[1]
    da = np.empty_like(gates)
    dh, dc = dh.copy(), dc.copy()
    for t in reversed(range(T)):
        i, f, g, o = (gates[t, :, k * H:(k + 1) * H] for k in range(4))
        dh += dy[t]
        tanh_c = np.tanh(cs[t + 1])
        dc += dh * o * (1 - tanh_c * tanh_c)            # through h_t = o * tanh(c_t)
        da[t, :, 0 * H:1 * H] = dc * g * i * (1 - i)     # sigmoid' = s (1 - s)
        da[t, :, 1 * H:2 * H] = dc * cs[t] * f * (1 - f)
        da[t, :, 2 * H:3 * H] = dc * i * (1 - g * g)
        da[t, :, 3 * H:4 * H] = dh * tanh_c * o * (1 - o)
        dc = dc * f                                     # the carousel: only the forget gate
        dh = da[t] @ w_hh
    dx = da @ w_ih
    return (dx, dh, dc) + _weight_grads(ctx, da)
