"""The adding problem (Hochreiter & Schmidhuber 1997): why LSTMs exist, in under two minutes.

Each sequence has T steps of two inputs: a value drawn uniformly from [0, 1] and a marker that is
1 at exactly two steps, one in each half of the sequence, and 0 elsewhere. The target, read after
the last step, is the sum of the two marked values. Always answering the mean, 1, scores the
variance of that sum, 2/12 = 0.167: a model beats this baseline only by carrying the first marked
value across at least T/2 steps, which is what an Elman network's vanishing gradient forbids and
what the LSTM's cell was made for.
"""

import time

import numpy as np

from . import losses, optim
from .layers import LSTM, RNN
from .linear import Linear

BASELINE_MSE = 2 / 12


def adding_problem(rng, n, T, dtype=np.float32):
    """``n`` sequences of the adding problem: x (T, n, 2) and targets (n,)."""
    values = rng.random((T, n))
    markers = np.zeros((T, n))
    half = T // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, T, n)
    rows = np.arange(n)
    markers[first, rows] = 1
    markers[second, rows] = 1
    x = np.stack([values, markers], axis=2).astype(dtype)
    return x, (values * markers).sum(axis=0).astype(dtype)


class Regressor:
    """A recurrent layer with a linear read-out of its last output, trained with Adam on the
    mean squared error, the gradient's norm clipped to ``clip``."""

    def __init__(self, layer, lr, clip=1.0, seed=None):
        self.layer = layer
        self.head = Linear(layer.hidden_size, 1, dtype=layer.dtype, seed=seed)
        self.head.bias[...] = 1                     # start at the mean target
        self.optimizer = optim.Adam([layer, self.head], lr=lr)
        self.clip = clip

    def predict(self, x):
        y, _ = self.layer(x)
        return self.head(y[-1])[:, 0], y

    def train_step(self, x, target):
        self.layer.train()
        self.head.train()
        pred, y = self.predict(x)
        loss, dpred = losses.mse(pred, target)
        self.optimizer.zero_grad()
        dy = np.zeros_like(y)
        dy[-1] = self.head.backward(dpred[:, None])
        self.layer.backward(dy)
        optim.clip_grad_norm([self.layer, self.head], self.clip)
        self.optimizer.step()
        return loss

    def test_mse(self, x, target):
        self.layer.eval()
        self.head.eval()
        pred, _ = self.predict(x)
        return losses.mse(pred, target)[0]


def run(T=100, hidden=64, batch=64, steps=1500, lr=1e-2, seed=0, report_every=100, out=print):
    """Train an LSTM and an Elman RNN side by side; return their final test MSEs."""
    rng = np.random.default_rng(seed)
    models = {
        "LSTM": Regressor(LSTM(2, hidden, seed=seed), lr, seed=seed),
        "Elman RNN": Regressor(RNN(2, hidden, seed=seed), lr, seed=seed),
    }
    x_test, y_test = adding_problem(rng, 1000, T)
    out(f"The adding problem, T={T}: predict the sum of the two marked values. "
        f"Baseline (always answer 1): MSE {BASELINE_MSE:.3f}")
    out(f"Training an LSTM and an Elman RNN, {hidden} units each, batch {batch}, Adam lr {lr}, "
        f"{steps} steps.")
    out(f"{'step':>6} " + " ".join(f"{name + ' train MSE':>20}" for name in models))
    start = time.perf_counter()
    running = {name: [] for name in models}
    for step in range(1, steps + 1):
        x, target = adding_problem(rng, batch, T)
        for name, model in models.items():
            running[name].append(model.train_step(x, target))
        if step % report_every == 0 or step == steps:
            out(f"{step:>6} " + " ".join(f"{np.mean(running[name]):>20.4f}" for name in models))
            running = {name: [] for name in models}
    results = {name: model.test_mse(x_test, y_test) for name, model in models.items()}
    out(f"\nTest MSE on 1000 new sequences after {time.perf_counter() - start:.0f} s "
        f"(baseline {BASELINE_MSE:.3f}):")
    for name, mse in results.items():
        if mse < 0.01:
            verdict = "solved: it carries the first marked value across the sequence"
        elif mse < BASELINE_MSE / 2:
            verdict = "partly learned it"
        else:
            verdict = "did not learn it: no better than always answering 1"
        out(f"  {name:<10} {mse:.4f}  {verdict}")
    if results["Elman RNN"] >= BASELINE_MSE / 2:
        out(f"The Elman RNN's error signal vanishes over the {T // 2}+ steps between the first "
            "marker and the answer; the LSTM's cell carries it.")
    return results
