"""Thread count and thread safety of the native backend.

Results must be bitwise identical for every thread count (each batch row belongs to one thread,
reductions run in a fixed order), so everything here is compared with np.array_equal. 3 threads is
more than this machine's cores on purpose. Every test that changes the thread count restores it
(the restore_threads fixture).
"""
import copy
import ctypes
import functools
import itertools
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import (DTYPES, KINDS, f_backward, f_forward, grads_copy, layer_backward,
                     layer_forward, layer_problem, make_layer, n_gates, random_problem,
                     run_python)

import fastlstm

THREADS = (1, 2, 3)
OPENMP = fastlstm.native.build_info()["openmp"]


def native_run(kind, problem, batch_sizes=None):
    """Forward and backward of one functional problem: every output and gradient, in a list."""
    x, states, weights, dy, dstates = problem
    y, finals, ctx = f_forward("native", kind, x, states, weights, batch_sizes)
    dx, dinits, dweights = f_backward("native", kind, ctx, dy, dstates)
    return [y, *finals, dx, *dinits, *dweights]


def assert_bitwise_equal(results, what):
    base = results[THREADS[0]]
    for n in THREADS[1:]:
        assert len(results[n]) == len(base)
        for k, (a, b) in enumerate(zip(results[n], base)):
            assert a.dtype == b.dtype and np.array_equal(a, b), (
                f"{what}[{k}] differs between 1 and {n} threads "
                f"(max diff {np.abs(a - b).max():.3g})")


# B = 1 at H = 128: every cell's forward and backward split their steps by units
# (kernels_common.h, splits_units) on a machine of two processors or more.
@pytest.mark.parametrize("shape", [(20, 1, 8, 64), (20, 1, 8, 128), (20, 5, 8, 64),
                                   (20, 32, 8, 64)],
                         ids=lambda s: "T{}-B{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", KINDS)
def test_functional_results_do_not_depend_on_threads(kind, dtype, shape, rng, restore_threads):
    problem = random_problem(rng, kind, *shape, dtype=dtype)
    results = {}
    for n in THREADS:
        fastlstm.set_num_threads(n)
        results[n] = native_run(kind, problem)
    assert_bitwise_equal(results, f"{kind} outputs and gradients")


# A stream's step deals a batch of FUSE_ROWS (4) rows a part or more out to the threads.
DEALT = 4 * fastlstm.native.build_info()["parts"]


# B = 1 at H = 512: a stream's steps split their units between the threads; B = DEALT at
# H = 128: they deal the batch out to them, as a long call does, and so does a stack with
# feedback, whose step is one call of the stack's kernel.
@pytest.mark.parametrize("feedback", [None, "top"])
@pytest.mark.parametrize("B, H", [(1, 64), (1, 512), (3, 64), (DEALT, 128)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", KINDS)
def test_stream_results_do_not_depend_on_threads(kind, dtype, B, H, feedback, rng,
                                                 restore_threads):
    layer = make_layer(kind, 8, H, num_layers=2, dtype=dtype, seed=0, feedback=feedback).eval()
    x = rng.standard_normal((6, B, 8)).astype(dtype)
    results = {}
    for n in THREADS:
        fastlstm.set_num_threads(n)
        stream = layer.stream(B)
        results[n] = [stream.step(x_t) for x_t in x] + list(
            stream.state if isinstance(stream.state, tuple) else (stream.state,))
    assert_bitwise_equal(results, f"{kind} stream outputs and states")


@pytest.mark.skipif(not OPENMP or fastlstm.native.build_info()["parts"] < 2,
                    reason="one thread on this machine")
@pytest.mark.parametrize("B, threads", [(1, False), (DEALT, True)])
def test_a_stack_streams_step_starts_threads_only_to_deal_out_rows(B, threads):
    """A stack's loop never splits a step by units: a stream of a stack with feedback starts no
    threads for one row, even where its first layer, alone, would split (H = 256), and does
    for a batch it deals out."""
    code = ("import numpy as np, fastlstm\n"
            f"layer = fastlstm.LSTM(256, 256, num_layers=3, feedback=[(2, 1)]).eval()\n"
            f"stream = layer.stream({B})\n"
            f"x = np.ones(({B}, 256), np.float32)\n"
            "for _ in range(3):\n"
            "    stream.step(x)\n"
            "print(fastlstm.native._threads_started)\n")
    result = run_python(["-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == [str(threads)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", KINDS)
def test_layer_results_do_not_depend_on_threads(kind, dtype, rng, restore_threads):
    layer = make_layer(kind, 8, 32, num_layers=2, bidirectional=True, dtype=dtype, seed=0)
    problem = layer_problem(rng, layer, T=20, B=5)
    results = {}
    for n in THREADS:
        fastlstm.set_num_threads(n)
        layer.zero_grad()
        y, finals = layer_forward(layer, *problem[:2])
        dx, dinits = layer_backward(layer, *problem[2:])
        grads = grads_copy(layer)
        results[n] = [y, *finals, dx, *dinits] + [grads[k] for k in sorted(grads)]
    assert_bitwise_equal(results, f"{kind} layer outputs and gradients")


FLUSH_TO_ZERO_CHILD = """if True:
    import numpy as np, torch, fastlstm
    from helpers import KINDS, random_problem, run_functional

    def run(kind, problem):
        return run_functional("native", kind, problem)[1]

    # Gradients that only the last step injects, through small weights and gates near 1/2, sink
    # past the smallest normal number within the steps: f32's in 200, f64's in 1200.
    rng, jobs = np.random.default_rng(5), []
    for kind in KINDS:
        for dtype, T in ((np.float32, 200), (np.float64, 1200)):
            for B in (1, 4):   # one sequence (split by units in the plain LSTMs), four dealt out
                x, states, weights, dy, dstates = random_problem(rng, kind, T, B, 8, 64, dtype,
                                                                 scale=0.02)
                dy[:-1] = 0
                jobs.append((kind, (x, states, weights, dy, dstates)))
    if not torch.set_flush_denormal(True):
        print("unsupported")
        raise SystemExit
    # OpenMP's threads start with the settings on: those of a torch op on two threads (torch
    # and fastlstm share GNU OpenMP when both link it by its usual name), and fastlstm's own,
    # which matmul_t starts before its first part clears the settings
    torch.set_num_threads(2)
    torch.ones(1 << 22).sum()
    fastlstm.set_num_threads(2)
    fastlstm.native.matmul_t(np.ones((64, 8)), np.ones((8, 8)))
    flushed = {}
    for n in (2, 1):
        fastlstm.set_num_threads(n)
        flushed[n] = [run(*job) for job in jobs]
    tiny = np.float32(1e-38)
    print("caller still flushes:", bool(tiny * np.float32(1e-3) == 0))
    torch.set_flush_denormal(False)
    ieee = [run(*job) for job in jobs]
    print("subnormal in every job:", all(
        any(np.any((a != 0) & (abs(a) < np.finfo(a.dtype).tiny)) for a in out) for out in ieee))
    for n, results in flushed.items():
        for (kind, problem), got, want in zip(jobs, results, ieee):
            for k, (a, b) in enumerate(zip(got, want)):
                if not np.array_equal(a, b):
                    print(f"{n} threads, {kind} {a.dtype} B={problem[0].shape[1]}: output {k} "
                          f"differs from IEEE arithmetic's")
"""


@pytest.mark.skipif(not OPENMP, reason="built without OpenMP: always one thread")
def test_the_callers_flush_to_zero_changes_no_result():
    """Flush-to-zero and denormals-are-zero are settings of each thread, which a caller may turn on
    for speed (torch.set_flush_denormal), and which threads started by such a thread inherit. The
    kernels compute in IEEE arithmetic on every thread of a call whatever they are, and leave the
    caller's as they were: gradients that vanish through the subnormal numbers come out bitwise
    the same with the settings on, on one thread and on two (whose threads started with them on),
    as off. In a child process, so that OpenMP's threads start with them on."""
    pytest.importorskip("torch")
    result = run_python(["-c", FLUSH_TO_ZERO_CHILD], capture_output=True, text=True,
                        timeout=300)
    assert result.returncode == 0, result.stderr
    if result.stdout.strip() == "unsupported":
        pytest.skip("torch.set_flush_denormal is not supported on this CPU")
    assert result.stdout.splitlines() == ["caller still flushes: True",
                                          "subnormal in every job: True"], result.stdout


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None, 2.0])
def test_set_num_threads_rejects_non_positive_integers(bad, restore_threads):
    before = fastlstm.get_num_threads()
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        fastlstm.set_num_threads(bad)
    assert fastlstm.get_num_threads() == before


@pytest.mark.skipif(not OPENMP, reason="built without OpenMP: always one thread")
@pytest.mark.parametrize("n", [1, 2, 3, np.int64(2)])
def test_get_num_threads_returns_the_set_value(n, restore_threads):
    fastlstm.set_num_threads(n)
    assert fastlstm.get_num_threads() == n
    assert fastlstm.native.build_info()["num_threads"] == n


@pytest.mark.skipif(not OPENMP, reason="built without OpenMP: always one thread")
def test_omp_num_threads_sets_the_default():
    env = dict(os.environ, OMP_NUM_THREADS="3")
    result = run_python(["-c", "import fastlstm; print(fastlstm.get_num_threads())"],
                        capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"


def test_concurrent_calls_from_python_threads(restore_threads):
    """The functional API keeps no global state: four Python threads calling the kernels at once
    (each kernel on 2 OpenMP threads) get exactly what sequential calls get."""
    fastlstm.set_num_threads(2)
    rng = np.random.default_rng(99)
    jobs = []
    for k in range(16):
        kind = KINDS[k % len(KINDS)]
        dtype = (np.float32, np.float64)[k % 2]
        shape = (12, int(rng.integers(1, 12)), 6, int(rng.integers(8, 40)))
        jobs.append((kind, random_problem(rng, kind, *shape, dtype=dtype)))
    sequential = [native_run(kind, problem) for kind, problem in jobs]
    assert_four_python_threads_get(sequential, jobs, rounds=2)


def assert_four_python_threads_get(expected, jobs, rounds):
    """native_run of each job (its arguments), from four Python threads at once, ``rounds``
    times, gives bitwise its ``expected`` results."""
    for _ in range(rounds):
        with ThreadPoolExecutor(max_workers=4) as pool:
            concurrent = list(pool.map(lambda job: native_run(*job), jobs))
        for k, (a_list, b_list) in enumerate(zip(concurrent, expected)):
            for a, b in zip(a_list, b_list):
                assert np.array_equal(a, b), f"job {k} differs when run concurrently"


def test_calls_split_by_units_crowding_the_cores(restore_threads):
    """A call of one sequence splits its steps by units (splits_units): each thread runs its own
    parts of a step, and then any part that its thread has not begun (kernels_common.h,
    fl_next_part). Four Python threads running such calls at once, each on 2 OpenMP threads,
    crowd the cores, so the parts fall to the threads in orders that change from run to run: one
    thread runs a whole step, or a whole call, while the other waits for a processor. The results
    are still bitwise those of one thread, for sequences with steps of no rows at the end
    (batch_sizes) and with none at all. Not every job takes two threads: the projected LSTMs
    never split a step, and the one-row calls of the Elman and GRU cells and the empty call are
    too small for a second thread (fl_call_threads), so those check the step bookkeeping on
    one."""
    rng = np.random.default_rng(7)
    T, I, H = 16, 12, 128
    jobs = []
    for k, (kind, dtype) in enumerate(itertools.product(KINDS, (np.float32, np.float64))):
        x, states, weights, dy, dstates = random_problem(rng, kind, T, 1, I, H, dtype)
        jobs.append((kind, (x, states, weights, dy, dstates), None))
        rows = 11 - k % 3 * 5   # 11, 6 or 1 steps with a row, then steps without
        sizes = np.array([1] * rows + [0] * (T - rows), np.int64)
        jobs.append((kind, (x.reshape(T, I)[:rows], states, weights,
                            dy.reshape(T, -1)[:rows], dstates), sizes))
    kind, (x, states, weights, dy, dstates), _ = jobs[0]
    jobs.append((kind, (x[:0, 0], states, weights, dy[:0, 0], dstates), np.zeros(T, np.int64)))
    fastlstm.set_num_threads(1)
    alone = [native_run(kind, problem, sizes) for kind, problem, sizes in jobs]
    fastlstm.set_num_threads(2)
    assert_four_python_threads_get(alone, jobs, rounds=3)


def packed_problem(rng, kind, dtype, bias):
    """A packed batch of B = 6 sequences (those past batch_sizes[0] of length 0) and its
    functional problem: x (N, I), initial states, weights, dy (N, P), final-state gradients;
    and its batch_sizes."""
    T, B, I, H = 9, 6, 5, 16
    batch_sizes = np.sort(rng.integers(1, B + 1, size=T))[::-1].astype(np.int64)
    x, states, weights, dy, dstates = random_problem(rng, kind, T, B, I, H, dtype, bias)
    N = int(batch_sizes.sum())
    flat = (x.reshape(T * B, I)[:N], states, weights, dy.reshape(T * B, -1)[:N], dstates)
    return tuple(np.ascontiguousarray(a) if isinstance(a, np.ndarray) else a
                 for a in flat), batch_sizes


def test_concurrent_calls_on_shared_inputs(restore_threads):
    """Four Python threads run the same jobs at once on the same arrays, each in its own order:
    every kind in both dtypes, forward and backward, on packed batches (some sequences of
    length 0), half of them without biases, each kernel on 2 OpenMP threads. Every result is
    bitwise the sequential one, and no input changes."""
    fastlstm.set_num_threads(2)
    rng = np.random.default_rng(5)
    jobs = [(kind, *packed_problem(rng, kind, dtype, bias=k % 2 == 0))
            for k, (kind, dtype) in enumerate(itertools.product(KINDS, DTYPES))]
    copies = copy.deepcopy(jobs)
    sequential = [native_run(*job) for job in jobs]

    def run_all(shift):
        order = [(k + shift) % len(jobs) for k in range(len(jobs))]
        return {k: native_run(*jobs[k]) for k in order}

    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(run_all, range(4)))
    for results in concurrent:
        for k, got in results.items():
            for a, b in zip(got, sequential[k], strict=True):
                assert np.array_equal(a, b), f"job {k} ({jobs[k][0]}) differs when concurrent"
    for a, b in zip(arrays_in(jobs), arrays_in(copies), strict=True):
        assert np.array_equal(a, b), "an input changed"


def arrays_in(nest):
    """Every array in a nest of tuples and lists, in order."""
    if isinstance(nest, np.ndarray):
        return [nest]
    if isinstance(nest, (tuple, list)):
        return [a for item in nest for a in arrays_in(item)]
    return []


def test_concurrent_layers(restore_threads):
    """Four Python threads each train their own layer at once (2 layers, bidirectional,
    sequences of different lengths; a forward and a backward, three times): outputs, input
    and state gradients and parameter gradients are bitwise those of sequential runs."""
    fastlstm.set_num_threads(2)
    rng = np.random.default_rng(6)
    jobs = []
    for k, kind in enumerate(("rnn_relu", "gru", "lstmp", "lstm_peephole")):
        layer = make_layer(kind, 5, 12, num_layers=2, bidirectional=True, seed=k,
                           dtype=DTYPES[k % 2])
        jobs.append((layer, layer_problem(rng, layer, T=10, B=4), rng.integers(0, 11, 4)))

    def train(job):
        layer, (x, states, dy, dstates), lengths = job
        results = []
        for _ in range(3):
            layer.zero_grad()
            y, finals = layer(x, tuple(states) if len(states) == 2 else states[0], lengths)
            finals = finals if isinstance(finals, tuple) else (finals,)
            dx, dinits = layer_backward(layer, dy, dstates)
            grads = grads_copy(layer)
            results.append([y, *finals, dx, *dinits] + [grads[k] for k in sorted(grads)])
        return results

    sequential = [train(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(train, jobs))
    for job, got, want in zip(jobs, concurrent, sequential, strict=True):
        for got_run, want_run in zip(got, want, strict=True):
            for a, b in zip(got_run, want_run, strict=True):
                assert np.array_equal(a, b), f"{type(job[0]).__name__} differs when concurrent"


# The worker's CPU time that proves a kernel ran without the GIL (the GIL tests below).
WORKER_CPU = 0.02


class ThreadState:
    """The scheduler's state of one thread of this process ("R" running or runnable, "S"
    sleeping, ...), read from /proc without releasing the GIL: through ctypes.PyDLL, whose calls
    keep it, where Python's own file reads release it."""

    def __init__(self, native_id):
        self.fd = os.open(f"/proc/self/task/{native_id}/stat", os.O_RDONLY)
        self.buf = ctypes.create_string_buffer(1024)
        self.pread = ctypes.PyDLL(None).pread
        self.pread.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_long]
        self.pread.restype = ctypes.c_ssize_t

    def __call__(self):
        n = self.pread(self.fd, self.buf, len(self.buf), 0)
        stat = self.buf.raw[:n]
        return stat[stat.rindex(b")") + 2:][:1].decode()   # the field after the name

    def close(self):
        os.close(self.fd)


def spin_while_worker_runs(clock, state):
    """Spin, holding the GIL, while the worker thread (CPU clock ``clock``, scheduler state
    ``state``) is runnable; return the CPU time it used meanwhile, once that reaches WORKER_CPU
    or once the worker sleeps (waits for the GIL)."""
    start = time.clock_gettime(clock)
    while state() == "R" and time.clock_gettime(clock) - start < WORKER_CPU:
        pass
    return time.clock_gettime(clock) - start


def assert_runs_without_the_gil(call):
    """While a worker thread is inside ``call``, the main thread runs Python code: proof that
    the kernel in it released the GIL, with no clock but CPU time and no duration compared.

    CPython is made never to take the GIL from a thread by force (a switch interval of 100 s),
    so the main thread holds it from the moment it gets it until it sleeps. It spins, holding
    it, while it watches the worker's CPU clock. Whatever CPU time the worker uses meanwhile, it
    uses without the GIL: if that reaches WORKER_CPU, the worker was in the kernel (the Python
    around the kernel call cannot run, and numpy's GIL-free copies in it take microseconds).
    When the worker sleeps (its scheduler state is no longer "R"), it waits for the GIL, and
    the main thread sleeps a millisecond to let it have it. A kernel that held the GIL would
    keep the main thread from running at all while it runs. ``call`` must use one OpenMP
    thread, the worker itself, and spend well over WORKER_CPU in each kernel call.
    """
    finished, may_exit = threading.Event(), threading.Event()

    def work():
        call()
        finished.set()
        may_exit.wait()   # its clock and state must stay readable until the main thread is done

    worker = threading.Thread(target=work)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(100)
    try:
        worker.start()
        clock = time.pthread_getcpuclockid(worker.ident)
        state = ThreadState(worker.native_id)
        most = 0.0
        try:
            while most < WORKER_CPU and not finished.is_set():
                most = max(most, spin_while_worker_runs(clock, state))
                time.sleep(0.001)
        finally:
            state.close()
    finally:
        may_exit.set()
        worker.join()
        sys.setswitchinterval(interval)
    assert most >= WORKER_CPU, (
        f"the worker used at most {most * 1e3:.1f} ms of CPU time while the main thread held "
        "the GIL: the kernel held it")


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("kind", KINDS)
def test_kernels_release_the_gil(kind, backward, rng, restore_threads):
    """The functional kernels, forward and backward (see assert_runs_without_the_gil)."""
    fastlstm.set_num_threads(1)
    # Sized so that each call takes > 50 ms even at 130 GFLOP/s, about one core's float64
    # peak on this project's machine (2 T B (I + H) G H = 8.7 GFLOP and more).
    H = 640 if n_gates(kind) == 1 else 320
    x, states, weights, dy, dstates = random_problem(rng, kind, 200, 64, 32, H, dtype=np.float64)
    if backward:
        ctx = f_forward("native", kind, x, states, weights)[2]
        assert_runs_without_the_gil(
            functools.partial(f_backward, "native", kind, ctx, dy, dstates))
    else:
        assert_runs_without_the_gil(
            functools.partial(f_forward, "native", kind, x, states, weights))


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
def test_stream_steps_release_the_gil(kind, rng, restore_threads):
    """A stream's step, which runs every layer in one call, here on one thread (see
    assert_runs_without_the_gil)."""
    fastlstm.set_num_threads(1)
    H = 1024 if n_gates(kind) == 1 else 512    # sized so that each step takes > 100 ms
    stream = make_layer(kind, H, H, num_layers=4, dtype=np.float64, seed=0).stream(512)
    x = rng.standard_normal((512, H))
    assert_runs_without_the_gil(lambda: [stream.step(x) for _ in range(2)])


@pytest.mark.skipif(not OPENMP, reason="built without OpenMP: always one thread")
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in Linux's /proc")
def test_a_call_starts_no_more_threads_than_the_batch_has_parts():
    # set_num_threads is an upper bound: each part of a batch runs on one thread, so a call
    # must not start the other 997 (a thousand threads per call once aborted the process).
    code = """if True:
        import os, numpy as np, fastlstm
        fastlstm.set_num_threads(1000)
        layer = fastlstm.LSTM(16, 64, seed=0)
        x = np.ones((20, 32, 16), np.float32)
        layer(x)
        layer.backward(np.ones((20, 32, 64), np.float32))
        fastlstm.native.matmul_t(np.ones((64, 64)), np.ones((64, 64)))
        print(len(os.listdir("/proc/self/task")))
    """
    result = run_python(["-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    parts = fastlstm.native.build_info()["parts"]
    # the main thread, the parts' OpenMP threads, and the BLAS libraries' own few
    assert int(result.stdout) < parts + 8
