"""Thread count and thread safety of the native backend.

Results must be bitwise identical for every thread count (each batch row belongs to one thread,
reductions run in a fixed order), so everything here is compared with np.array_equal. 3 threads is
more than this machine's cores on purpose. Every test that changes the thread count restores it
(the restore_threads fixture).
"""
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from helpers import (KINDS, f_backward, f_forward, grads_copy, layer_backward, layer_forward,
                     layer_problem, make_layer, n_gates, random_problem)

import fastlstm

THREADS = (1, 2, 3)
OPENMP = fastlstm.native.build_info()["openmp"]


def native_run(kind, problem):
    x, states, weights, dy, dstates = problem
    y, finals, ctx = f_forward("native", kind, x, states, weights)
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


@pytest.mark.parametrize("shape", [(20, 1, 8, 64), (20, 5, 8, 64), (20, 32, 8, 64)],
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
    result = subprocess.run(
        [sys.executable, "-c", "import fastlstm; print(fastlstm.get_num_threads())"],
        capture_output=True, text=True, env=env, timeout=60,
        cwd=Path(__file__).resolve().parents[1])
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
    for _ in range(2):
        with ThreadPoolExecutor(max_workers=4) as pool:
            concurrent = list(pool.map(lambda job: native_run(*job), jobs))
        for k, (a_list, b_list) in enumerate(zip(concurrent, sequential)):
            for a, b in zip(a_list, b_list):
                assert np.array_equal(a, b), f"job {k} differs when run concurrently"



@pytest.mark.parametrize("kind", KINDS)
def test_kernels_release_the_gil(kind, rng, restore_threads):
    """While a native forward runs in one thread, Python code must keep running in another.

    The main thread spins, recording the longest stretch it could not run. A kernel that held
    the GIL would stall it for about the whole call; with the GIL released, the longest stall
    is a scheduling hiccup, far below half the call. One OpenMP thread leaves the second core
    to the spinning thread.
    """
    import threading
    import time
    fastlstm.set_num_threads(1)
    H = 384 if n_gates(kind) == 1 else 128   # sized so that the kernel dominates the call
    x, states, weights, _, _ = random_problem(rng, kind, 400, 64, 32, H, dtype=np.float64)
    call = {}

    def work():
        call["start"] = time.perf_counter()
        f_forward("native", kind, x, states, weights)
        call["end"] = time.perf_counter()

    worker = threading.Thread(target=work)
    longest_stall = 0.0
    worker.start()
    last = time.perf_counter()
    while worker.is_alive():
        now = time.perf_counter()
        longest_stall = max(longest_stall, now - last)
        last = now
    worker.join()
    duration = call["end"] - call["start"]
    assert duration > 0.01, f"the call took {duration * 1e3:.1f} ms: too short to tell"
    assert longest_stall < duration / 2, (
        f"the main thread stalled {longest_stall * 1e3:.1f} ms during a "
        f"{duration * 1e3:.1f} ms kernel call: the GIL was held")


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
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    parts = fastlstm.native.build_info()["parts"]
    # the main thread, the parts' OpenMP threads, and the BLAS libraries' own few
    assert int(result.stdout) < parts + 8
