"""``python -m fastlstm bench``: a training step (forward + backward) of fastlstm's native
backend against its NumPy reference and, when installed, PyTorch's CPU layers, side by side.

Every system runs on the same inputs in the same process, with the same thread count, and each
case reports the median over several repeats. The ratios are what to read: the machine is
shared, and absolute times move with its load.
"""

import time
import warnings

import numpy as np

from .layers import GRU, LSTM, RNN
from .native import get_num_threads

# The cells a case can name: (fastlstm layer, torch.nn layer or None, constructor arguments).
# "lstmp" projects h to H / 2 (torch runs it without oneDNN); torch has no peepholes.
CELLS = {
    "rnn": (RNN, "RNN", lambda H: {}),
    "gru": (GRU, "GRU", lambda H: {}),
    "lstm": (LSTM, "LSTM", lambda H: {}),
    "lstmp": (LSTM, "LSTM", lambda H: {"proj_size": H // 2}),
    "peephole": (LSTM, None, lambda H: {"peephole": True}),
}

# (cell, T, B, I = H): small, medium and large, the sizes the performance goals name.
DEFAULT_CASES = [
    ("lstm", 100, 1, 64), ("lstm", 100, 16, 128), ("lstm", 100, 32, 256),
    ("rnn", 100, 1, 64), ("rnn", 100, 32, 256), ("gru", 100, 32, 256),
    ("lstmp", 100, 32, 256),
]


def median_time(fn, repeat, min_time=0.05):
    """Median seconds of ``fn()`` over ``repeat`` runs (each run may loop to last min_time)."""
    fn()  # warm up: first-touch allocation, BLAS buffers, thread pools
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        if time.perf_counter() - start >= min_time or loops >= 64:
            break
        loops *= 2
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        times.append((time.perf_counter() - start) / loops)
    return float(np.median(times))


def make_step(system, cell, T, B, H, dtype):
    """``(forward, train_step)`` callables for one system ("native", "reference", "torch") on
    fixed random inputs: an inference forward, and a forward plus backward."""
    ours, theirs, options = CELLS[cell]
    kwargs = options(H)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(dtype)
    dy = rng.standard_normal((T, B, kwargs.get("proj_size") or H)).astype(dtype)
    if system == "torch":
        import torch
        torch.set_num_threads(get_num_threads())
        tdtype = torch.float32 if dtype == np.float32 else torch.float64
        layer = getattr(torch.nn, theirs)(H, H, **kwargs).to(tdtype)
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
        tx_grad = tx.clone().requires_grad_()

        def forward():
            with torch.no_grad():
                layer(tx)

        def train_step():
            layer(tx_grad)[0].backward(tdy)
        return forward, train_step
    layer = ours(H, H, dtype=dtype, backend=system, seed=0, **kwargs)

    def forward():
        layer.eval()(x)

    def train_step():
        layer.train()(x)
        layer.backward(dy)
    return forward, train_step


def run(cases=DEFAULT_CASES, dtype=np.float32, repeat=5, with_reference=True, with_torch=True,
        out=print):
    """Measure every case; print a table and return its rows as dicts (times in seconds)."""
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            with_torch = False
    dtype = np.dtype(dtype).type
    out(f"Training step (forward + backward), {np.dtype(dtype).name}, "
        f"{get_num_threads()} threads, median of {repeat}")
    header = f"{'case':<29}{'native ms':>10}"
    if with_reference:
        header += f"{'reference ms':>14}{'ref/native':>12}"
    if with_torch:
        header += f"{'torch ms':>10}{'torch/native':>14}"
    out(header)
    rows = []
    with warnings.catch_warnings():
        # torch warns, once, that it runs a projected LSTM without oneDNN: the table shows that.
        warnings.filterwarnings("ignore", "LSTM with projections is not supported with oneDNN")
        for case in cases:
            rows.append(_run_case(case, dtype, repeat, with_reference, with_torch, out))
    out("ratios above 1 mean fastlstm native is faster")
    return rows


def _run_case(case, dtype, repeat, with_reference, with_torch, out):
    """Measure and print one row of the table."""
    cell, T, B, H = case
    row = {"cell": cell, "T": T, "B": B, "I": H, "H": H, "dtype": np.dtype(dtype).name}
    row["native"] = median_time(make_step("native", cell, T, B, H, dtype)[1], repeat)
    line = f"{cell.upper():<9}T={T:<4}B={B:<4}I=H={H:<6}{row['native'] * 1e3:>8.2f}"
    if with_reference:
        row["reference"] = median_time(make_step("reference", cell, T, B, H, dtype)[1],
                                       max(1, repeat // 2))
        line += f"{row['reference'] * 1e3:>14.2f}{row['reference'] / row['native']:>11.1f}x"
    if with_torch and CELLS[cell][1] is None:
        line += f"{'-':>10}{'-':>14}"
    elif with_torch:
        row["torch"] = median_time(make_step("torch", cell, T, B, H, dtype)[1], repeat)
        line += f"{row['torch'] * 1e3:>10.2f}{row['torch'] / row['native']:>13.2f}x"
    out(line)
    return row
