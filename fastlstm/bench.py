"""``python -m fastlstm bench``: fastlstm's native backend against its NumPy reference and,
when installed, PyTorch's CPU layers, side by side: a training step (forward + backward) on
batches of equal lengths and on packed batches of different lengths, and the latency of one
streaming step.

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


# Packed cases: (cell, T, B, I = H), lengths spread evenly over T/2 .. T in a shuffled order.
PACKED_CASES = [("lstm", 100, 32, 256), ("gru", 100, 32, 256)]

# Streaming cases: (cell, B, I, H), one step from Python.
STREAM_CASES = [("lstm", 1, 10, 128), ("lstm", 1, 128, 128), ("gru", 1, 128, 128)]

# PyTorch models before and after fastlstm.torch.convert(): (cell, T, B, I = H).
CONVERT_CASES = [("lstm", 100, 32, 256), ("gru", 100, 32, 256), ("rnn", 100, 32, 256)]


def spread_lengths(T, B):
    """B lengths from T/2 to T, evenly spaced, in a fixed shuffled order."""
    lengths = np.linspace(T // 2, T, B).round().astype(np.int64)
    return np.random.default_rng(1).permutation(lengths)


def make_step(system, cell, T, B, H, dtype, packed=False):
    """``(forward, train_step)`` callables for one system ("native", "reference", "torch") on
    fixed random inputs: an inference forward, and a forward plus backward. ``packed``: the
    sequences have the lengths of :func:`spread_lengths` (torch: a PackedSequence)."""
    ours, theirs, options = CELLS[cell]
    kwargs = options(H)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(dtype)
    dy = rng.standard_normal((T, B, kwargs.get("proj_size") or H)).astype(dtype)
    lengths = spread_lengths(T, B) if packed else None
    if system == "torch":
        import torch
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
        torch.set_num_threads(get_num_threads())
        tdtype = torch.float32 if dtype == np.float32 else torch.float64
        layer = getattr(torch.nn, theirs)(H, H, **kwargs).to(tdtype)
        tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)
        tx_grad = tx.clone().requires_grad_()

        def run(inp):
            if lengths is None:
                return layer(inp)[0]
            y = layer(pack_padded_sequence(inp, torch.from_numpy(lengths),
                                           enforce_sorted=False))[0]
            return pad_packed_sequence(y, total_length=T)[0]

        def forward():
            with torch.no_grad():
                run(tx)

        def train_step():
            run(tx_grad).backward(tdy)
        return forward, train_step
    layer = ours(H, H, dtype=dtype, backend=system, seed=0, **kwargs)

    def forward():
        layer.eval()(x, lengths=lengths)

    def train_step():
        layer.train()(x, lengths=lengths)
        layer.backward(dy)
    return forward, train_step


def make_torch_model_step(cell, T, B, H, dtype, converted):
    """A training step of a PyTorch model, the torch.nn recurrent layer of ``cell`` and a Linear
    head on every step's output: forward, MSE loss, backward. ``converted``: the same model after
    ``fastlstm.torch.convert``."""
    import torch
    torch.set_num_threads(get_num_threads())
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    kwargs = CELLS[cell][2](H)
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({
        "rnn": getattr(torch.nn, CELLS[cell][1])(H, H, **kwargs),
        "head": torch.nn.Linear(kwargs.get("proj_size") or H, 1)}).to(tdtype)
    if converted:
        import fastlstm.torch
        fastlstm.torch.convert(model)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, H, generator=gen, dtype=tdtype)
    target = torch.randn(T, B, 1, generator=gen, dtype=tdtype)

    def train_step():
        model.zero_grad()
        y, _ = model["rnn"](x)
        torch.nn.functional.mse_loss(model["head"](y), target).backward()
    return train_step


def make_stream_step(system, cell, B, I, H, dtype):
    """A callable running one streaming step of a one-layer ``cell``: fastlstm's
    ``layer.stream(B).step``; for "torch" its LSTMCell / GRUCell / RNNCell as used by default
    (parameters requiring grad), and for "torch-inference" the same under inference_mode. The
    torch cell is given the same zero state each step: carried, it would grow an autograd graph
    across steps."""
    x = np.random.default_rng(0).standard_normal((B, I)).astype(dtype)
    if not system.startswith("torch"):
        stream = CELLS[cell][0](I, H, dtype=dtype, backend=system, seed=0).stream(B)
        return lambda: stream.step(x)
    import torch
    torch.set_num_threads(get_num_threads())
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    module = getattr(torch.nn, f"{CELLS[cell][1]}Cell")(I, H).to(tdtype)
    tx, h = torch.from_numpy(x), torch.zeros(B, H, dtype=tdtype)
    state = (h, h.clone()) if cell == "lstm" else h
    if system == "torch":
        return lambda: module(tx, state)

    def inference_step():
        with torch.inference_mode():
            return module(tx, state)
    return inference_step


def run(cases=DEFAULT_CASES, dtype=np.float32, repeat=5, with_reference=True, with_torch=True,
        packed_cases=PACKED_CASES, stream_cases=STREAM_CASES, convert_cases=CONVERT_CASES,
        out=print):
    """Measure every case; print the tables and return their rows as dicts (times in
    seconds): the training steps, the packed training steps, the streaming steps, and (with
    torch) PyTorch models before and after fastlstm.torch.convert()."""
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            with_torch = False
    dtype = np.dtype(dtype).type
    threads = f"{np.dtype(dtype).name}, {get_num_threads()} threads, median of {repeat}"
    rows = []
    with warnings.catch_warnings():
        # torch warns, once, that it runs a projected LSTM without oneDNN: the table shows that.
        warnings.filterwarnings("ignore", "LSTM with projections is not supported with oneDNN")
        if cases:
            out(f"Training step (forward + backward), {threads}")
            out(_header(with_reference, with_torch))
            for case in cases:
                rows.append(_run_case(case, dtype, repeat, with_reference, with_torch, out))
        if packed_cases:
            out(f"\nPacked training step, lengths spread over T/2..T (torch: PackedSequence), "
                f"{threads}")
            out(_header(with_reference, with_torch) + f"{'native all-T ms':>17}{'packed/all':>12}")
            for case in packed_cases:
                rows.append(_run_case(case, dtype, repeat, with_reference, with_torch, out,
                                      packed=True))
        if stream_cases:
            out(f"\nStreaming: one step of layer.stream(B).step(x) from Python, {threads}")
            head = f"{'case':<29}{'native us':>10}"
            if with_torch:
                head += (f"{'torch us':>10}{'torch/native':>14}{'inference us':>14}"
                         f"{'torch/native':>14}")
            out(head)
            for case in stream_cases:
                rows.append(_run_stream_case(case, dtype, repeat, with_torch, out))
        if convert_cases and with_torch:
            out(f"\nPyTorch model training step (recurrent layer, Linear head, MSE loss), before "
                f"and after fastlstm.torch.convert(), {threads}")
            out(f"{'case':<29}{'torch.nn ms':>12}{'converted ms':>14}{'speed-up':>10}")
            for case in convert_cases:
                rows.append(_run_convert_case(case, dtype, repeat, out))
    out("ratios above 1 mean fastlstm native is faster; torch's streaming cell runs with "
        "autograd (its default) and under inference_mode")
    return rows


def _header(with_reference, with_torch):
    header = f"{'case':<29}{'native ms':>10}"
    if with_reference:
        header += f"{'reference ms':>14}{'ref/native':>12}"
    if with_torch:
        header += f"{'torch ms':>10}{'torch/native':>14}"
    return header


def _run_case(case, dtype, repeat, with_reference, with_torch, out, packed=False):
    """Measure and print one row of a training-step table (packed: also native on the same
    batch with every sequence T long, and the ratio of the two)."""
    cell, T, B, H = case
    row = {"cell": cell, "T": T, "B": B, "I": H, "H": H, "dtype": np.dtype(dtype).name,
           "packed": packed}
    row["native"] = median_time(make_step("native", cell, T, B, H, dtype, packed)[1], repeat)
    line = f"{cell.upper():<9}T={T:<4}B={B:<4}I=H={H:<6}{row['native'] * 1e3:>8.2f}"
    if with_reference:
        row["reference"] = median_time(make_step("reference", cell, T, B, H, dtype, packed)[1],
                                       max(1, repeat // 2))
        line += f"{row['reference'] * 1e3:>14.2f}{row['reference'] / row['native']:>11.1f}x"
    if with_torch and CELLS[cell][1] is None:
        line += f"{'-':>10}{'-':>14}"
    elif with_torch:
        row["torch"] = median_time(make_step("torch", cell, T, B, H, dtype, packed)[1], repeat)
        line += f"{row['torch'] * 1e3:>10.2f}{row['torch'] / row['native']:>13.2f}x"
    if packed:
        row["native_all_T"] = median_time(make_step("native", cell, T, B, H, dtype)[1], repeat)
        line += f"{row['native_all_T'] * 1e3:>17.2f}{row['native'] / row['native_all_T']:>12.2f}"
    out(line)
    return row


def _run_stream_case(case, dtype, repeat, with_torch, out):
    """Measure and print one row of the streaming table."""
    cell, B, I, H = case
    row = {"cell": cell, "B": B, "I": I, "H": H, "dtype": np.dtype(dtype).name}
    row["native"] = median_time(make_stream_step("native", cell, B, I, H, dtype), repeat)
    line = f"{cell.upper():<9}B={B:<4}I={I:<5}H={H:<7}{row['native'] * 1e6:>8.2f}"
    if with_torch:
        for system in ("torch", "torch-inference"):
            row[system] = median_time(make_stream_step(system, cell, B, I, H, dtype), repeat)
            line += f"{row[system] * 1e6:>10.2f}{row[system] / row['native']:>13.2f}x"
    out(line)
    return row


def _run_convert_case(case, dtype, repeat, out):
    """Measure and print one row of the convert() table."""
    cell, T, B, H = case
    row = {"cell": cell, "T": T, "B": B, "I": H, "H": H, "dtype": np.dtype(dtype).name}
    for system, converted in (("torch.nn", False), ("fastlstm.torch", True)):
        row[system] = median_time(make_torch_model_step(cell, T, B, H, dtype, converted), repeat)
    out(f"{cell.upper():<9}T={T:<4}B={B:<4}I=H={H:<6}{row['torch.nn'] * 1e3:>10.2f}"
        f"{row['fastlstm.torch'] * 1e3:>14.2f}{row['torch.nn'] / row['fastlstm.torch']:>9.2f}x")
    return row
