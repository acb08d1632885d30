"""One-step-ahead forecasting of a neuron's membrane potential with a GRU, trained with fastlstm.

The series is ``membrane.dat`` from matplotlib's sample data: 12,000 samples of the membrane
potential of a neuron recorded while a step of current is injected. It rests flat for about
1,000 samples, then fires about 60 spikes, each a fast rise and fall a few dozen samples long
between slower ramps, and relaxes to rest again after the current stops. That is why it is the
series here: the naive forecast (the next value is the last one, y_hat_t = y_{t-1}) is already
good on the slow ramps and lags a whole step behind on every spike, while the shape of a spike is
stereotyped, so a model of the recent past can anticipate its rise and fall. matplotlib's other
sample series, ``eeg.dat``, has only 800 samples per channel, too few to learn from.

The first 80% of the series trains, the last 20% (the last spikes and the return to rest) tests.
The series is normalised with the training split's mean and standard deviation. A GRU reads the
changes from each sample to the next, and a linear read-out of its output forecasts the next
change, so the model starts from the naive forecast and learns only the correction. It reads
changes rather than levels because the resting level at the end of the recording sits slightly
above the one at its start: a model of levels carries the training split's resting level into
the test, and does worse than the naive forecast there; a model of changes cannot see such an
offset. It trains on random windows of the training split, from a zero state; the test forecasts
come from one pass over the whole series, each from the values before it only.

    python examples/forecast.py                         # seconds on 2 cores
    python examples/forecast.py --steps 300 --plot ''

Needs matplotlib, for the data; shows a progress bar if tqdm is installed.
"""
import argparse
import sys
import time

import numpy as np

import fastlstm
from fastlstm.progress import progress
from fastlstm import losses, optim

TEST_FRACTION = 0.2    # the end of the series held out for the test


def load_series():
    """The membrane potential, float64 (12,000,)."""
    try:
        from matplotlib import cbook
    except ImportError:
        sys.exit("forecast.py reads its series from matplotlib's sample data: "
                 "pip install matplotlib")
    with cbook.get_sample_data("membrane.dat") as f:
        return np.frombuffer(f.read(), "<f4").astype(np.float64)


class Forecaster:
    """A GRU over the changes of the normalised series z, and a linear read-out of the next
    change: forecast_{t+1} = z_t + step_scale * head(h_t), h_t the GRU's output after reading
    the changes up to z_t - z_{t-1}, each in units of ``step_scale``."""

    def __init__(self, hidden, num_layers, step_scale, seed):
        self.gru = fastlstm.GRU(1, hidden, num_layers, seed=seed)
        self.head = fastlstm.Linear(hidden, 1, seed=seed)
        self.modules = [self.gru, self.head]
        self.step_scale = step_scale

    def changes(self, z):
        """z (T, B) -> the forecast changes z_{t+1} - z_t (T, B), in units of step_scale, from
        the changes up to z_t (the first taken as 0)."""
        x = np.diff(z, axis=0, prepend=z[:1]) / self.step_scale
        y, _ = self.gru(x[:, :, None].astype(np.float32))
        return self.head(y)[:, :, 0]

    def train_step(self, optimizer, z, clip):
        """One Adam step on windows z (T + 1, B); returns the MSE of the model and of the naive
        forecast on them, in units of step_scale^2."""
        target = (np.diff(z, axis=0) / self.step_scale).astype(np.float32)
        loss, dchanges = losses.mse(self.changes(z[:-1]), target)
        optimizer.zero_grad()
        self.gru.backward(self.head.backward(dchanges[:, :, None]))
        optim.clip_grad_norm(self.modules, clip)
        optimizer.step()
        return loss, float(np.mean(np.square(target, dtype=np.float64)))

    def forecast(self, z):
        """The one-step forecasts of z[1:] (a 1-D series) from z[:-1], in one pass."""
        for module in self.modules:
            module.eval()
        changes = self.changes(z[:-1, None])[:, 0]
        for module in self.modules:
            module.train()
        return z[:-1] + self.step_scale * changes


def plot(series, naive, model, first, length, path):
    """The series and both forecasts over ``length`` steps from index ``first``."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    t = np.arange(first, first + length)
    fig = Figure(figsize=(10, 4.5))
    ax = fig.subplots()
    ax.plot(t, series[t], color="black", linewidth=2.5, alpha=0.35, label="membrane potential")
    ax.plot(t, naive[t], marker=".", linewidth=1, label="naive forecast (last value)")
    ax.plot(t, model[t], marker=".", linewidth=1, label="GRU forecast")
    ax.set_xlabel("sample")
    ax.set_ylabel("potential")
    ax.set_title("One-step-ahead forecasts on the test split")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot saved to {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=100, help="steps per training window")
    parser.add_argument("--batch", type=int, default=32, help="windows per step")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--clip", type=float, default=1.0, help="gradient norm limit")
    parser.add_argument("--report-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="forecast.png", help="PNG path ('' for none)")
    parser.add_argument("--plot-length", type=int, default=120,
                        help="test steps to plot, from the start of the test split")
    args = parser.parse_args(argv)

    series = load_series()
    split = len(series) - int(len(series) * TEST_FRACTION)
    mean, std = series[:split].mean(), series[:split].std()
    z = (series - mean) / std
    model = Forecaster(args.hidden, args.layers, np.diff(z[:split]).std(), args.seed)
    optimizer = optim.Adam(model.modules, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    print(f"membrane.dat: {len(series):,} samples; training on the first {split:,}, testing on "
          f"the last {len(series) - split:,}")
    print(f"GRU {args.hidden} units x {args.layers} layer(s), windows of {args.seq_len} x "
          f"{args.batch}, Adam lr {args.lr}, {args.steps} steps")

    offsets = np.arange(args.seq_len + 1)
    window_model, window_naive = [], []
    start = time.perf_counter()
    steps, write = progress(range(1, args.steps + 1), "training", unit="step")
    for step in steps:
        starts = rng.integers(0, split - args.seq_len, args.batch)
        model_mse, naive_mse = model.train_step(optimizer, z[starts + offsets[:, None]],
                                                args.clip)
        window_model.append(model_mse)
        window_naive.append(naive_mse)
        if step % args.report_every == 0 or step == args.steps:
            write(f"step {step:>5}  training MSE relative to the naive forecast "
                  f"{np.mean(window_model) / np.mean(window_naive):.3f}  "
                  f"{time.perf_counter() - start:.0f} s")
            window_model, window_naive = [], []
    seconds = time.perf_counter() - start

    # forecasts[t] is the forecast of series[t] made from series[:t]
    forecasts = np.concatenate([[np.nan], model.forecast(z) * std + mean])
    naive = np.concatenate([[np.nan], series[:-1]])
    test = slice(split, None)
    model_mse = float(np.mean((forecasts[test] - series[test]) ** 2))
    naive_mse = float(np.mean((naive[test] - series[test]) ** 2))
    print(f"Test MSE over {len(series) - split:,} steps: GRU {model_mse:.3e}, naive "
          f"{naive_mse:.3e}, ratio {model_mse / naive_mse:.3f} ({seconds:.0f} s of training)")
    if args.plot:
        plot(series, naive, forecasts, split, min(args.plot_length, len(series) - split),
             args.plot)
    return {"steps": args.steps, "model_mse": model_mse, "naive_mse": naive_mse,
            "ratio": model_mse / naive_mse, "seconds": seconds}


if __name__ == "__main__":
    main()
