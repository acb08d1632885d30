"""The adding problem at several lengths: an LSTM against an Elman RNN, trained with fastlstm alone.

Each sequence has T steps of (value, marker); the target is the sum of the two marked values, one
marked in each half. Always answering the mean scores the baseline MSE of 1/6 = 0.167; beating it
takes carrying the first marked value across at least T/2 steps. The LSTM learns that at every
length here; the Elman RNN, whose error signal vanishes over such distances, stays at the
baseline.

    python examples/adding_problem.py                 # T = 50, 100, 200; a few minutes
    python examples/adding_problem.py --lengths 50 --steps 500 --plot adding.png

Shows a progress bar if tqdm is installed and saves a plot if matplotlib is.
"""
import argparse
import time

import numpy as np

from fastlstm import LSTM, RNN
from fastlstm.demo import BASELINE_MSE, Regressor, adding_problem
from fastlstm.progress import progress


def train(T, cell, hidden, batch, steps, lr, seed, record_every):
    """Train one model; return its training-loss curve and its test MSE on 1000 sequences."""
    rng = np.random.default_rng(seed)
    model = Regressor(cell(2, hidden, seed=seed), lr, seed=seed)
    curve, window = [], []
    bar, _ = progress(range(1, steps + 1), f"{cell.__name__} T={T}", leave=False)
    for step in bar:
        window.append(model.train_step(*adding_problem(rng, batch, T)))
        if step % record_every == 0:
            curve.append((step, float(np.mean(window))))
            window = []
    return curve, model.test_mse(*adding_problem(np.random.default_rng(seed + 1), 1000, T))


def plot(curves, path):
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 4), squeeze=False)
    for ax, (T, by_cell) in zip(axes[0], curves.items()):
        for name, curve in by_cell.items():
            ax.plot(*zip(*curve), label=name)
        ax.axhline(BASELINE_MSE, color="gray", linestyle="--", label="baseline 0.167")
        ax.set_yscale("log")
        ax.set_title(f"T = {T}")
        ax.set_xlabel("training step")
        ax.set_ylabel("training MSE")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"plot saved to {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="adding_problem.png", help="PNG path ('' for none)")
    args = parser.parse_args(argv)
    record_every = max(1, args.steps // 50)
    results, curves = {}, {}
    start = time.perf_counter()
    for T in args.lengths:
        for name, cell in (("LSTM", LSTM), ("Elman RNN", RNN)):
            curve, mse = train(T, cell, args.hidden, args.batch, args.steps, args.lr, args.seed,
                               record_every)
            curves.setdefault(T, {})[name] = curve
            results[(T, name)] = mse
            print(f"T={T:<4} {name:<10} test MSE {mse:.4f}  (baseline {BASELINE_MSE:.3f})  "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    if args.plot:
        plot(curves, args.plot)
    return results


if __name__ == "__main__":
    main()
