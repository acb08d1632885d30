"""Throughput of two Python threads, each training its own layer, against one thread.

The kernels release the GIL, so two threads should get about twice one thread's throughput on
two free cores (the Python around each kernel call still takes turns). Each thread owns an
LSTM and runs ``--rounds`` forward and backward calls on it, the kernels on one OpenMP thread
each (fastlstm.set_num_threads(1)). One measurement: one thread alone, then two at once; the
ratio is calls per second with two threads over calls per second with one. It is repeated
``--repeats`` times, and each ratio and their median are printed.

Usage: python benchmarks/two_threads.py [--repeats 7] [--rounds 100]
Run it on an otherwise idle machine: anything else running takes cores from the two threads.
"""
import argparse
import statistics
import threading
import time

import numpy as np

import fastlstm

T, B, I, H = 50, 16, 128, 128


def make_job(seed):
    """A layer and its data; calling the job runs one forward and one backward."""
    rng = np.random.default_rng(seed)
    lstm = fastlstm.LSTM(I, H, dtype=np.float32, seed=seed)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)

    def job():
        lstm(x)
        lstm.backward(dy)
    return job


def calls_per_second(jobs, rounds):
    """Run each job ``rounds`` times, each job in its own thread, all starting together."""
    start = threading.Barrier(len(jobs) + 1)

    def loop(job):
        start.wait()
        for _ in range(rounds):
            job()

    threads = [threading.Thread(target=loop, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return len(jobs) * rounds / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    fastlstm.set_num_threads(1)
    jobs = [make_job(seed) for seed in (0, 1)]
    for job in jobs:
        job()   # warm up: first-touch of the buffers, the BLAS's own set-up
    ratios = []
    for _ in range(args.repeats):
        one = calls_per_second(jobs[:1], args.rounds)
        two = calls_per_second(jobs, args.rounds)
        ratios.append(two / one)
        print(f"one thread {one:7.1f} calls/s, two threads {two:7.1f} calls/s, "
              f"ratio {two / one:.2f}", flush=True)
    print(f"LSTM T={T} B={B} I={I} H={H} float32, forward + backward, {args.rounds} rounds: "
          f"median ratio {statistics.median(ratios):.2f} of {args.repeats}")


if __name__ == "__main__":
    main()
