"""``python -m fastlstm bench``: fastlstm's native backend against PyTorch's CPU layers (when
installed) and, on request, its NumPy reference, side by side.

Sections: the performance goals (training steps and inference forwards, with GFLOP/s and the
share of the machine's measured matrix peak they reach), the peak memory of a training step,
training steps on packed batches of different lengths, the latency of one streaming step, and
PyTorch models before and after ``fastlstm.torch.convert()``.

Every system runs on the same inputs in the same process, with the same thread count, and each
case reports the median over several repeats, the systems taking turns within each repeat. The
ratios are what to read: the machine is shared, and absolute times move with its load.
"""

import json
import math
import os
import platform
import subprocess
import sys
import time
import warnings
from typing import NamedTuple

import numpy as np

from ._blas import cpuinfo
from .cells import cell_of
from .layers import GRU, LSTM, RNN
from .native import build_info, get_isa, get_num_threads, matmul_t, set_isa
from .progress import progress

# The cells a case can name: (fastlstm layer, torch.nn layer or None, constructor arguments).
# "lstmp" projects h to H / 2 (torch runs it without oneDNN); torch has no peepholes.
CELLS = {
    "rnn": (RNN, "RNN", lambda H: {}),
    "gru": (GRU, "GRU", lambda H: {}),
    "lstm": (LSTM, "LSTM", lambda H: {}),
    "lstmp": (LSTM, "LSTM", lambda H: {"proj_size": H // 2}),
    "peephole": (LSTM, None, lambda H: {"peephole": True}),
}

# each kind's gates, from the cell its layer runs (fastlstm.cells)
GATES = {kind: cell_of(layer.cell).gates for kind, (layer, _, _) in CELLS.items()}


class Case(NamedTuple):
    """One measured case: a ``cell`` of CELLS with I = H, a training step (``mode`` "train":
    forward and backward) or an inference forward ("infer"), and the speed-up over PyTorch it is
    meant to reach (``goal``) or the share of the measured matrix peak (``peak_goal``)."""
    cell: str
    T: int
    B: int
    H: int
    dtype: str = "float32"
    mode: str = "train"
    goal: float = None
    peak_goal: float = None

    def label(self):
        kind = "inference" if self.mode == "infer" else "train"
        return (f"{self.cell.upper()} {self.dtype.replace('float', 'f')} {kind} T={self.T} "
                f"B={self.B} I=H={self.H}")

    def gemm_flops(self):
        """The FLOPs of the matrix products: 2 T B (I + H) G H for a forward (the projected
        LSTM: its recurrent and projection products instead), three times that for a training
        step (the forward, the input and recurrent gradients, the weight gradients)."""
        G, T, B, H = GATES[self.cell], self.T, self.B, self.H
        if self.cell == "lstmp":
            P = H // 2
            per_step = (H + P) * G * H + H * P
        else:
            per_step = 2 * H * G * H
        return 2 * T * B * per_step * (3 if self.mode == "train" else 1)


# The goals fastlstm is built to meet on a 2-core machine, 2 threads each (speed-up over torch):
# overall, their geometric mean >= 1.5 and none below 1.0; and the large LSTM training step at
# >= 70% of the machine's float32 matrix peak.
GOALS = [
    Case("lstm", 100, 1, 64, goal=1.5),
    Case("lstm", 100, 16, 128, goal=1.5),
    Case("lstm", 100, 32, 256, goal=1.3),
    Case("lstm", 50, 64, 512, goal=1.0),
    Case("lstm", 100, 32, 256, mode="infer", goal=1.0),
    Case("lstm", 100, 64, 512, mode="infer", goal=1.0),
    Case("gru", 100, 32, 256, goal=3.0),
    Case("rnn", 100, 32, 256, goal=2.0),
    Case("lstm", 100, 32, 256, dtype="float64", goal=3.0),
    Case("lstm", 50, 128, 1024, peak_goal=0.70),
    # against ONNX Runtime (ORT_GEOMEAN_GOAL below): at B=1 fixed costs per step and per call
    Case("lstm", 100, 1, 64, mode="infer"),
    Case("lstm", 100, 1, 256, mode="infer"),
]
GEOMEAN_GOAL = 1.5
# The inference rows against ONNX Runtime (when installed): each at least 1.0x, and their
# geometric mean at least this.
ORT_GEOMEAN_GOAL = 1.3
# The cells ONNX Runtime runs (fastlstm.onnx.to_onnx): all but the projected LSTM.
ORT_CELLS = ("rnn", "gru", "lstm", "peephole")

# Peak memory of a training step: (cell, T, B, I = H), float32.
MEMORY_CASES = [("lstm", 100, 32, 256), ("gru", 100, 32, 256), ("rnn", 100, 32, 256)]

SECTIONS = ("goals", "memory", "packed", "stream", "convert", "feedback", "layernorm")


def median_times(fns, repeat, min_time=0.05):
    """Median seconds of each callable in the dict ``fns`` over ``repeat`` rounds, in each of
    which every one runs in turn: a change in the machine's load during the measurement then
    falls on all of them alike, not on whichever ran last. Each run loops its callable for at
    least min_time (up to 64 calls)."""
    loops = {}
    for name, fn in fns.items():
        fn()  # warm up: first-touch allocation, BLAS buffers, thread pools
        n = 1
        while True:
            start = time.perf_counter()
            for _ in range(n):
                fn()
            if time.perf_counter() - start >= min_time or n >= 64:
                break
            n *= 2
        loops[name] = n
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(loops[name]):
                fn()
            times[name].append((time.perf_counter() - start) / loops[name])
    return {name: float(np.median(t)) for name, t in times.items()}


def median_time(fn, repeat, min_time=0.05):
    """Median seconds of ``fn()`` over ``repeat`` runs (see :func:`median_times`)."""
    return median_times({"fn": fn}, repeat, min_time)["fn"]


# Packed cases: (cell, T, B, I = H), lengths spread evenly over T/2 .. T in a shuffled order.
PACKED_CASES = [("lstm", 100, 32, 256), ("gru", 100, 32, 256)]

# Streaming cases: (cell, B, I, H), one step from Python.
STREAM_CASES = [("lstm", 1, 10, 128), ("lstm", 1, 128, 128), ("gru", 1, 128, 128)]

# PyTorch models before and after fastlstm.torch.convert(): (cell, T, B, I = H).
CONVERT_CASES = [("lstm", 100, 32, 256), ("gru", 100, 32, 256), ("rnn", 100, 32, 256)]

# Feedback from later layers: (cell, T, B, I = H), two layers, the top one fed back to the
# first (feedback="top"), against the same stack without feedback, torch's loop of cells over
# the concatenated inputs, and in a stream of batch B against the plain stack's stream. The
# issue's targets: at least 5x the torch loop, 0.8x the plain stack's speed, and a stream step
# at most 1.3x the plain one's time.
FEEDBACK_CASES = [("lstm", 100, 32, 256), ("gru", 100, 32, 256), ("rnn", 100, 32, 256),
                  ("lstm", 100, 1, 64)]
FEEDBACK_GOALS = {"torch_loop": 5.0, "plain": 0.8, "stream": 1.3}

# The layer-normalised LSTM (LSTM(layer_norm=True)): (T, B, I = H), a training step against the
# plain LSTM's and against the same cell written in PyTorch as a loop over steps with
# torch.nn.functional.layer_norm. The targets: at most 1.3x the plain LSTM's time, and
# at least 3x faster than the torch loop.
LAYER_NORM_CASES = [(100, 32, 256)]
LAYER_NORM_GOALS = {"plain": 1.3, "torch_loop": 3.0}


def spread_lengths(T, B):
    """B lengths from T/2 to T, evenly spaced, in a fixed shuffled order."""
    lengths = np.linspace(T // 2, T, B).round().astype(np.int64)
    return np.random.default_rng(1).permutation(lengths)


def build_of(system):
    """The build of the kernels (fastlstm.native.ISAS) a system "native-<build>" runs in; None
    for the others ("native" runs in the build that is set)."""
    return system[len("native-"):] if system.startswith("native-") else None


def in_build(isa, fn):
    """``fn`` made to run in the kernels' build ``isa``, the build set before restored after."""
    def run():
        before = get_isa()
        set_isa(isa)
        try:
            return fn()
        finally:
            set_isa(before)
    return run


def case_arrays(cell, T, B, H, dtype):
    """What every system of a case runs on: x (T, B, H) and the gradient of y, from seed 0."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, H)).astype(dtype)
    dy = rng.standard_normal((T, B, CELLS[cell][2](H).get("proj_size") or H)).astype(dtype)
    return x, dy


def case_layer(cell, H, dtype, backend="native"):
    """The fastlstm layer of a case of ``cell`` (I = H, its CELLS options, seed 0)."""
    ours, _, options = CELLS[cell]
    return ours(H, H, dtype=dtype, backend=backend, seed=0, **options(H))


def make_step(system, cell, T, B, H, dtype, packed=False):
    """``(forward, train_step)`` callables for one system ("native", "native-<build>",
    "reference", "torch") on fixed random inputs: an inference forward, and a forward plus
    backward. ``packed``: the sequences have the lengths of :func:`spread_lengths` (torch: a
    PackedSequence)."""
    if build_of(system):
        return tuple(in_build(build_of(system), fn)
                     for fn in make_step("native", cell, T, B, H, dtype, packed))
    if system == "onnxruntime":
        return make_ort_forward(cell, T, B, H, dtype, packed), None
    _, theirs, options = CELLS[cell]
    kwargs = options(H)
    x, dy = case_arrays(cell, T, B, H, dtype)
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
    layer = case_layer(cell, H, dtype, backend=system)

    def forward():
        layer.eval()(x, lengths=lengths)

    def train_step():
        layer.train()(x, lengths=lengths)
        layer.backward(dy)
    return forward, train_step


def make_feedback_steps(cell, T, B, H, dtype, feedback="top", num_layers=2):
    """``(train_step, stream_step)`` of a fastlstm ``cell`` stack (I = H, seed 0) with
    ``feedback`` (None: the plain stack): a forward plus backward over (T, B) inputs, and one
    step of its stream of batch B."""
    x, dy = case_arrays(cell, T, B, H, dtype)
    layer = CELLS[cell][0](H, H, num_layers, dtype=dtype, seed=0, feedback=feedback)
    stream, x_t = layer.eval().stream(B), x[0]

    def train_step():
        layer.train()(x)
        layer.backward(dy)
    return train_step, lambda: stream.step(x_t)


def make_torch_feedback_loop(cell, T, B, H, dtype, num_layers=2):
    """A training step of what feedback="top" takes in PyTorch: a Python loop over the steps of
    torch.nn's cells, layer 0's input the step's x followed by the top layer's last output."""
    import torch
    torch.set_num_threads(get_num_threads())
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    make = getattr(torch.nn, f"{CELLS[cell][1]}Cell")
    torch.manual_seed(0)
    cells = [make(2 * H if k == 0 else H, H).to(tdtype) for k in range(num_layers)]
    x, dy = map(torch.from_numpy, case_arrays(cell, T, B, H, dtype))
    lstm = cell == "lstm"

    def train_step():
        h = [torch.zeros(B, H, dtype=tdtype) for _ in cells]
        c = [torch.zeros(B, H, dtype=tdtype) for _ in cells]
        ys = []
        for t in range(T):
            inp = torch.cat([x[t], h[-1]], dim=1)
            for k, module in enumerate(cells):
                if lstm:
                    h[k], c[k] = module(inp, (h[k], c[k]))
                else:
                    h[k] = module(inp, h[k])
                inp = h[k]
            ys.append(inp)
        torch.stack(ys).backward(dy)
    return train_step


def make_layer_norm_steps(T, B, H, dtype):
    """Training steps (forward and backward over (T, B) inputs, I = H, seed 0) of fastlstm's
    LSTM with and without layer_norm: ``(layer_norm_step, plain_step)``."""
    x, dy = case_arrays("lstm", T, B, H, dtype)
    steps = []
    for layer_norm in (True, False):
        layer = LSTM(H, H, dtype=dtype, seed=0, layer_norm=layer_norm)

        def train_step(layer=layer):
            layer(x)
            layer.backward(dy)
        steps.append(train_step)
    return tuple(steps)


def make_torch_layer_norm_loop(T, B, H, dtype):
    """A training step of the layer-normalised LSTM as PyTorch users write it: a loop over the
    steps with torch.nn.functional.layer_norm (haste's LayerNormLSTM's equations), autograd for
    the backward."""
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(get_num_threads())
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    torch.manual_seed(0)
    bound = 1 / H ** 0.5
    w_ih, w_hh = (torch.empty(4 * H, H, dtype=tdtype).uniform_(-bound, bound).requires_grad_()
                  for _ in range(2))
    bias = torch.zeros(4 * H, dtype=tdtype, requires_grad=True)
    g_ih, g_hh = (torch.ones(4 * H, dtype=tdtype, requires_grad=True) for _ in range(2))
    g_c = torch.ones(H, dtype=tdtype, requires_grad=True)
    b_c = torch.zeros(H, dtype=tdtype, requires_grad=True)
    x, dy = map(torch.from_numpy, case_arrays("lstm", T, B, H, dtype))

    def train_step():
        h = c = torch.zeros(B, H, dtype=tdtype)
        # the input side does not depend on the recurrence: one product for every step
        ax = F.layer_norm(x @ w_ih.T, (4 * H,), g_ih) + bias
        ys = []
        for t in range(T):
            i, f, g, o = (ax[t] + F.layer_norm(h @ w_hh.T, (4 * H,), g_hh)).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, (H,), g_c, b_c))
            ys.append(h)
        torch.stack(ys).backward(dy)
    return train_step


def make_ort_forward(cell, T, B, H, dtype, packed=False):
    """An inference forward of the native layer of ``cell`` (seed 0, as make_step's) exported
    with fastlstm.onnx.to_onnx and run by ONNX Runtime on fastlstm's thread count, spinning off
    (fastlstm.onnx.ort_session), on make_step's inputs."""
    from .onnx import ort_session, to_onnx
    session = ort_session(to_onnx(case_layer(cell, H, dtype).eval()), threads=get_num_threads())
    feed = {"x": case_arrays(cell, T, B, H, dtype)[0]}
    if packed:
        feed["lengths"] = spread_lengths(T, B).astype(np.int32)
    return lambda: session.run(None, feed)


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


def stream_systems(cell, with_torch):
    """The systems a streaming case of ``cell`` runs on: native, and when ``with_torch`` and
    torch has the cell, torch with autograd ("torch") and under inference_mode."""
    return ["native"] + ["torch", "torch-inference"] * (with_torch and CELLS[cell][1] is not None)


def make_stream_step(system, cell, B, I, H, dtype):
    """A callable running one streaming step of a one-layer ``cell`` (with its CELLS options),
    returning the new h (B, P): fastlstm's ``layer.stream(B).step``; for "torch" its LSTMCell /
    GRUCell / RNNCell as used by default (parameters requiring grad), and for "torch-inference"
    the same under inference_mode. torch has no projected cell: "lstmp" steps a one-layer
    torch.nn.LSTM with proj_size over one time step, as a torch user streams one. The torch
    module is given the same zero state each step: carried, it would grow an autograd graph
    across steps."""
    ours, theirs, options = CELLS[cell]
    kwargs = options(H)
    x = np.random.default_rng(0).standard_normal((B, I)).astype(dtype)
    if build_of(system):    # a stream runs in the build it was made in
        return in_build(build_of(system),
                        lambda: make_stream_step("native", cell, B, I, H, dtype))()
    if not system.startswith("torch"):
        stream = ours(I, H, dtype=dtype, backend=system, seed=0, **kwargs).stream(B)
        return lambda: stream.step(x)
    if system not in stream_systems(cell, with_torch=True):
        raise ValueError(f"torch has no {cell} cell to stream (it has no peepholes)")
    import torch
    torch.set_num_threads(get_num_threads())
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    tx = torch.from_numpy(x)
    if kwargs:                         # proj_size: the whole module, over one step
        module = getattr(torch.nn, theirs)(I, H, **kwargs).to(tdtype)
        tx = tx[None]
        state = (torch.zeros(1, B, kwargs["proj_size"], dtype=tdtype),
                 torch.zeros(1, B, H, dtype=tdtype))

        def step():
            return module(tx, state)[1][0][0]
    else:
        module = getattr(torch.nn, f"{theirs}Cell")(I, H).to(tdtype)
        h = torch.zeros(B, H, dtype=tdtype)
        state = (h, h.clone()) if cell == "lstm" else h

        def step():
            out = module(tx, state)
            return out[0] if cell == "lstm" else out
    if system == "torch":
        return step

    def inference_step():
        with torch.inference_mode():
            return step()
    return inference_step


# The product the machine's matrix peak is measured on: PEAK_SIZE^3, through fastlstm's BLAS.
PEAK_SIZE = 2048


def matrix_product(dtype, n=PEAK_SIZE):
    """A callable running an n x n x n product through fastlstm's BLAS on its threads (2 n^3
    flops)."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    return lambda: matmul_t(a, b)


def cpuid_hides_avx512(cpu_flags, isas):
    """Whether this process runs as on an AVX2 machine under tools/avx2_machine: its preload
    marked the environment, the kernel lists AVX-512 among the CPU's ``cpu_flags`` and no
    AVX-512 build is among the ``isas`` the kernels' dispatch found (by CPUID) it can run."""
    return (os.environ.get("FASTLSTM_CPUID_HIDES_AVX512") == "1" and "avx512f" in cpu_flags
            and "avx512" not in isas)


def machine(with_torch=True, with_ort=False):
    """What the numbers were measured on (with torch's version when ``with_torch``, ONNX
    Runtime's when ``with_ort``): the CPU by name and, from Linux's /proc/cpuinfo, by x86 family
    and model, which tell one generation from another."""
    fields = cpuinfo() or {}
    info = dict(build_info(), cpu=fields.get("model name", platform.machine()),
                cores=os.cpu_count(), numpy=np.__version__, python=platform.python_version())
    if "cpu family" in fields:
        info["cpu_id"] = {k: fields[k] for k in ("cpu family", "model") if k in fields}
    if cpuid_hides_avx512(fields.get("flags", "").split(), info["isas"]):
        info["cpuid_hides_avx512"] = True
    # What restricts the systems: forced builds, OpenBLAS's kernels, torch's instruction sets.
    info["environment"] = {k: os.environ[k] for k in (
        "FASTLSTM_ISA", "FASTLSTM_BLAS_CORETYPE", "ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY",
        "OMP_NUM_THREADS") if k in os.environ}
    if with_torch:
        import torch
        info["torch"] = torch.__version__
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    if with_ort:
        import onnxruntime
        info["onnxruntime"] = onnxruntime.__version__
    return info


# Run in a fresh process by peak_step_memory: one training step after a warm-up one, with the
# peak resident memory reset in between (Linux: writing 5 to /proc/self/clear_refs). The process
# runs with MALLOC_MMAP_THRESHOLD_ set, so that glibc maps every buffer of 64 KiB or more on its
# own and unmaps it when freed: resident memory then follows the live buffers of numpy and torch
# alike, and neither is credited for memory its allocator kept from the warm-up step.
_MEMORY_PROBE = """
import sys
import numpy as np
from fastlstm.bench import make_step
system, cell, T, B, H = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
step = make_step(system, cell, T, B, H, np.float32)[1]
step()
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS:")
step()
print(status("VmHWM:") - before)
"""


def peak_step_memory(system, cell, T, B, H):
    """Bytes a float32 training step of ``system`` adds at its peak to the resident memory of
    a process that has run one step before (so the layer's gradients and the BLAS's buffers
    already exist): what it saves for backward and its temporaries. Linux only."""
    # The probe must import this fastlstm: it runs in the directory that holds this package,
    # which `python -c` puts first on its sys.path (in a source tree's root, the caller's
    # working directory could hold another fastlstm/, one without a compiled extension).
    home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, system, cell, str(T), str(B),
                             str(H)], capture_output=True, text=True, timeout=600, cwd=home,
                            env=dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536"))
    if result.returncode:
        raise RuntimeError(f"the memory probe failed: {result.stderr[-2000:]}")
    return int(result.stdout.split()[-1])


def saved_for_backward(cell, T, B, H, itemsize=4):
    """Bytes of the gate activations and the states a training step must keep for backward:
    T B H outputs (the Elman cell's derivative needs no more), and for the LSTM and the GRU
    T B (G H) gates and T B H cell states (the GRU: the recurrent part of n)."""
    per_row = H if cell == "rnn" else (GATES[cell] + 2) * H
    return T * B * per_row * itemsize


class _Bench:
    """One run of :func:`run`: the settings, the report it fills and its printed lines."""

    def __init__(self, cases, dtype, repeat, with_reference, with_torch, write, isas,
                 with_ort=False):
        self.cases, self.dtype, self.repeat = cases, dtype, repeat
        self.with_reference, self.with_torch, self.write = with_reference, with_torch, write
        self.with_ort = with_ort
        self.matrices = {}   # dtype name -> matrix_product
        # "native" runs in the build that is set (the run's first); the others beside it
        self.builds = [f"native-{isa}" for isa in isas[1:]]
        self.report = {"machine": machine(with_torch, with_ort), "repeat": repeat,
                       "peak_gflops": {}, "peak_size": PEAK_SIZE, "rows": [],
                       "builds": list(isas)}
        self.threads = f"{get_num_threads()} threads, median of {repeat}"
        others = "".join(f", {isa} beside it" for isa in isas[1:])
        self.emit(f"fastlstm kernels: the {isas[0]} build (native){others}; "
                  f"{self.report['machine']['cpu']}"
                  + (", AVX-512 hidden from CPUID" * self.report["machine"].get(
                      "cpuid_hides_avx512", False)))

    def emit(self, *lines):
        """Print (without breaking the progress bar)."""
        for line in lines:
            self.write(line)

    def systems(self, cell, mode="train"):
        """The systems a case of ``cell`` runs on: native, the other builds asked for, torch when
        asked and it has the cell, ONNX Runtime for an inference forward when it is installed
        and runs the cell, the reference when asked."""
        with_torch = self.with_torch and CELLS[cell][1] is not None
        with_ort = self.with_ort and mode == "infer" and cell in ORT_CELLS
        return (["native"] + self.builds + ["torch"] * with_torch + ["onnxruntime"] * with_ort
                + ["reference"] * self.with_reference)

    def builds_head(self, unit="ms"):
        """The columns of the other builds: the time of each and its ratio to native's."""
        return "".join(f"{build_of(b) + ' ' + unit:>12}{build_of(b) + '/native':>15}"
                       for b in self.builds)

    def builds_cells(self, row, scale=1e3):
        return "".join(f"{row[b] * scale:>12.2f}{row[b] / row['native']:>14.2f}x"
                       for b in self.builds)

    def times(self, systems, cell, T, B, H, dtype, step=1, packed=False, peak=False):
        """Median seconds of a forward (step 0) or training step (step 1) of each system, the
        systems taking turns (see median_times); the slow reference apart, with half the
        repeats. ``peak``: the matrix product of the machine's peak takes its turns too, as
        "matrix"."""
        dt = np.dtype(dtype).type
        fns = {s: make_step(s, cell, T, B, H, dt, packed)[step] for s in systems
               if s != "reference"}
        if peak:
            if dtype not in self.matrices:
                self.matrices[dtype] = matrix_product(dt)
            fns["matrix"] = self.matrices[dtype]
        result = median_times(fns, self.repeat)
        if "reference" in systems:
            fn = make_step("reference", cell, T, B, H, dt, packed)[step]
            result["reference"] = median_time(fn, max(1, self.repeat // 2))
        return result

    # --- goals
    def start_goals(self):
        self.emit(f"\nGoals: training step (forward + backward) or inference forward, "
                  f"{self.threads}; % peak: GFLOP/s against a {PEAK_SIZE}^3 product in "
                  f"fastlstm's BLAS, which takes its turns with the systems",
                  f"{'case':<40}{'native ms':>10}" + self.builds_head()
                  + (f"{'reference ms':>14}{'ref/native':>11}" if self.with_reference else "")
                  + (f"{'torch ms':>10}{'torch/native':>13}{'goal':>7}" if self.with_torch
                     else "")
                  + (f"{'ORT ms':>10}{'ORT/native':>11}" if self.with_ort else "")
                  + f"{'GFLOP/s':>9}{'% peak':>8}")

    def goals_row(self, case):
        row = dict(case._asdict(), section="goals", label=case.label())
        sizes = (case.cell, case.T, case.B, case.H, case.dtype, int(case.mode == "train"))
        systems = self.systems(case.cell, case.mode)
        row.update(self.times(systems, *sizes, peak=True))
        # The machine's peak beside the case: a slower phase of a shared machine falls on both.
        row["peak_gflops"] = 2 * PEAK_SIZE ** 3 / row.pop("matrix") / 1e9
        peaks = self.report["peak_gflops"]
        peaks[case.dtype] = max(peaks.get(case.dtype, 0), row["peak_gflops"])
        line = f"{case.label():<40}{row['native'] * 1e3:>10.2f}" + self.builds_cells(row)
        if self.with_reference:
            line += f"{row['reference'] * 1e3:>14.2f}{row['reference'] / row['native']:>10.1f}x"
        if "torch" in systems:
            row["speedup"] = row["torch"] / row["native"]
            goal = f"{case.goal:.1f}x" if case.goal else "-"
            line += f"{row['torch'] * 1e3:>10.2f}{row['speedup']:>12.2f}x{goal:>7}"
        elif self.with_torch:
            line += f"{'-':>10}{'-':>13}{'-':>7}"
        if "onnxruntime" in systems:
            row["ort_speedup"] = row["onnxruntime"] / row["native"]
            line += f"{row['onnxruntime'] * 1e3:>10.2f}{row['ort_speedup']:>10.2f}x"
        elif self.with_ort:
            line += f"{'-':>10}{'-':>11}"
        row["gflops"] = case.gemm_flops() / row["native"] / 1e9
        row["peak_share"] = row["gflops"] / row["peak_gflops"]
        line += f"{row['gflops']:>9.0f}{row['peak_share'] * 100:>7.0f}%"
        if case.peak_goal:
            line += f"  (goal {case.peak_goal * 100:.0f}% of peak)"
        self.emit(line)
        return row

    def goals_summary(self):
        rows = [r for r in self.report["rows"] if r["section"] == "goals"]
        ratios = [r["speedup"] for r in rows if r.get("goal") and "speedup" in r]
        checks = [f"{r['label']}: {r['speedup']:.2f}x, goal {r['goal']:.1f}x"
                  for r in rows if r.get("goal") and "speedup" in r and r["speedup"] < r["goal"]]
        checks += [f"{r['label']}: {r['peak_share'] * 100:.0f}% of peak, goal "
                   f"{r['peak_goal'] * 100:.0f}%"
                   for r in rows if r.get("peak_goal") and r["peak_share"] < r["peak_goal"]]
        if ratios:
            geomean = math.exp(sum(map(math.log, ratios)) / len(ratios))
            self.report["geomean_speedup"] = geomean
            self.emit(f"geometric mean of the speed-ups: {geomean:.2f}x (goal "
                      f"{GEOMEAN_GOAL:.1f}x), lowest {min(ratios):.2f}x (goal 1.0x)")
        ort = [r["ort_speedup"] for r in rows if "ort_speedup" in r]
        if ort:
            geomean = math.exp(sum(map(math.log, ort)) / len(ort))
            self.report["geomean_ort_speedup"] = geomean
            self.emit(f"against ONNX Runtime: geometric mean {geomean:.2f}x (goal "
                      f"{ORT_GEOMEAN_GOAL:.1f}x), lowest {min(ort):.2f}x (goal 1.0x)")
            checks += [f"{r['label']}: {r['ort_speedup']:.2f}x ONNX Runtime, goal 1.0x"
                       for r in rows if r.get("ort_speedup", 1.0) < 1.0]
        peaks = {dtype: [r["peak_gflops"] for r in rows if r["dtype"] == dtype]
                 for dtype in sorted({r["dtype"] for r in rows})}
        self.emit("Matrix peak beside the cases, GFLOP/s: " + ", ".join(
            f"{dtype} {max(p):.0f} at best, {min(p):.0f} at worst" for dtype, p in peaks.items()))
        if any(r.get("goal") or r.get("peak_goal") for r in rows):
            self.emit("below goal: " + ("; ".join(checks) if checks else "none"))

    # --- memory
    def start_memory(self):
        self.emit("\nPeak memory a float32 training step adds (the process has run one step "
                  "before), against what it must save for backward (gates and states)",
                  f"{'case':<40}{'native MiB':>11}{'torch MiB':>11}{'torch/native':>13}"
                  f"{'saved MiB':>11}")

    def memory_row(self, case):
        cell, T, B, H = case
        row = {"section": "memory", "cell": cell, "T": T, "B": B, "H": H, "dtype": "float32",
               "saved": saved_for_backward(cell, T, B, H)}
        for system in ("native", "torch"):
            row[system] = peak_step_memory(system, cell, T, B, H)
        mib = 2.0 ** 20
        self.emit(f"{cell.upper():<9}T={T:<4}B={B:<4}I=H={H:<17}{row['native'] / mib:>11.1f}"
                  f"{row['torch'] / mib:>11.1f}{row['torch'] / row['native']:>12.2f}x"
                  f"{row['saved'] / mib:>11.1f}")
        return row

    # --- packed batches
    def start_packed(self):
        self.emit(f"\nPacked training step, lengths spread over T/2..T (torch: PackedSequence), "
                  f"{self.dtype}, {self.threads}",
                  f"{'case':<29}{'native ms':>10}" + self.builds_head()
                  + (f"{'reference ms':>14}{'ref/native':>11}" if self.with_reference else "")
                  + (f"{'torch ms':>10}{'torch/native':>13}" if self.with_torch else "")
                  + f"{'native all-T ms':>17}{'packed/all':>12}")

    def packed_row(self, case):
        cell, T, B, H = case
        dtype = self.dtype
        row = {"section": "packed", "cell": cell, "T": T, "B": B, "I": H, "H": H,
               "dtype": dtype}
        systems = self.systems(cell)
        row.update(self.times(systems, cell, T, B, H, dtype, packed=True))
        line = (f"{cell.upper():<9}T={T:<4}B={B:<4}I=H={H:<6}{row['native'] * 1e3:>8.2f}"
                + self.builds_cells(row))
        if self.with_reference:
            line += f"{row['reference'] * 1e3:>14.2f}{row['reference'] / row['native']:>10.1f}x"
        if "torch" in systems:
            line += f"{row['torch'] * 1e3:>10.2f}{row['torch'] / row['native']:>12.2f}x"
        elif self.with_torch:
            line += f"{'-':>10}{'-':>13}"
        row["native_all_T"] = self.times(["native"], cell, T, B, H, dtype)["native"]
        line += f"{row['native_all_T'] * 1e3:>17.2f}{row['native'] / row['native_all_T']:>12.2f}"
        self.emit(line)
        return row

    # --- streaming
    def start_stream(self):
        head = f"{'case':<29}{'native us':>10}" + self.builds_head("us")
        if self.with_torch:
            head += (f"{'torch us':>10}{'torch/native':>14}{'inference us':>14}"
                     f"{'torch/native':>14}")
        self.emit(f"\nStreaming: one step of layer.stream(B).step(x) from Python, {self.dtype}, "
                  f"{self.threads} (torch: its cell with autograd, its default, and under "
                  f"inference_mode)", head)

    def stream_row(self, case):
        cell, B, I, H = case
        dtype = self.dtype
        row = {"section": "stream", "cell": cell, "B": B, "I": I, "H": H, "dtype": dtype}
        dt = np.dtype(dtype).type
        theirs = stream_systems(cell, self.with_torch)[1:]
        systems = ["native"] + self.builds + theirs
        row.update(median_times({s: make_stream_step(s, cell, B, I, H, dt) for s in systems},
                                self.repeat))
        line = (f"{cell.upper():<9}B={B:<4}I={I:<5}H={H:<7}{row['native'] * 1e6:>8.2f}"
                + self.builds_cells(row, 1e6))
        for system in theirs:
            line += f"{row[system] * 1e6:>10.2f}{row[system] / row['native']:>13.2f}x"
        if self.with_torch and not theirs:      # torch has no such cell
            line += f"{'-':>10}{'-':>14}{'-':>10}{'-':>14}"
        self.emit(line)
        return row

    # --- PyTorch models before and after convert()
    def start_convert(self):
        self.emit(f"\nPyTorch model training step (recurrent layer, Linear head, MSE loss), "
                  f"before and after fastlstm.torch.convert(), {self.dtype}, {self.threads}",
                  f"{'case':<29}{'torch.nn ms':>12}{'converted ms':>14}{'speed-up':>10}")

    def convert_row(self, case):
        cell, T, B, H = case
        dtype = self.dtype
        row = {"section": "convert", "cell": cell, "T": T, "B": B, "I": H, "H": H,
               "dtype": dtype}
        row.update(median_times(
            {system: make_torch_model_step(cell, T, B, H, np.dtype(dtype).type, converted)
             for system, converted in (("torch.nn", False), ("fastlstm.torch", True))},
            self.repeat))
        self.emit(f"{cell.upper():<9}T={T:<4}B={B:<4}I=H={H:<6}{row['torch.nn'] * 1e3:>10.2f}"
                  f"{row['fastlstm.torch'] * 1e3:>14.2f}"
                  f"{row['torch.nn'] / row['fastlstm.torch']:>9.2f}x")
        return row

    # --- feedback from later layers
    def start_feedback(self):
        head = (f"{'case':<29}{'feedback ms':>12}{'plain ms':>10}{'plain/fb':>10}"
                + (f"{'torch loop ms':>15}{'loop/fb':>9}" if self.with_torch else "")
                + f"{'stream fb us':>14}{'plain us':>10}{'fb/plain':>10}")
        self.emit(f"\nFeedback from later layers: 2 layers, feedback='top', training step "
                  f"against the plain stack and torch's loop of cells, and a stream step; "
                  f"{self.dtype}, {self.threads}", head)

    def feedback_row(self, case):
        cell, T, B, H = case
        dt = np.dtype(self.dtype).type
        row = {"section": "feedback", "cell": cell, "T": T, "B": B, "I": H, "H": H,
               "dtype": self.dtype}
        (fb_train, fb_stream), (plain_train, plain_stream) = (
            make_feedback_steps(cell, T, B, H, dt, feedback) for feedback in ("top", None))
        fns = {"feedback": fb_train, "plain": plain_train}
        if self.with_torch:
            fns["torch_loop"] = make_torch_feedback_loop(cell, T, B, H, dt)
        row.update(median_times(fns, self.repeat))
        streams = median_times({"feedback": fb_stream, "plain": plain_stream}, self.repeat)
        row.update(stream_feedback=streams["feedback"], stream_plain=streams["plain"])
        row["plain_share"] = row["plain"] / row["feedback"]
        row["stream_ratio"] = streams["feedback"] / streams["plain"]
        line = (f"{cell.upper():<9}T={T:<4}B={B:<4}I=H={H:<6}{row['feedback'] * 1e3:>10.2f}"
                f"{row['plain'] * 1e3:>10.2f}{row['plain_share']:>9.2f}x")
        if self.with_torch:
            row["torch_speedup"] = row["torch_loop"] / row["feedback"]
            line += f"{row['torch_loop'] * 1e3:>15.2f}{row['torch_speedup']:>8.2f}x"
        line += (f"{streams['feedback'] * 1e6:>14.2f}{streams['plain'] * 1e6:>10.2f}"
                 f"{row['stream_ratio']:>9.2f}x")
        goals = FEEDBACK_GOALS
        misses = {"loop/fb": row.get("torch_speedup", math.inf) < goals["torch_loop"],
                  "plain/fb": row["plain_share"] < goals["plain"],
                  "stream": row["stream_ratio"] > goals["stream"]}
        below = [f"{name} goal {goal:.1f}x" for (name, missed), goal
                 in zip(misses.items(), goals.values()) if missed]
        self.emit(line + (f"  (below: {', '.join(below)})" if below else ""))
        return row

    # --- the layer-normalised LSTM
    def start_layernorm(self):
        head = (f"{'case':<24}{'layer_norm ms':>14}{'plain ms':>10}{'ln/plain':>10}"
                + (f"{'torch loop ms':>15}{'loop/ln':>9}" if self.with_torch else ""))
        self.emit(f"\nLSTM(layer_norm=True): training step against the plain LSTM's and a "
                  f"torch loop with F.layer_norm; {self.dtype}, {self.threads}", head)

    def layernorm_row(self, case):
        T, B, H = case
        dt = np.dtype(self.dtype).type
        row = {"section": "layernorm", "cell": "lnlstm", "T": T, "B": B, "I": H, "H": H,
               "dtype": self.dtype}
        fns = dict(zip(("layer_norm", "plain"), make_layer_norm_steps(T, B, H, dt)))
        if self.with_torch:
            fns["torch_loop"] = make_torch_layer_norm_loop(T, B, H, dt)
        row.update(median_times(fns, self.repeat))
        row["plain_ratio"] = row["layer_norm"] / row["plain"]
        line = (f"T={T:<4}B={B:<4}I=H={H:<10}{row['layer_norm'] * 1e3:>12.2f}"
                f"{row['plain'] * 1e3:>10.2f}{row['plain_ratio']:>9.2f}x")
        below = []
        if row["plain_ratio"] > LAYER_NORM_GOALS["plain"]:
            below.append(f"ln/plain goal at most {LAYER_NORM_GOALS['plain']:.1f}x")
        if self.with_torch:
            row["torch_speedup"] = row["torch_loop"] / row["layer_norm"]
            line += f"{row['torch_loop'] * 1e3:>15.2f}{row['torch_speedup']:>8.2f}x"
            if row["torch_speedup"] < LAYER_NORM_GOALS["torch_loop"]:
                below.append(f"loop/ln goal {LAYER_NORM_GOALS['torch_loop']:.1f}x")
        self.emit(line + (f"  (below: {', '.join(below)})" if below else ""))
        return row


def run(cases=GOALS, sections=SECTIONS, dtype=np.float32, repeat=5, with_reference=False,
        with_torch=True, packed_cases=PACKED_CASES, stream_cases=STREAM_CASES,
        convert_cases=CONVERT_CASES, memory_cases=MEMORY_CASES,
        feedback_cases=FEEDBACK_CASES, layer_norm_cases=LAYER_NORM_CASES, out=print, bar=True,
        isas=None):
    """Measure the cases of each of ``sections`` and print their tables. ``cases``: the goal
    table's, Case tuples (or (cell, T, B, H), a training step in ``dtype``); ``dtype``: that of
    the packed, streaming, convert, feedback and layernorm sections. The memory and convert
    sections need torch.
    ``isas``: the builds of the kernels to time side by side (fastlstm.native.set_isa), the
    first as "native" (default: the build that is set alone).

    Returns the report: the machine, its measured matrix peaks (GFLOP/s, by dtype: the best
    measured beside a goal case; each goal row has its own), and the rows of every
    table (times in seconds, memory in bytes); with goals, the geometric mean of the speed-ups.
    ``bar``: a progress bar while it runs, when tqdm is installed (the tables then go to tqdm's
    ``write``, which prints them above the bar, instead of to ``out``)."""
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"sections must be among {', '.join(SECTIONS)}, got {sorted(unknown)}")
    if with_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            with_torch = False
    dtype = np.dtype(dtype).name
    cases = [c if isinstance(c, Case) else Case(*c, dtype=dtype) for c in cases]
    # The memory probe reads Linux's /proc.
    memory = with_torch and sys.platform.startswith("linux")
    todo = {"goals": cases, "memory": memory_cases if memory else [],
            "packed": packed_cases, "stream": stream_cases,
            "convert": convert_cases if with_torch else [], "feedback": feedback_cases,
            "layernorm": layer_norm_cases}
    tasks = [(section, case) for section in SECTIONS if section in sections
             for case in todo[section]]
    write = out
    if bar:
        tasks, tqdm_write = progress(tasks, "bench", leave=False)
        if tqdm_write is not print:      # tqdm is installed
            write = tqdm_write
    isas = list(isas or [get_isa()])
    before = get_isa()
    set_isa(isas[0])
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        with_ort = True
    except ImportError:
        with_ort = False
    bench = _Bench(cases, dtype, repeat, with_reference, with_torch, write, isas, with_ort)
    current = None
    with warnings.catch_warnings():
        # torch warns, once, that it runs a projected LSTM without oneDNN: the table shows that.
        warnings.filterwarnings("ignore", "LSTM with projections is not supported with oneDNN")
        for section, case in tasks:
            if section != current:
                if current == "goals":
                    bench.goals_summary()
                current = section
                getattr(bench, f"start_{section}")()
            bench.report["rows"].append(getattr(bench, f"{section}_row")(case))
    if current == "goals":
        bench.goals_summary()
    set_isa(before)
    return bench.report


def save_json(report, path):
    """Write :func:`run`'s report to ``path`` as JSON."""
    with open(path, "w") as f:
        json.dump(report, f, indent=1)


def plot(report, path):
    """Bar chart of the goal table's speed-ups over torch, with the goals, saved to ``path``
    (needs matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["section"] == "goals" and "speedup" in r]
    if not rows:
        raise ValueError("the report has no goal rows measured against torch to plot")
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    y = np.arange(len(rows))[::-1]
    met = ["tab:green" if r["speedup"] >= (r["goal"] or 1.0) else "tab:red" for r in rows]
    ax.barh(y, [r["speedup"] for r in rows], color=met)
    goals = [(yi, r["goal"]) for yi, r in zip(y, rows) if r["goal"]]
    ax.scatter([g for _, g in goals], [yi for yi, _ in goals], marker="|", s=300, color="black",
               label="goal", zorder=3)
    ax.axvline(1.0, color="gray", linewidth=1)
    ax.set_yticks(y, [r["label"] for r in rows], fontsize=8)
    ax.set_xlabel("speed-up over PyTorch (torch time / fastlstm time)")
    m = report["machine"]
    ax.set_title(f"fastlstm vs torch {m.get('torch', '')}, {m['num_threads']} threads, "
                 f"{m['cpu']}", fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
