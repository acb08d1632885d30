# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The native backend: the functions of ``fastlstm.reference``, backed by the C kernels in csrc/.

Same names, signatures and results as the reference (to rounding). This binding checks the
arguments once (``fastlstm._functional``, shared with the reference), allocates the outputs and
the saved state, and calls the kernel with the GIL released. Thread count: ``set_num_threads``.
"""
from cython cimport floating
from libc.stdint cimport int64_t

import numpy as np

from ._functional import Context, bias_grads, check_backward, check_forward, combined_bias

fl_blas_init()

# The BLAS behind the kernels takes 32-bit sizes and leading dimensions.
_BLAS_MAX = 2**31 - 1

# The user's choice of thread count (set_num_threads), passed to every kernel as an argument:
# the kernels themselves keep no state.
_num_threads = max(1, fl_default_num_threads())


def set_num_threads(n):
    """Run the kernels on ``n`` OpenMP threads (default: OMP_NUM_THREADS, else every core).

    Results do not depend on ``n``: they are bitwise identical for every thread count.
    """
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer number of threads, got {n!r}")
    _num_threads = int(n)


def get_num_threads():
    """The number of threads the kernels run on (always 1 in a build without OpenMP)."""
    return _num_threads if fl_openmp_enabled() else 1


def build_info():
    """What this build runs on: OpenMP, row blocks per batch, BLAS core and configuration."""
    return {
        "openmp": bool(fl_openmp_enabled()),
        "num_threads": get_num_threads(),
        "row_blocks": fl_num_parts(),
        "blas_core": fl_blas_corename().decode(),
        "blas_config": fl_blas_config().decode(),
    }


def _check_blas_sizes(T, B, I, GH):
    for name, n in (("T * batch", T * B), ("input_size", I), ("gates * hidden_size", GH)):
        if n > _BLAS_MAX:
            raise ValueError(f"{name} = {n} is larger than the BLAS can index ({_BLAS_MAX})")


cdef void _rnn_forward(const floating[:, :, ::1] x, const floating[:, ::1] w_ih,
                       const floating[:, ::1] w_hh, const floating[::1] bias,
                       floating[:, :, ::1] hs, int relu, int n_threads) noexcept:
    cdef int64_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = hs.shape[2]
    with nogil:  # the kernel touches no Python object
        if floating is float:
            fl_rnn_forward_f32(T, B, I, H, relu, &x[0, 0, 0], &w_ih[0, 0], &w_hh[0, 0], &bias[0],
                               &hs[0, 0, 0], n_threads)
        else:
            fl_rnn_forward_f64(T, B, I, H, relu, &x[0, 0, 0], &w_ih[0, 0], &w_hh[0, 0], &bias[0],
                               &hs[0, 0, 0], n_threads)


cdef void _rnn_backward(const floating[:, :, ::1] x, const floating[:, ::1] w_ih,
                        const floating[:, ::1] w_hh, const floating[:, :, ::1] hs,
                        const floating[:, :, ::1] dy, floating[:, ::1] dh,
                        floating[:, :, ::1] da, floating[:, :, ::1] dx,
                        floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db,
                        int relu, int n_threads) noexcept:
    cdef int64_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = hs.shape[2]
    with nogil:  # the kernel touches no Python object
        if floating is float:
            fl_rnn_backward_f32(T, B, I, H, relu, &x[0, 0, 0], &w_ih[0, 0], &w_hh[0, 0],
                                &hs[0, 0, 0], &dy[0, 0, 0], &dh[0, 0], &da[0, 0, 0], &dx[0, 0, 0],
                                &dw_ih[0, 0], &dw_hh[0, 0], &db[0], n_threads)
        else:
            fl_rnn_backward_f64(T, B, I, H, relu, &x[0, 0, 0], &w_ih[0, 0], &w_hh[0, 0],
                                &hs[0, 0, 0], &dy[0, 0, 0], &dh[0, 0], &da[0, 0, 0], &dx[0, 0, 0],
                                &dw_ih[0, 0], &dw_hh[0, 0], &db[0], n_threads)


cdef void _lstm_forward(const floating[:, :, ::1] x, const floating[:, ::1] w_ih,
                        const floating[:, ::1] w_hh, const floating[::1] bias,
                        floating[:, :, ::1] hs, floating[:, :, ::1] cs,
                        floating[:, :, ::1] gates, int n_threads) noexcept:
    cdef int64_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = hs.shape[2]
    with nogil:  # the kernel touches no Python object
        if floating is float:
            fl_lstm_forward_f32(T, B, I, H, &x[0, 0, 0], &w_ih[0, 0], &w_hh[0, 0], &bias[0],
                                &hs[0, 0, 0], &cs[0, 0, 0], &gates[0, 0, 0], n_threads)
        else:
            fl_lstm_forward_f64(T, B, I, H, &x[0, 0, 0], &w_ih[0, 0], &w_hh[0, 0], &bias[0],
                                &hs[0, 0, 0], &cs[0, 0, 0], &gates[0, 0, 0], n_threads)


cdef void _lstm_backward(const floating[:, :, ::1] x, const floating[:, ::1] w_ih,
                         const floating[:, ::1] w_hh, const floating[:, :, ::1] hs,
                         const floating[:, :, ::1] cs, const floating[:, :, ::1] gates,
                         const floating[:, :, ::1] dy, floating[:, ::1] dh, floating[:, ::1] dc,
                         floating[:, :, ::1] da, floating[:, :, ::1] dx,
                         floating[:, ::1] dw_ih, floating[:, ::1] dw_hh, floating[::1] db,
                         int n_threads) noexcept:
    cdef int64_t T = x.shape[0], B = x.shape[1], I = x.shape[2], H = hs.shape[2]
    with nogil:  # the kernel touches no Python object
        if floating is float:
            fl_lstm_backward_f32(T, B, I, H, &x[0, 0, 0], &w_ih[0, 0], &w_hh[0, 0], &hs[0, 0, 0],
                                 &cs[0, 0, 0], &gates[0, 0, 0], &dy[0, 0, 0], &dh[0, 0], &dc[0, 0],
                                 &da[0, 0, 0], &dx[0, 0, 0], &dw_ih[0, 0], &dw_hh[0, 0], &db[0],
                                 n_threads)
        else:
            fl_lstm_backward_f64(T, B, I, H, &x[0, 0, 0], &w_ih[0, 0], &w_hh[0, 0], &hs[0, 0, 0],
                                 &cs[0, 0, 0], &gates[0, 0, 0], &dy[0, 0, 0], &dh[0, 0], &dc[0, 0],
                                 &da[0, 0, 0], &dx[0, 0, 0], &dw_ih[0, 0], &dw_hh[0, 0], &db[0],
                                 n_threads)


def _weight_grad_arrays(ctx, GH):
    """Allocate dx, dw_ih, dw_hh, db for a backward pass over ``ctx``."""
    T, B, I = ctx.x.shape
    H = ctx.hs.shape[2]
    dtype = ctx.hs.dtype
    return (np.empty((T, B, I), dtype), np.empty((GH, I), dtype), np.empty((GH, H), dtype),
            np.empty(GH, dtype))


def rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
    """Run an Elman layer over a sequence: as ``fastlstm.reference.rnn_forward``."""
    x, (h0,), w_ih, w_hh, b_ih, b_hh = check_forward("rnn", x, (h0,), w_ih, w_hh, b_ih, b_hh,
                                                     nonlinearity)
    T, B, I = x.shape
    H = w_hh.shape[1]
    _check_blas_sizes(T, B, I, H)
    bias = combined_bias(b_ih, b_hh, H, x.dtype)
    hs = np.empty((T + 1, B, H), x.dtype)
    hs[0] = h0
    relu = nonlinearity == "relu"
    if x.dtype == np.float32:
        _rnn_forward[float](x, w_ih, w_hh, bias, hs, relu, get_num_threads())
    else:
        _rnn_forward[double](x, w_ih, w_hh, bias, hs, relu, get_num_threads())
    ctx = Context("rnn", nonlinearity, x, hs, None, None, w_ih, w_hh, b_ih is not None)
    return hs[1:], hs[T], ctx


def rnn_backward(ctx, dy, dh_n):
    """Backpropagation through time for :func:`rnn_forward`: as ``reference.rnn_backward``."""
    dy, (dh_n,) = check_backward("rnn", ctx, dy, (dh_n,))
    H = ctx.hs.shape[2]
    dh = dh_n.copy()
    da = np.empty_like(dy)
    dx, dw_ih, dw_hh, db = _weight_grad_arrays(ctx, H)
    relu = ctx.nonlinearity == "relu"
    if dy.dtype == np.float32:
        _rnn_backward[float](ctx.x, ctx.w_ih, ctx.w_hh, ctx.hs, dy, dh, da, dx, dw_ih, dw_hh,
                             db, relu, get_num_threads())
    else:
        _rnn_backward[double](ctx.x, ctx.w_ih, ctx.w_hh, ctx.hs, dy, dh, da, dx, dw_ih, dw_hh,
                              db, relu, get_num_threads())
    return (dx, dh, dw_ih, dw_hh) + bias_grads(ctx.has_bias, db)


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """Run an LSTM layer over a sequence: as ``fastlstm.reference.lstm_forward``."""
    x, (h0, c0), w_ih, w_hh, b_ih, b_hh = check_forward("lstm", x, (h0, c0), w_ih, w_hh,
                                                        b_ih, b_hh)
    T, B, I = x.shape
    H = w_hh.shape[1]
    _check_blas_sizes(T, B, I, 4 * H)
    bias = combined_bias(b_ih, b_hh, 4 * H, x.dtype)
    hs = np.empty((T + 1, B, H), x.dtype)
    cs = np.empty((T + 1, B, H), x.dtype)
    gates = np.empty((T, B, 4 * H), x.dtype)
    hs[0], cs[0] = h0, c0
    if x.dtype == np.float32:
        _lstm_forward[float](x, w_ih, w_hh, bias, hs, cs, gates, get_num_threads())
    else:
        _lstm_forward[double](x, w_ih, w_hh, bias, hs, cs, gates, get_num_threads())
    ctx = Context("lstm", None, x, hs, cs, gates, w_ih, w_hh, b_ih is not None)
    return hs[1:], hs[T], cs[T], ctx


def lstm_backward(ctx, dy, dh_n, dc_n):
    """Backpropagation through time for :func:`lstm_forward`: as ``reference.lstm_backward``."""
    dy, (dh_n, dc_n) = check_backward("lstm", ctx, dy, (dh_n, dc_n))
    H = ctx.hs.shape[2]
    dh, dc = dh_n.copy(), dc_n.copy()
    da = np.empty_like(ctx.gates)
    dx, dw_ih, dw_hh, db = _weight_grad_arrays(ctx, 4 * H)
    if dy.dtype == np.float32:
        _lstm_backward[float](ctx.x, ctx.w_ih, ctx.w_hh, ctx.hs, ctx.cs, ctx.gates, dy, dh, dc,
                              da, dx, dw_ih, dw_hh, db, get_num_threads())
    else:
        _lstm_backward[double](ctx.x, ctx.w_ih, ctx.w_hh, ctx.hs, ctx.cs, ctx.gates, dy, dh,
                               dc, da, dx, dw_ih, dw_hh, db, get_num_threads())
    return (dx, dh, dc, dw_ih, dw_hh) + bias_grads(ctx.has_bias, db)
