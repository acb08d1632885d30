"""The native backend: the functions of ``fastlstm.reference``, backed by the C kernels in csrc/.

Same names, signatures and results as the reference (to rounding). This binding checks the
arguments once (``fastlstm._functional``, shared with the reference), allocates the outputs and
the saved state, and calls the kernel with the GIL released. Thread count: ``set_num_threads``.
"""
from cpython.buffer cimport PyBUF_C_CONTIGUOUS, PyBUF_FORMAT, PyBuffer_Release, PyObject_GetBuffer
from cpython.mem cimport PyMem_Free, PyMem_Malloc
cimport cython
from libc.stdint cimport int64_t
from libc.string cimport memcpy

import os
import warnings

import numpy as np

from ._functional import (GATES, Batch, Context, StackContext, as_float_array, check_backward,
                          check_bool, check_feedback, check_stack_backward, check_stack_forward,
                          check_forward, check_layer_norm, describe, expect_shape, LN_WEIGHTS)
from ._module import check_choice, check_dtype, check_int
from .cells import CELLS

fl_init()

# The BLAS behind the kernels takes 32-bit sizes and leading dimensions.
_BLAS_MAX = 2**31 - 1
_INT_MAX = 2**31 - 1

# The user's choice of thread count (set_num_threads), passed to every kernel as an argument:
# the kernels themselves keep no state.
_num_threads = max(1, fl_default_num_threads())

# GNU OpenMP's pool of threads does not survive fork(): a child forked after this process ran a
# kernel on two or more threads inherits the pool on paper, without its threads, and would wait
# for them forever in its first parallel region. Such a child runs the kernels on one thread,
# which needs no parallel region, and refuses more (set_num_threads). Only fastlstm's own
# threads are known here: PyTorch shares the runtime, and a child forked after the parent ran a
# multi-threaded PyTorch op still hangs at its first parallel region, as PyTorch's own would.
_threads_started = False          # a kernel has run on two or more threads in this process
_forked_after_threads = False     # this process is such a child


def _after_fork_in_child():
    global _num_threads, _forked_after_threads
    if _threads_started:
        _num_threads, _forked_after_threads = 1, True


os.register_at_fork(after_in_child=_after_fork_in_child)


cdef int _note_threads(int n):
    """n, the threads a kernel call is about to run on, noting when they are several (see
    above)."""
    global _threads_started
    if n > 1:
        _threads_started = True
    return n


def set_num_threads(n):
    """Run the kernels on ``n`` OpenMP threads (default: OMP_NUM_THREADS, else every core).

    Results do not depend on ``n``: they are bitwise identical for every thread count. The
    threads of a call meet at every time step: with several processes on one machine, give each
    its share of the cores, or the steps wait for threads that wait for a core. A process
    forked after its parent ran the kernels on several threads runs them on one and refuses
    more: GNU OpenMP cannot start threads in it (start such children with multiprocessing's
    "spawn" or "forkserver").
    """
    global _num_threads
    # at most a C int: the kernels take it as one, and a larger count stored here would make
    # every later call fail
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= _INT_MAX:
        raise ValueError(f"n must be a positive integer number of threads, at most {_INT_MAX}, "
                         f"got {n!r}")
    if n > 1 and _forked_after_threads:
        raise RuntimeError(f"set_num_threads({n}): this process was forked after its parent ran "
                           f"the kernels on several threads, and GNU OpenMP cannot start threads "
                           f"in such a child: it runs them on one. Start children with "
                           f"multiprocessing's 'spawn' or 'forkserver' method to run them on "
                           f"more.")
    _num_threads = int(n)


def get_num_threads():
    """The number of threads the kernels run on (always 1 in a build without OpenMP)."""
    return _num_threads if fl_openmp_enabled() else 1


# The builds of the time loops (csrc/kernels_<isa>.c), best last: the one kernel source compiled
# for each instruction set. Those compiled into this library that this CPU and its operating
# system can run are available; the best of them runs unless FASTLSTM_ISA or set_isa() names a
# lower one.
ISAS = tuple(fl_isa_name(k).decode() for k in range(FL_N_ISAS))


def available_isas():
    """The builds of the time loops this library has and this CPU can run, best last (a subset
    of ``ISAS``: "generic", then "avx2" and "avx512" on x86-64, "neon" on aarch64)."""
    return tuple(name for k, name in enumerate(ISAS) if fl_isa_available(k))


cdef int _isa = fl_isa_best()    # the build every kernel call from now on runs in


def _why_not(name):
    """Why this machine cannot run the build ``name`` (None when it can)."""
    if name in available_isas():
        return None
    have = ", ".join(available_isas())
    if name in ISAS:
        return f"this library has no {name} build this CPU can run; it can run {have}"
    return f"the builds are {', '.join(ISAS)}, and this CPU can run {have}"


def set_isa(name):
    """Run the kernels from now on in the build ``name``, one of :func:`available_isas` (in
    every thread of the process; a call already running finishes in its own). For tests and
    comparisons: by default the best build runs. The builds give the same results to rounding;
    each is bitwise the same for every thread count."""
    global _isa
    why = _why_not(name)
    if why:
        raise ValueError(f"set_isa: cannot run the {name!r} build: {why}")
    _isa = ISAS.index(name)


def get_isa():
    """The name of the build the kernels run in (see :func:`set_isa`)."""
    return ISAS[_isa]


def _isa_from_environment():
    """FASTLSTM_ISA, when set, names the build to run: a lower one than the best, for tests and
    comparisons. One this machine cannot run leaves the best, with a warning."""
    name = os.environ.get("FASTLSTM_ISA", "")
    why = _why_not(name) if name else None
    if why:
        warnings.warn(f"FASTLSTM_ISA={name}: {why}; running the {get_isa()!r} build",
                      RuntimeWarning)
    elif name:
        set_isa(name)


_isa_from_environment()


def build_info():
    """What this build runs on: OpenMP, threads, the parts a batch is dealt into (round-robin;
    each part runs on one thread), the build of the time loops that runs (``isa``: "avx512" and
    "avx2" pack the weights once per call and run register-tiled products, "generic" calls the
    BLAS at every step) and those available, BLAS core and configuration."""
    return {
        "openmp": bool(fl_openmp_enabled()),
        "num_threads": get_num_threads(),
        "parts": fl_num_parts(),
        "isa": get_isa(),
        "isas": available_isas(),
        "blas_core": fl_blas_corename().decode(),
        "blas_config": fl_blas_config().decode(),
    }


def matmul_t(a, b):
    """``a @ b.T`` for C-contiguous float32 or float64 matrices of one dtype, through the BLAS
    the kernels use, on the kernels' threads: what ``python -m fastlstm bench`` measures the
    machine's matrix peak with."""
    for name, m in (("a", a), ("b", b)):
        if not isinstance(m, np.ndarray) or m.ndim != 2 or not m.flags.c_contiguous:
            raise ValueError(f"{name} must be a C-contiguous 2-D array, got {describe(m)}")
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"a and b must both be float32 or both float64, got {a.dtype} and "
                        f"{b.dtype}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have as many columns, got shapes {a.shape} and {b.shape}")
    for name, n in (("a's rows", a.shape[0]), ("b's rows", b.shape[0]),
                    ("the columns of a and b", a.shape[1])):
        if n > _BLAS_MAX:
            raise ValueError(f"{name} = {n} is more than the BLAS can index ({_BLAS_MAX})")
    out = np.empty((a.shape[0], b.shape[0]), a.dtype)
    if out.size == 0:
        return out
    # fl_matmul_t runs one part per thread
    cdef int n_threads = _note_threads(min(get_num_threads(), fl_num_parts()))
    cdef int64_t M = a.shape[0], N = b.shape[0], K = a.shape[1]
    cdef const float[:, ::1] a32, b32
    cdef float[:, ::1] c32
    cdef const double[:, ::1] a64, b64
    cdef double[:, ::1] c64
    if a.dtype == np.float32:
        a32, b32, c32 = a, b, out
        with nogil:
            fl_matmul_t_f32(M, N, K, &a32[0, 0] if K else NULL, &b32[0, 0] if K else NULL,
                            &c32[0, 0], n_threads)
    else:
        a64, b64, c64 = a, b, out
        with nogil:
            fl_matmul_t_f64(M, N, K, &a64[0, 0] if K else NULL, &b64[0, 0] if K else NULL,
                            &c64[0, 0], n_threads)
    return out


def _check_blas_sizes(N, I, GH, P, F=0):
    """Refuse sizes the BLAS cannot take: its sizes and leading dimensions are 32-bit. The time
    loops step through the rows of one part of the batch (of fl_num_parts()) at a time, so their
    products have leading dimensions of parts times a row (csrc/kernels_impl.h). F: the width of
    a stack's fed-back inputs."""
    parts = fl_num_parts()
    if max(N, I, F, parts * GH, parts * P) <= _BLAS_MAX:   # the common case, without the names
        return
    for name, n in (("rows of x (T * batch)", N), ("input_size", I),
                    ("the width of the fed-back inputs", F),
                    ("gates * hidden_size", GH), ("proj_size", P),
                    (f"{parts} parts of a batch times gates * hidden_size", parts * GH),
                    (f"{parts} parts of a batch times proj_size", parts * P)):
        if n > _BLAS_MAX:
            raise ValueError(f"{name} = {n} is larger than the BLAS can index ({_BLAS_MAX})")


# The kernels' two dtypes are chosen in these three functions alone: the slots are void
# pointers up to here, their arrays' type checked when they are filled.

cdef inline void _layer_kernel(bint backward, bint f64, const fl_layer *layer, void **slots,
                               int n_threads) noexcept nogil:
    if f64 and backward:
        fl_backward_f64(layer, <double **>slots, n_threads)
    elif f64:
        fl_forward_f64(layer, <double **>slots, n_threads)
    elif backward:
        fl_backward_f32(layer, <float **>slots, n_threads)
    else:
        fl_forward_f32(layer, <float **>slots, n_threads)


cdef inline void _stack_kernel(bint backward, bint f64, const fl_stack *stack, void **slots,
                               int n_threads) noexcept nogil:
    if f64 and backward:
        fl_stack_backward_f64(stack, <double **>slots, n_threads)
    elif f64:
        fl_stack_forward_f64(stack, <double **>slots, n_threads)
    elif backward:
        fl_stack_backward_f32(stack, <float **>slots, n_threads)
    else:
        fl_stack_forward_f32(stack, <float **>slots, n_threads)


cdef int _fill_slots(dict arrays, void **slots, bint f64) except -1:
    """Point each slot at its array's data (NULL for the slots not given), which must be of the
    kernel's type (double when ``f64``, else float)."""
    cdef Py_buffer view
    cdef int k
    cdef bytes format = b"d" if f64 else b"f"
    for k in range(FL_N_SLOTS):
        slots[k] = NULL
    for k, a in arrays.items():
        if a is None:
            continue
        # The kernels must get the array's own memory, C-contiguous, of their type: the buffer
        # protocol checks both, without the cost of a typed memoryview. The data outlives the
        # view's release: `arrays` holds the array until the kernel has returned.
        PyObject_GetBuffer(a, &view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT)
        try:
            if view.format != format:
                raise ValueError(f"internal error: the array for kernel slot {k} holds "
                                 f"{view.format.decode()}, not {format.decode()}")
            # const dropped: the kernels write only the slots fastlstm.h marks OUT, which we
            # allocate.
            slots[k] = view.buf
        finally:
            PyBuffer_Release(&view)
    return 0


cdef int _describe(fl_layer *layer, dict description) except -1:
    """Fill ``layer`` from a description made by :func:`_layer` (batch_sizes NULL)."""
    layer.cell = description["cell"]
    layer.projection = description["projection"]
    layer.peephole = description["peephole"]
    layer.T, layer.B, layer.I = description["T"], description["B"], description["I"]
    layer.H, layer.P = description["H"], description["P"]
    layer.batch_sizes = NULL
    layer.inference = description.get("inference", False)
    layer.input_grad = description.get("input_grad", False)
    layer.F = description.get("F", 0)
    layer.stacked = description.get("stacked", False)
    layer.isa = _isa    # fixed for the call: its scratch size depends on it
    layer.stream = description.get("stream", False)
    layer.prepacked = False
    return 0


cdef int _run(bint backward, dict description, batch, dict arrays) except -1:
    """Run the forward or backward kernel on ``arrays`` (slot -> array) with the GIL released."""
    cdef fl_layer layer
    _describe(&layer, description)
    cdef const int64_t[::1] sizes
    if not batch.full:
        sizes = batch.batch_sizes
        layer.batch_sizes = &sizes[0]
    dtype = arrays[FL_X].dtype
    cdef bint f64 = dtype == np.float64
    arrays[FL_WORK] = np.empty(fl_work_size(&layer, backward, f64), dtype)
    cdef void *slots[FL_N_SLOTS]
    cdef int n_threads = _note_threads(fl_call_threads(&layer, get_num_threads()))
    _fill_slots(arrays, slots, f64)
    with nogil:
        _layer_kernel(backward, f64, &layer, slots, n_threads)
    return 0


_CELLS = {"rnn": FL_RNN_TANH, "lstm": FL_LSTM, "gru": FL_GRU, "lnlstm": FL_LSTM_LN}
# The layer-normalised LSTM's weights (LN_WEIGHTS), what its forward saves and its gradients.
_LN_SLOTS = (FL_G_IH, FL_G_HH, FL_G_C, FL_B_C)
_LN_GRADS = (FL_DG_IH, FL_DG_HH, FL_DG_C, FL_DB_C)


def _layer(cell, nonlinearity, batch, w_ih, w_hh, w_hr, w_peephole):
    """The fl_layer description of a call as a dict, without its batch_sizes (_run makes the
    struct and points it at them)."""
    code = FL_RNN_RELU if cell == "rnn" and nonlinearity == "relu" else _CELLS[cell]
    GH, I = w_ih.shape
    P = w_hh.shape[1]
    _check_blas_sizes(batch.N, I, GH, P)
    return dict(cell=code, T=batch.T, B=batch.B, I=I, H=GH // GATES[cell], P=P,
                projection=w_hr is not None, peephole=w_peephole is not None)


def _forward_arrays(cell, x, states, w_ih, w_hh, b_ih, b_hh, w_hr, w_peephole, batch,
                    description, training, norms=None):
    """The slots of one layer's forward: its input and weights (zero biases for a layer
    without; ``norms``, the layer-normalised LSTM's g_ih, g_hh, g_c, b_c), and the saved state,
    allocated, with the initial states in place."""
    B, N, H, P, dtype = batch.B, batch.N, description["H"], description["P"], x.dtype
    GH = w_hh.shape[0]
    if b_ih is None:
        b_ih = b_hh = np.zeros(GH, dtype)
    hs = np.empty((B + N, P), dtype)
    hs[:B] = states[0]
    arrays = {FL_X: x, FL_W_IH: w_ih, FL_W_HH: w_hh, FL_B_IH: b_ih, FL_B_HH: b_hh,
              FL_W_HR: w_hr, FL_W_PEEPHOLE: w_peephole, FL_HS: hs}
    saved = CELLS[cell].saved
    if "cs" in saved:
        # An inference forward keeps each sequence's latest cell state alone, in place.
        arrays[FL_CS] = np.empty((B + N if training else B, H), dtype)
        arrays[FL_CS][:B] = states[1]
    if "gates" in saved and training:
        arrays[FL_GATES] = np.empty((N, GH), dtype)
    if "hn" in saved and training:
        arrays[FL_HN] = np.empty((N, H), dtype)
    if "normed" in saved:
        arrays.update(zip(_LN_SLOTS, norms))
        if training:
            arrays[FL_NORMED] = np.empty((N, 9 * H), dtype)
            arrays[FL_RSTD] = np.empty((N, 3), dtype)
    return arrays


def _last_states(batch, a):
    """The rows of ``a`` (hs, or a training forward's cs) holding each sequence's last state, in
    a new array (y is a view of hs): in a full batch, its last B rows."""
    return a[batch.N:].copy() if batch.full else a[batch.last_rows()]


def _saved(cell, nonlinearity, batch, arrays, has_bias, training):
    """After one layer's forward on ``arrays``: its last states, and its Context (None unless
    training)."""
    hs, cs = arrays[FL_HS], arrays.get(FL_CS)
    states = (_last_states(batch, hs),) if cs is None else (
        _last_states(batch, hs), _last_states(batch, cs) if training else cs)
    ctx = Context(cell, batch, arrays[FL_X], hs, arrays[FL_W_IH], arrays[FL_W_HH], has_bias,
                  nonlinearity=nonlinearity, cs=cs, gates=arrays.get(FL_GATES),
                  hn=arrays.get(FL_HN), w_hr=arrays.get(FL_W_HR),
                  w_peephole=arrays.get(FL_W_PEEPHOLE),
                  **{k: arrays.get(slot) for k, slot in zip(LN_WEIGHTS, _LN_SLOTS)},
                  normed=arrays.get(FL_NORMED), rstd=arrays.get(FL_RSTD)) if training else None
    return states, ctx


def _forward(cell, x, states, weights, batch, nonlinearity=None, training=True, norms=None):
    """Allocate the saved state of a forward call, run it; return what the forward function
    returns: y, the last states and the Context (None unless training: the kernel then keeps
    the gates in its scratch)."""
    w_ih, w_hh, b_ih, b_hh, w_hr, w_peephole = weights
    layer = _layer(cell, nonlinearity, batch, w_ih, w_hh, w_hr, w_peephole)
    layer["inference"] = not training
    arrays = _forward_arrays(cell, x, states, *weights, batch, layer, training, norms)
    _run(False, layer, batch, arrays)
    states, ctx = _saved(cell, nonlinearity, batch, arrays, b_ih is not None, training)
    return (batch.outside(arrays[FL_HS][batch.B:]),) + states + (ctx,)


def _backward_arrays(ctx, dy, dstates, description):
    """The slots of one layer's backward: what its forward saved, dy, the final states'
    gradients (copies: the kernel turns them into the initial states'), and the gradients,
    allocated (dx when the description asks for it)."""
    N, I, H, P = ctx.batch.N, description["I"], description["H"], description["P"]
    dtype, GH = dy.dtype, ctx.w_hh.shape[0]
    arrays = {FL_X: ctx.x, FL_W_IH: ctx.w_ih, FL_W_HH: ctx.w_hh, FL_W_HR: ctx.w_hr,
              FL_W_PEEPHOLE: ctx.w_peephole, FL_HS: ctx.hs, FL_CS: ctx.cs, FL_GATES: ctx.gates,
              FL_HN: ctx.hn, FL_DY: dy, FL_DH: dstates[0].copy(),
              FL_DX: np.empty((N, I), dtype) if description.get("input_grad") else None,
              FL_DW_IH: np.empty((GH, I), dtype),
              FL_DW_HH: np.empty((GH, P), dtype)}
    if ctx.has_bias:
        arrays[FL_DB_IH], arrays[FL_DB_HH] = np.empty(GH, dtype), np.empty(GH, dtype)
    if CELLS[ctx.cell].n_states == 2:
        arrays[FL_DC] = dstates[1].copy()
    if "normed" in CELLS[ctx.cell].saved:
        arrays.update({FL_NORMED: ctx.normed, FL_RSTD: ctx.rstd})
        for kind, slot, grad in zip(LN_WEIGHTS, _LN_SLOTS, _LN_GRADS):
            arrays[slot] = getattr(ctx, kind)
            arrays[grad] = np.empty_like(arrays[slot])
    if ctx.w_hr is not None:
        arrays[FL_DW_HR] = np.empty((P, H), dtype)
    if ctx.w_peephole is not None:
        arrays[FL_DW_PEEPHOLE] = np.empty(3 * H, dtype)
    return arrays


def _backward(ctx, dy, dstates, input_grad):
    """Allocate the gradients of a backward call, run it; return the slots (dx None unless
    ``input_grad``)."""
    batch = ctx.batch
    layer = _layer(ctx.cell, ctx.nonlinearity, batch, ctx.w_ih, ctx.w_hh, ctx.w_hr,
                   ctx.w_peephole)
    layer["input_grad"] = input_grad
    arrays = _backward_arrays(ctx, dy, dstates, layer)
    _run(True, layer, batch, arrays)
    if input_grad:
        arrays[FL_DX] = batch.outside(arrays[FL_DX])
    return arrays


# The gradient slots of a backward call, by the forward's argument names.
_GRAD_SLOTS = {"w_ih": FL_DW_IH, "w_hh": FL_DW_HH, "b_ih": FL_DB_IH, "b_hh": FL_DB_HH,
               "w_hr": FL_DW_HR, "w_peephole": FL_DW_PEEPHOLE, "w_fb": FL_DW_FB,
               **dict(zip(LN_WEIGHTS, _LN_GRADS))}


def _gradients(cell, a):
    """The gradients of a backward call's slots ``a`` by name: x (None without input_grad),
    the states, and the weights the forward had (see fastlstm.cells)."""
    states = (a[FL_DH], a[FL_DC]) if CELLS[cell].n_states == 2 else (a[FL_DH],)
    grads = {"x": a.get(FL_DX)} | dict(zip(CELLS[cell].states, states))
    return grads | {name: a[slot] for name, slot in _GRAD_SLOTS.items()
                    if a.get(slot) is not None}


def rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh", batch_sizes=None,
                training=True):
    """Run an Elman layer over a sequence: as ``fastlstm.reference.rnn_forward``."""
    training = check_bool("training", training)
    x, states, weights, batch = check_forward("rnn", x, (h0,), w_ih, w_hh, b_ih, b_hh,
                                              nonlinearity, batch_sizes=batch_sizes)
    return _forward("rnn", x, states, weights, batch, nonlinearity, training)


def rnn_backward(ctx, dy, dh_n, input_grad=True):
    """Backpropagation through time for :func:`rnn_forward`: as ``reference.rnn_backward``."""
    input_grad = check_bool("input_grad", input_grad)
    dy, dstates = check_backward("rnn", ctx, dy, (dh_n,))
    return _gradients(ctx.cell, _backward(ctx, dy, dstates, input_grad))


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr=None, w_peephole=None,
                 batch_sizes=None, training=True):
    """Run an LSTM layer over a sequence: as ``fastlstm.reference.lstm_forward``."""
    training = check_bool("training", training)
    x, states, weights, batch = check_forward("lstm", x, (h0, c0), w_ih, w_hh, b_ih, b_hh,
                                              w_hr=w_hr, w_peephole=w_peephole,
                                              batch_sizes=batch_sizes)
    return _forward("lstm", x, states, weights, batch, training=training)


def lstm_backward(ctx, dy, dh_n, dc_n, input_grad=True):
    """Backpropagation through time for :func:`lstm_forward`: as ``reference.lstm_backward``."""
    input_grad = check_bool("input_grad", input_grad)
    dy, dstates = check_backward("lstm", ctx, dy, (dh_n, dc_n))
    return _gradients(ctx.cell, _backward(ctx, dy, dstates, input_grad))


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh, batch_sizes=None, training=True):
    """Run a GRU layer over a sequence: as ``fastlstm.reference.gru_forward``."""
    training = check_bool("training", training)
    x, states, weights, batch = check_forward("gru", x, (h0,), w_ih, w_hh, b_ih, b_hh,
                                              batch_sizes=batch_sizes)
    return _forward("gru", x, states, weights, batch, training=training)


def gru_backward(ctx, dy, dh_n, input_grad=True):
    """Backpropagation through time for :func:`gru_forward`: as ``reference.gru_backward``."""
    input_grad = check_bool("input_grad", input_grad)
    dy, dstates = check_backward("gru", ctx, dy, (dh_n,))
    return _gradients(ctx.cell, _backward(ctx, dy, dstates, input_grad))


def lnlstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_c, b_c, batch_sizes=None,
                   training=True):
    """Run a layer-normalised LSTM layer over a sequence: as
    ``fastlstm.reference.lnlstm_forward``."""
    training = check_bool("training", training)
    x, states, weights, batch = check_forward("lnlstm", x, (h0, c0), w_ih, w_hh, b_ih, b_hh,
                                              batch_sizes=batch_sizes)
    norms = check_layer_norm(x.dtype, weights[1].shape[1], g_ih, g_hh, g_c, b_c)
    return _forward("lnlstm", x, states, weights, batch, training=training, norms=norms)


def lnlstm_backward(ctx, dy, dh_n, dc_n, input_grad=True):
    """Backpropagation through time for :func:`lnlstm_forward`: as
    ``reference.lnlstm_backward``, a dict of the gradients by the forward's argument names."""
    input_grad = check_bool("input_grad", input_grad)
    dy, dstates = check_backward("lnlstm", ctx, dy, (dh_n, dc_n))
    return _gradients(ctx.cell, _backward(ctx, dy, dstates, input_grad))


# ---------------------------------------------------------------- stacks with feedback

cdef int _run_stack(bint backward, list descriptions, batch, list arrays, tuple feedback,
                    dtype) except -1:
    """Run the stack's forward or backward kernel on one slot -> array dict per layer, with the
    GIL released."""
    cdef int64_t L = len(descriptions), k
    cdef fl_stack stack
    cdef const int64_t[::1] sizes = batch.batch_sizes
    cdef bint full = batch.full
    cdef const int64_t[::1] pairs = np.array(feedback, np.int64).reshape(-1)
    cdef fl_layer *layers = <fl_layer *>PyMem_Malloc(L * sizeof(fl_layer))
    cdef void **slots = <void **>PyMem_Malloc(L * FL_N_SLOTS * sizeof(void *))
    cdef int n_threads
    cdef bint f64 = dtype == np.float64
    try:
        if layers == NULL or slots == NULL:
            raise MemoryError("no memory for the stack's layer descriptions")
        for k in range(L):
            _describe(&layers[k], descriptions[k])
            if not full:
                layers[k].batch_sizes = &sizes[0]
            arrays[k][FL_WORK] = np.empty(fl_work_size(&layers[k], backward, f64), dtype)
            _fill_slots(arrays[k], &slots[k * FL_N_SLOTS], f64)
        stack.L, stack.layers = L, layers
        stack.n_feedback = len(feedback)
        stack.feedback = &pairs[0] if len(feedback) else NULL
        n_threads = _note_threads(fl_stack_call_threads(&stack, get_num_threads()))
        with nogil:
            _stack_kernel(backward, f64, &stack, slots, n_threads)
    finally:
        PyMem_Free(layers)
        PyMem_Free(slots)
    return 0


def _stack_layer(cell, nonlinearity, batch, weights, feedback, k):
    """The fl_layer description of layer k of a stack (see _layer): stacked above the first,
    with the width of its fed-back inputs."""
    w = weights[k]
    description = _layer(cell, nonlinearity, batch, w["w_ih"], w["w_hh"], w["w_hr"],
                         w["w_peephole"])
    F = description["P"] * sum(1 for _, target in feedback if target == k)
    _check_blas_sizes(batch.N, 0, 0, 0, F)
    description.update(stacked=k > 0, F=F)
    return description


def stack_forward(cell, x, states, weights, feedback=(), nonlinearity="tanh", batch_sizes=None,
                  training=True, masks=None):
    """A stack of layers in one time loop, with feedback from later layers: as
    ``reference.stack_forward``."""
    training = check_bool("training", training)
    x, states, weights, feedback, batch, masks = check_stack_forward(
        cell, x, states, weights, feedback, nonlinearity, batch_sizes, masks)
    nonlinearity = nonlinearity if cell == "rnn" else None
    L, B, N, dtype = len(weights), batch.B, batch.N, x.dtype
    descriptions, arrays = [], []
    for k, w in enumerate(weights):
        description = _stack_layer(cell, nonlinearity, batch, weights, feedback, k)
        description["inference"] = not training
        if k == 0:
            x_k = x
        elif masks[k] is None:   # the layer below's output rows themselves
            x_k = arrays[k - 1][FL_HS][B:]
        else:                    # filled by the loop, step by step
            x_k = np.empty((N, description["I"]), dtype)
        a = _forward_arrays(cell, x_k, states[k], w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"],
                            w["w_hr"], w["w_peephole"], batch, description, training,
                            [w.get(kind) for kind in LN_WEIGHTS])
        a[FL_W_FB], a[FL_MASK] = w["w_fb"], masks[k]
        descriptions.append(description)
        arrays.append(a)
    _run_stack(False, descriptions, batch, arrays, feedback, dtype)
    saved = [_saved(cell, nonlinearity, batch, a, w["b_ih"] is not None, training)
             for a, w in zip(arrays, weights)]
    finals = [states for states, _ in saved]
    y = batch.outside(arrays[L - 1][FL_HS][B:])
    if not training:
        return y, finals, None
    layers = [ctx for _, ctx in saved]
    ctx = StackContext(cell, batch, feedback, layers, [w["w_fb"] for w in weights], masks,
                       nonlinearity=nonlinearity)
    return y, finals, ctx


def stack_backward(ctx, dy, dfinals, input_grad=True):
    """Backpropagation through time for :func:`stack_forward`: as ``reference.stack_backward``.
    """
    input_grad = check_bool("input_grad", input_grad)
    dy, dfinals = check_stack_backward(ctx, dy, dfinals)
    batch, L = ctx.batch, ctx.num_layers
    weights = [{"w_ih": c.w_ih, "w_hh": c.w_hh, "w_hr": c.w_hr, "w_peephole": c.w_peephole}
               for c in ctx.layers]
    N, dtype = batch.N, dy.dtype
    descriptions, arrays = [], []
    for k, c in enumerate(ctx.layers):
        description = _stack_layer(ctx.cell, ctx.nonlinearity, batch, weights, ctx.feedback, k)
        description["input_grad"] = input_grad and k == 0
        P, F = description["P"], description["F"]
        # the top layer's dy is the caller's; the loop writes the others' from above
        dy_k = np.ascontiguousarray(dy) if k == L - 1 else np.empty((N, P), dtype)
        a = _backward_arrays(c, dy_k, dfinals[k], description)
        a[FL_W_FB], a[FL_MASK] = ctx.w_fb[k], ctx.masks[k]
        a[FL_DW_FB] = np.empty((c.w_hh.shape[0], F), dtype) if F else None
        descriptions.append(description)
        arrays.append(a)
    _run_stack(True, descriptions, batch, arrays, ctx.feedback, dtype)
    dx = batch.outside(arrays[0][FL_DX]) if input_grad else None
    grads = [_gradients(ctx.cell, a) for a in arrays]
    dinits = [tuple(g.pop(name) for name in CELLS[ctx.cell].states) for g in grads]
    for g in grads:
        del g["x"]
    return dx, dinits, grads


_STEPPER_WEIGHTS = ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_peephole", "w_fb") + LN_WEIGHTS


def _stepper_weights(cell, nonlinearity, l, w, dtype, below, n_sources):
    """Layer ``l``'s weights for a :class:`Stepper`, checked as the functional API's forward
    checks them (check_forward), as C-contiguous copies; ``below``: the output width of the
    layer below, which must be this layer's input width (None for the first layer);
    ``n_sources``: the layers whose outputs feed back into this one, through its w_fb."""
    if not isinstance(w, dict):
        raise TypeError(f"weights[{l}] must be a dict of the layer's arrays by name, got "
                        f"{describe(w)}")
    unknown = [str(k) for k in w if k not in _STEPPER_WEIGHTS]
    if unknown:
        raise ValueError(f"weights[{l}] has {', '.join(unknown)}, which is none of "
                         f"{', '.join(_STEPPER_WEIGHTS)}")
    spec = CELLS[cell]
    foreign = [k for k in w if k not in spec.weights + spec.options + ("w_fb",)]
    if foreign:
        raise ValueError(f"weights[{l}] has {', '.join(foreign)}, which a {cell} layer does "
                         f"not have")
    if "w_ih" not in w or "w_hh" not in w:
        raise ValueError(f"weights[{l}] must hold w_ih and w_hh, got {', '.join(sorted(w))}")
    try:
        w_ih = as_float_array("w_ih", w["w_ih"], dtype, ndim=2)
        if below is not None and w_ih.shape[1] != below:
            raise ValueError(f"w_ih must have {below} columns, the outputs of the layer below, "
                             f"got {w_ih.shape[1]}")
        # A step's input, of no rows: the checks read only its width and dtype.
        x = np.empty((1, 0, w_ih.shape[1]), dtype)
        _, _, checked, _ = check_forward(cell, x, (None,) * spec.n_states, w_ih, w["w_hh"],
                                         w.get("b_ih"), w.get("b_hh"), nonlinearity,
                                         w_hr=w.get("w_hr"), w_peephole=w.get("w_peephole"))
        norms = check_layer_norm(dtype, checked[1].shape[1], *(w.get(k) for k in LN_WEIGHTS)) \
            if "normed" in spec.saved else (None,) * len(LN_WEIGHTS)
        w_fb = w.get("w_fb")
        if n_sources and w_fb is None:
            raise ValueError(f"w_fb must be given: {n_sources} layers feed back into this one")
        if w_fb is not None:
            GH, P = checked[1].shape
            if not n_sources:
                raise ValueError(f"w_fb must not be given: no layer feeds back into this one, "
                                 f"got {describe(w_fb)}")
            w_fb = as_float_array("w_fb", w_fb, dtype, ndim=2)
            expect_shape("w_fb", w_fb, (GH, n_sources * P),
                         f"(gates * hidden_size, {n_sources} sources times their outputs)")
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"weights[{l}]: {exc}") from None
    return {k: np.array(a, copy=True) for k, a in zip(_STEPPER_WEIGHTS,
                                                       checked + (w_fb,) + norms)
            if a is not None}


cdef class Stepper:
    """One time step at a time through a stack of unidirectional layers, for inference.

    ``fastlstm.stream.Stream`` is the public face; this class holds what the kernels need
    between steps: a copy of every layer's weights, and for each layer its states before and
    after the step (hs and cs of two rows of blocks, as a forward call of T = 1 has them), its
    gate buffer and scratch, where the first step packs the weights for all of them (in a build
    that packs). A step allocates nothing but the array it returns (none with ``out``) and runs
    every layer in one call, without the GIL: on one thread, but for a layer whose steps split
    their units between the threads (a batch smaller than the parts, a large enough layer, in a
    build that packs), as a long call's steps do, or deal out a batch of enough rows and work
    (fl_call_threads). With feedback from later layers, a step is one call of the stack's
    kernel, which deals out the rows when one of its layers would: the output a source feeds
    back is its h of the step before, its state row (row 0 of its hs; the step writes row 1).
    """
    cdef fl_layer *layers
    cdef fl_stack stack                  # with feedback: the stack's description, else L = 0
    cdef const int64_t[::1] pairs        # the feedback pairs stack points at
    cdef void **slots                    # FL_N_SLOTS pointers per layer
    cdef int n_layers
    cdef int64_t B, I, P
    cdef bint f64
    cdef bint started                    # __init__ began (it runs once, even if it failed)
    cdef bint ready                      # __init__ ran to its end
    cdef list arrays                     # every array a slot points into, kept alive here
    cdef list hs, cs                     # per layer: (2, B, P) and (2, B, H), row 0 the state
    cdef readonly object dtype

    def __cinit__(self):
        self.layers = NULL
        self.slots = NULL
        self.started = self.ready = False

    def __dealloc__(self):
        PyMem_Free(self.layers)
        PyMem_Free(self.slots)

    def __init__(self, cell, nonlinearity, weights, B, dtype, feedback=()):
        """``weights``: per layer, bottom first, ``{kind: array}`` with the functional API's
        argument names (w_ih, w_hh, and b_ih, b_hh, w_hr, w_peephole, w_fb, g_ih, g_hh, g_c, b_c
        when the layer has them), of ``dtype``, checked as the functional API's forward checks them;
        ``nonlinearity``: the Elman RNN's "tanh" or "relu", None for the other cells;
        ``feedback``: (source, target) pairs, as the stack functions take them."""
        if self.started:
            raise RuntimeError("a Stepper is initialized once (even when that failed): make a "
                               "new one")
        self.started = True    # before anything can fail: a failed __init__ counts too
        # The arguments pick the kernel and the sizes it reads every array with: check them
        # all before anything is allocated.
        check_choice("cell", cell, tuple(CELLS))
        if cell == "rnn":
            check_choice("nonlinearity", nonlinearity, ("tanh", "relu"))
        elif nonlinearity is not None:
            raise ValueError(f"nonlinearity is the Elman RNN's ('tanh' or 'relu'); a {cell} "
                             f"stepper takes None, got {nonlinearity!r}")
        B = check_int("B", B, 1)
        dtype = check_dtype(dtype)
        if len(weights) == 0:
            raise ValueError("weights must hold at least one layer's, got none")
        feedback = check_feedback(feedback, len(weights))
        if feedback and not CELLS[cell].feedback:
            raise ValueError(f"feedback must be empty for the {cell} cell, which runs in no "
                             f"stack with feedback, got {list(feedback)}")
        checked, below = [], None         # below: the output width of the layer below
        for l, w in enumerate(weights):
            n_sources = sum(1 for _, target in feedback if target == l)
            checked.append(_stepper_weights(cell, nonlinearity, l, w, dtype, below, n_sources))
            below = checked[l]["w_hh"].shape[1]
        # The kernel reads a source's outputs with its target's width: a stack's layers share it.
        widths = [w["w_hh"].shape[1] for w in checked]
        for source, target in feedback:
            if widths[source] != widths[target]:
                raise ValueError(f"feedback pair {(source, target)}: layer {source} has "
                                 f"{widths[source]} outputs and layer {target} {widths[target]}; "
                                 f"the layers of a stack with feedback must have the same "
                                 f"output size")
        self.n_layers = len(checked)
        self.layers = <fl_layer *>PyMem_Malloc(self.n_layers * sizeof(fl_layer))
        self.slots = <void **>PyMem_Malloc(self.n_layers * FL_N_SLOTS * sizeof(void *))
        if self.layers == NULL or self.slots == NULL:
            raise MemoryError("no memory for the stepper's layer descriptions")
        self.dtype = dtype
        self.f64 = self.dtype == np.float64
        self.B = B
        self.arrays, self.hs, self.cs = [], [], []
        one_step = Batch(np.full(1, B, np.int64), B, padded=False)
        below = None                      # the layer below's new h: this layer's input
        for l, w in enumerate(checked):
            desc = _layer(cell, nonlinearity, one_step, w["w_ih"], w["w_hh"], w.get("w_hr"),
                          w.get("w_peephole"))
            GH, H, P = w["w_hh"].shape[0], desc["H"], desc["P"]
            if "b_ih" not in w:
                w["b_ih"] = w["b_hh"] = np.zeros(GH, self.dtype)
            hs = np.zeros((2, B, P), self.dtype)
            arrays = {FL_W_IH: w["w_ih"], FL_W_HH: w["w_hh"], FL_B_IH: w["b_ih"],
                      FL_B_HH: w["b_hh"], FL_W_HR: w.get("w_hr"),
                      FL_W_PEEPHOLE: w.get("w_peephole"), FL_X: below, FL_HS: hs}
            saved = CELLS[cell].saved
            if "cs" in saved:
                arrays[<int>FL_CS] = np.zeros((2, B, H), self.dtype)
            if "gates" in saved:
                arrays[FL_GATES] = np.empty((B, GH), self.dtype)
            if "hn" in saved:
                arrays[FL_HN] = np.empty((B, H), self.dtype)
            if "normed" in saved:
                arrays.update(zip(_LN_SLOTS, (w[kind] for kind in LN_WEIGHTS)))
                arrays[FL_NORMED] = np.empty((B, 9 * H), self.dtype)
                arrays[FL_RSTD] = np.empty((B, 3), self.dtype)
            if feedback:
                arrays[FL_W_FB] = w.get("w_fb")
                desc.update(stacked=l > 0,
                            F=P * sum(1 for _, target in feedback if target == l))
            desc["stream"] = True
            _describe(&self.layers[l], desc)
            arrays[FL_WORK] = np.empty(fl_work_size(&self.layers[l], 0, self.f64), self.dtype)
            _fill_slots(arrays, &self.slots[l * FL_N_SLOTS], self.f64)
            self.arrays.append(arrays)
            self.hs.append(hs)
            self.cs.append(arrays.get(FL_CS))
            below = hs[1]
        self.I, self.P = self.layers[0].I, self.layers[self.n_layers - 1].P
        self.pairs = np.array(feedback, np.int64).reshape(-1)
        self.stack.L = self.n_layers if feedback else 0
        self.stack.layers = self.layers
        self.stack.n_feedback = len(feedback)
        self.stack.feedback = &self.pairs[0] if feedback else NULL
        self.ready = True

    def step(self, x, out=None):
        """Run one step: ``x`` (B, input_size) in, the top layer's new h (B, P) out, written
        into ``out`` when it is given (a writable C-contiguous array of that shape and dtype)."""
        cdef int l
        if not self.ready:
            raise RuntimeError("the Stepper cannot step: its __init__ did not run, or failed")
        cdef void *x_ptr = self._data(x, self.I, False)
        if x_ptr == NULL:                 # not an array the kernel can read as it is
            x = self._check("x", x, (self.B, self.I))
            x_ptr = self._data(x, self.I, False)
        if out is None:
            out = np.empty((self.B, self.P), self.dtype)
        cdef void *out_ptr = self._data(out, self.P, True)
        if out_ptr == NULL:
            raise ValueError(f"out must be a writable C-contiguous array of shape "
                             f"{(self.B, self.P)} and dtype {self.dtype}, got {describe(out)}")
        # A layer whose steps split their units between the threads (as a long call's do at
        # such a batch), or deal out a batch of enough rows and work, runs on the kernels'
        # threads; the others on one (fl_call_threads). A stack's step deals out its rows when
        # one of its layers would (fl_stack_call_threads).
        cdef int threads = get_num_threads()
        if self.stack.L:
            _note_threads(fl_stack_call_threads(&self.stack, threads))
        else:
            for l in range(self.n_layers):
                _note_threads(fl_call_threads(&self.layers[l], threads))
        with nogil:
            self.slots[<int>FL_X] = x_ptr
            if self.stack.L:
                self._step_stack(threads)
            else:
                for l in range(self.n_layers):
                    self._step_layer(l, threads)
            for l in range(self.n_layers):    # the first step packed them into the scratch
                self.layers[l].prepacked = True
            memcpy(out_ptr, self.slots[(self.n_layers - 1) * FL_N_SLOTS + <int>FL_HS],
                   <size_t>(self.B * self.P) * (8 if self.f64 else 4))
            self.slots[<int>FL_X] = NULL  # the caller's x is not ours to keep
        return out

    cdef void *_data(self, a, int64_t width, bint writable) except? NULL:
        """The data of ``a`` if it is a C-contiguous (B, width) array of the stepper's dtype
        (and writable if asked), else NULL: the buffer protocol checks it all at once."""
        cdef const float[:, ::1] r32
        cdef const double[:, ::1] r64
        cdef float[:, ::1] w32
        cdef double[:, ::1] w64
        cdef bint ok
        cdef void *p
        try:
            if self.f64 and writable:
                w64 = a
                ok, p = w64.shape[0] == self.B and w64.shape[1] == width, <void *>&w64[0, 0]
            elif self.f64:
                r64 = a
                ok, p = r64.shape[0] == self.B and r64.shape[1] == width, <void *>&r64[0, 0]
            elif writable:
                w32 = a
                ok, p = w32.shape[0] == self.B and w32.shape[1] == width, <void *>&w32[0, 0]
            else:
                r32 = a
                ok, p = r32.shape[0] == self.B and r32.shape[1] == width, <void *>&r32[0, 0]
        except (ValueError, TypeError, BufferError):
            return NULL
        return p if ok else NULL

    cdef void _step_layer(self, int l, int threads) noexcept nogil:
        """Layer l's step, on as many of ``threads`` as it uses (the kernel's fl_call_threads),
        then its new states become the ones the next step starts from."""
        _layer_kernel(False, self.f64, &self.layers[l], &self.slots[l * FL_N_SLOTS], threads)
        self._carry(l)

    cdef void _step_stack(self, int threads) noexcept nogil:
        """Every layer's step in one call of the stack's kernel, on as many of ``threads`` as it
        uses; then their new states become the ones the next step starts from."""
        cdef int l
        _stack_kernel(False, self.f64, &self.stack, self.slots, threads)
        for l in range(self.n_layers):
            self._carry(l)

    cdef void _carry(self, int l) noexcept nogil:
        """Layer l's new states (row 1 of its hs and cs) into row 0, where the next step reads
        them."""
        cdef fl_layer *layer = &self.layers[l]
        cdef void **s = &self.slots[l * FL_N_SLOTS]
        cdef size_t size = 8 if self.f64 else 4
        cdef size_t h_bytes = <size_t>(layer.B * layer.P) * size
        cdef size_t c_bytes = <size_t>(layer.B * layer.H) * size
        memcpy(s[<int>FL_HS], <char *>s[<int>FL_HS] + h_bytes, h_bytes)
        if s[<int>FL_CS] != NULL:
            memcpy(s[<int>FL_CS], <char *>s[<int>FL_CS] + c_bytes, c_bytes)

    def _check(self, name, a, shape):
        """``a`` as a C-contiguous array of the stepper's dtype and ``shape``, or raise."""
        a = as_float_array(name, a, self.dtype, ndim=2)
        expect_shape(name, a, shape, "(batch_size, input_size)")
        return a

    def get_state(self):
        """Copies of the states every layer starts its next step from: a tuple of (h,) or
        (h, c), each (num_layers, B, ·)."""
        states = (np.stack([hs[0] for hs in self.hs]),)
        if self.cs[0] is not None:
            states += (np.stack([cs[0] for cs in self.cs]),)
        return states

    def set_state(self, states):
        """Start the next step from ``states``, as :meth:`get_state` returns them (checked by
        the caller)."""
        for k, buffers in enumerate((self.hs, self.cs)[:len(states)]):
            for l, buf in enumerate(buffers):
                buf[0] = states[k][l]
