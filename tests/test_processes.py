"""fastlstm in child processes, after the parent has run the kernels on several threads.

GNU OpenMP (libgomp) is not fork-safe: a child forked after the parent ran a parallel region
inherits the bookkeeping of the parent's pool of threads but none of the threads, and its first
parallel region waits for them forever. Seen on this machine: a child of the "fork" start method
hangs (in libgomp, under fl_forward's first parallel region) at its first kernel call on 2
threads, after the parent ran one on 2 threads. The README therefore advises the "spawn" and
"forkserver" start methods, which start children from a fresh interpreter (forkserver forks
them from a server process that has run no kernel). Here: children started either way compute,
on 2 threads, bitwise what the parent computed on 2 threads, for every cell, forward and
backward.

The parent is a fresh interpreter running this file as a script, so that the pytest process
starts no children; a hang makes it fail (and terminate its children) after a timeout.
"""
import multiprocessing
import subprocess
import sys

import numpy as np
import pytest

import fastlstm


def compute(n_threads):
    """Outputs and input gradients of an Elman RNN, a GRU and an LSTM layer on fixed data."""
    fastlstm.set_num_threads(n_threads)
    rng = np.random.default_rng(0)
    results = []
    for cls in (fastlstm.RNN, fastlstm.GRU, fastlstm.LSTM):
        layer = cls(6, 16, dtype=np.float64, seed=0)
        x = rng.standard_normal((10, 8, 6))
        y, _ = layer(x)
        results += [y, layer.backward(np.ones_like(y))[0]]
    return results


@pytest.mark.skipif(not fastlstm.native.build_info()["openmp"],
                    reason="built without OpenMP: no threads to inherit")
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_children_compute_what_the_parent_computes(method):
    result = subprocess.run([sys.executable, __file__, method], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["equal", "equal"]


if __name__ == "__main__":
    parent = compute(2)
    with multiprocessing.get_context(sys.argv[1]).Pool(2) as pool:
        # A timeout here, not only the test's: leaving the pool then terminates the children.
        children = pool.map_async(compute, [2, 2]).get(timeout=60)
    for child in children:
        same = all(np.array_equal(a, b) for a, b in zip(child, parent, strict=True))
        print("equal" if same else "different")
