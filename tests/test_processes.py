"""fastlstm in child processes, after the parent has run the kernels on several threads.

GNU OpenMP (libgomp) is not fork-safe: a child forked after the parent ran a parallel region
inherits the bookkeeping of the parent's pool of threads but none of the threads, and its first
parallel region waits for them forever (seen on this machine, before fastlstm.native guarded
against it: a child of the "fork" start method hung in fl_forward's first parallel region).
fastlstm therefore runs the kernels of such a child on one thread, which needs no parallel
region, and its set_num_threads refuses more; the README advises the "spawn" and "forkserver"
start methods, which start children from a fresh interpreter (forkserver forks them from a
server process that has run no kernel). Here, for the three methods: children compute bitwise
what the parent computed on 2 threads, for every cell, forward and backward, on 2 threads when
spawned or forkserved, on 1 when forked, where asking for 2 raises.

The parent is a fresh interpreter running this file as a script, so that the pytest process
starts no children; a hang makes it fail (and terminate its children) after a timeout.
"""
import multiprocessing
import sys

import numpy as np
import pytest
from helpers import run_python

import fastlstm


def compute(n_threads):
    """Outputs and input gradients of an Elman RNN, a GRU and an LSTM layer on fixed data, on
    n_threads (None: as many as the process has). Every call is large enough to run on two
    threads (the kernels take one below 2^17 FLOPs); the parent checks that it did."""
    if n_threads is not None:
        fastlstm.set_num_threads(n_threads)
    rng = np.random.default_rng(0)
    results = []
    for cls in (fastlstm.RNN, fastlstm.GRU, fastlstm.LSTM):
        layer = cls(6, 64, dtype=np.float64, seed=0)
        x = rng.standard_normal((10, 8, 6))
        y, _ = layer(x)
        results += [y, layer.backward(np.ones_like(y))[0]]
    return results


def child(method):
    """A child's thread count after computing, and what it computed."""
    if method == "fork":
        with pytest.raises(RuntimeError, match="forked after its parent ran the kernels"):
            fastlstm.set_num_threads(2)
        results = compute(None)
    else:
        results = compute(2)
    return fastlstm.get_num_threads(), results


@pytest.mark.skipif(not fastlstm.native.build_info()["openmp"],
                    reason="built without OpenMP: no threads to inherit")
@pytest.mark.parametrize("method, threads", [("spawn", 2), ("forkserver", 2), ("fork", 1)])
def test_children_compute_what_the_parent_computes(method, threads):
    result = run_python([__file__, method], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(threads), "equal"] * 2


def test_a_pool_shares_the_cores_out_through_its_initializer():
    """docs/threads.md's recipe: set_num_threads as a spawn pool's initializer (it must pickle)
    sets each worker's thread count."""
    result = run_python([__file__, "initializer"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "1"]


def threads_of_worker(_):
    return fastlstm.get_num_threads()


if __name__ == "__main__" and sys.argv[1] == "initializer":
    with multiprocessing.get_context("spawn").Pool(
            2, initializer=fastlstm.set_num_threads, initargs=(1,)) as pool:
        print(*pool.map_async(threads_of_worker, range(2)).get(timeout=60))
elif __name__ == "__main__":
    parent = compute(2)
    assert fastlstm.native._threads_started, "the parent's kernels ran on one thread"
    with multiprocessing.get_context(sys.argv[1]).Pool(2) as pool:
        # A timeout here, not only the test's: leaving the pool then terminates the children.
        children = pool.map_async(child, [sys.argv[1]] * 2).get(timeout=60)
    for threads, results in children:
        same = all(np.array_equal(a, b) for a, b in zip(results, parent, strict=True))
        print(threads, "equal" if same else "different")
