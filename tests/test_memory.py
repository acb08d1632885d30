"""Memory stays flat over thousands of native calls: nothing leaks per call.

A fresh interpreter (this file run as a script) calls the functional forward and backward of
every kind in both dtypes, and creates and steps a stream of each (the stepper holds the
binding's one manual allocation), first WARMUP rounds to let numpy's caches and the allocators
reach their working size, then ROUNDS more: 84,000 calls. Its resident set size
(/proc/self/statm) may grow by at most BYTES_PER_CALL bytes per call over those: the size of the
smallest block CPython's allocator hands out, less than anything a call could keep. Measured
while this test was written: 28 to 33 kB in all, 0.4 bytes per call; with a leak added to every
call, 49 bytes per call for a 32-byte malloc, 48 for a Python int, 170 for an empty numpy array,
each three times the bound or more.
"""
import gc
import os

import numpy as np
import pytest
from helpers import KINDS, f_backward, f_forward, make_layer, random_problem, run_python

import fastlstm

WARMUP, ROUNDS = 200, 2000
BYTES_PER_CALL = 16
STATM = "/proc/self/statm"


def rss():
    """The resident set size of this process in bytes."""
    with open(STATM) as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def workload():
    """One round's work as a list of callables, each one call into the native code."""
    rng = np.random.default_rng(0)
    calls = []
    for kind in KINDS:
        for dtype in (np.float32, np.float64):
            x, states, weights, dy, dstates = random_problem(rng, kind, 5, 3, 4, 6, dtype=dtype)
            ctx = f_forward("native", kind, x, states, weights)[2]
            calls.append(lambda k=kind, a=(x, states, weights): f_forward("native", k, *a))
            calls.append(lambda k=kind, a=(ctx, dy, dstates): f_backward("native", k, *a))
            layer = make_layer(kind, 4, 6, dtype=dtype, seed=0)
            calls.append(lambda layer=layer, x=x: layer.stream(3).step(x[0]))
    return calls


def measure():
    """Run the workload; return (calls measured, RSS growth in bytes) over the last ROUNDS."""
    fastlstm.set_num_threads(1)   # OpenMP's wake-ups would dominate calls this small
    calls = workload()
    for _ in range(WARMUP):
        for call in calls:
            call()
    gc.collect()
    before = rss()
    for _ in range(ROUNDS):
        for call in calls:
            call()
    gc.collect()
    return ROUNDS * len(calls), rss() - before


@pytest.mark.skipif(not os.path.exists(STATM), reason="needs Linux's /proc/self/statm")
def test_rss_stays_flat_over_thousands_of_calls():
    # Under tools/sanitize.sh, ASan would keep up to 256 MB of freed blocks in quarantine (to
    # catch their use after free), which reads as growth here: none for this process.
    asan = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=0"]))
    result = run_python([__file__], capture_output=True, text=True,
                        env=dict(os.environ, ASAN_OPTIONS=asan), timeout=600)
    assert result.returncode == 0, result.stderr
    n_calls, growth = map(int, result.stdout.split())
    assert growth <= BYTES_PER_CALL * n_calls, (
        f"RSS grew by {growth} bytes over {n_calls} calls ({growth / n_calls:.1f} bytes per "
        f"call): something leaks")


if __name__ == "__main__":
    print(*measure())
