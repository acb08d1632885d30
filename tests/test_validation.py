"""The checks of every public entry point beyond test_errors.py's: what cannot become an array of
numbers, sizes that cannot be allocated, contexts whose arrays were replaced, the BLAS's 32-bit
sizes, the toolkit's hyperparameters; and inputs in any memory layout, which must work.

Each bad call must raise the documented exception (TypeError, ValueError, MemoryError for a size
that cannot be allocated) with a message that names the argument and says what it got.
"""
import os
import re
import textwrap

import numpy as np
import pytest
from helpers import BrokenTensor, f_backward, f_forward, random_problem, run_python

import fastlstm
from fastlstm import losses, native, optim
from fastlstm._functional import Batch

F32 = np.float32
RAGGED = [[1.0, 2.0], [3.0]]


# ---------------------------------------------------------------- values that are not arrays

NOT_ARRAYS = [(RAGGED, r"must be an array, got a list of 2 items"),
              ({"a": 1}, r"must be an array of numbers, got dict \{'a': 1\}"),
              (BrokenTensor(), r"must be an array, got BrokenTensor")]


def layer_calls():
    """(argument name, call with the bad value) for every array argument of the layers, the
    functional API and the toolkit."""
    lstm = fastlstm.LSTM(3, 4)
    x = np.zeros((2, 1, 3), F32)
    h = np.zeros((1, 1, 4), F32)
    lstm(x)
    stream = fastlstm.GRU(3, 4).stream(1)
    linear = fastlstm.Linear(3, 2)
    linear(np.zeros((1, 3), F32))
    w = np.zeros((4, 3))
    ctx = native.rnn_forward(np.zeros((2, 1, 3)), None, w, np.zeros((4, 4)), None, None)[2]
    return [
        ("x", lambda bad: lstm(bad)),
        (r"hx\[0\]", lambda bad: lstm(x, (bad, h))),
        (r"hx\[1\]", lambda bad: lstm(x, (h, bad))),
        ("dy", lambda bad: lstm.backward(bad)),
        (r"dhx\[1\]", lambda bad: lstm.backward(None, (h, bad))),
        (r"state_dict\['bias_hh_l0'\]",
         lambda bad: lstm.load_state_dict({**lstm.state_dict(), "bias_hh_l0": bad})),
        (r"state\[0\]", lambda bad: fastlstm.LSTM(3, 4).stream(1).reset((bad, h[0]))),
        ("x", lambda bad: stream.step(bad)),
        ("x", lambda bad: linear(bad)),
        ("dy", lambda bad: linear.backward(bad)),
        ("pred", lambda bad: losses.mse(bad, np.zeros(2))),
        ("target", lambda bad: losses.mse(np.zeros(2), bad)),
        ("labels", lambda bad: losses.cross_entropy(np.zeros((2, 3)), bad)),
        ("x", lambda bad: native.rnn_forward(bad, None, w, np.zeros((4, 4)), None, None)),
        ("w_ih", lambda bad: native.rnn_forward(np.zeros((2, 1, 3)), None, bad,
                                                np.zeros((4, 4)), None, None)),
        ("dh_n", lambda bad: native.rnn_backward(ctx, None, bad)),
    ]


@pytest.mark.parametrize("bad, got", NOT_ARRAYS, ids=["ragged", "dict", "fake tensor"])
def test_what_cannot_be_an_array_of_numbers_is_named(bad, got):
    for name, call in layer_calls():
        with pytest.raises(TypeError, match=rf"^{name} {got}"):
            call(bad)


def test_lengths_that_are_not_an_array_of_numbers():
    layer = fastlstm.RNN(3, 4)
    x = np.zeros((2, 1, 3), F32)
    with pytest.raises(TypeError, match=r"lengths must be an array of numbers, got dict"):
        layer(x, lengths={0: 1})
    with pytest.raises(TypeError, match=r"lengths must be an array, got BrokenTensor"):
        layer(x, lengths=BrokenTensor())


@pytest.mark.parametrize("name, value", [("backend", ["native"]), ("backend", np.array([1])),
                                         ("nonlinearity", np.array(["tanh", "relu"])),
                                         ("recurrent_init", ["uniform"])])
def test_choices_that_are_not_strings(name, value):
    """An unhashable or array value gets the argument's own message, not NumPy's or Python's
    complaint about hashing or about the truth value of an array."""
    with pytest.raises(ValueError, match=rf"{name} must be .* got " + re.escape(repr(value))):
        fastlstm.RNN(3, 4, **{name: value})


# ---------------------------------------------------------------- 0-D arrays stay 0-D


def test_linear_reports_a_0d_input_as_it_is():
    with pytest.raises(ValueError, match=r"x must have in_features=3 entries on its last "
                                         r"axis, got shape \(\)"):
        fastlstm.Linear(3, 2)(np.float32(1))


def test_cross_entropy_refuses_0d_logits():
    with pytest.raises(ValueError, match=r"logits must be \(\.\.\., classes\).*got shape \(\)"):
        losses.cross_entropy(np.float64(2), 0)


def test_mse_of_0d_arrays():
    """(3 - 1)^2 = 4, and its gradient 2 (3 - 1) = 4, as a 0-D array like pred."""
    loss, grad = losses.mse(np.float64(3), np.float64(1))
    assert loss == 4 and grad.shape == () and grad == 4


# ---------------------------------------------------------------- packed batches


@pytest.mark.parametrize("backend", [native, fastlstm.reference], ids=["native", "reference"])
def test_batch_sizes_whose_int64_sum_wraps_around(backend):
    """17 steps of 2^60 sequences sum to 2^64 + 2^60, which int64 wraps to 2^60: the rows of
    this x (zero features, so no memory). The sum must be exact, and refused."""
    x = np.empty((2**60, 0), F32)
    with pytest.raises(ValueError, match=r"x must have sum\(batch_sizes\) = "
                                         rf"{17 * 2**60} rows, got {2**60}"):
        backend.rnn_forward(x, None, np.zeros((4, 0), F32), np.zeros((4, 4), F32), None, None,
                            batch_sizes=np.full(17, 2**60))


# ---------------------------------------------------------------- contexts


def context(backend, kind, rng):
    x, states, weights, dy, dstates = random_problem(rng, kind, 3, 2, 2, 3)
    return f_forward(backend, kind, x, states, weights)[2], dy, dstates


CONTEXT_CHANGES = {
    "hs shorter": (lambda ctx: setattr(ctx, "hs", ctx.hs[:1]),
                   r"ctx\.hs must be a C-contiguous float64 array of shape \(8, \d\), as its "
                   r"forward made it, got an array of shape \(1, \d\)"),
    "hs strided": (lambda ctx: setattr(ctx, "hs", np.repeat(ctx.hs, 2, axis=0)[::2]),
                   r"ctx\.hs must be a C-contiguous"),
    "x float32": (lambda ctx: setattr(ctx, "x", ctx.x.astype(F32)),
                  r"ctx\.x must be a C-contiguous float64 array of shape \(6, 2\).*float32"),
    "w_hh wider": (lambda ctx: setattr(ctx, "w_hh", np.zeros((ctx.w_hh.shape[0], 9))),
                   r"ctx\.w_hh must be .* got an array of shape \(\d+, 9\)"),
    "batch of more steps": (lambda ctx: setattr(ctx, "batch", Batch(np.full(4, 2), 2, True)),
                            r"ctx\.x must be a C-contiguous float64 array of shape \(8, 2\)"),
    "nonlinearity": (lambda ctx: setattr(ctx, "nonlinearity", "sigmoid"),
                     r"ctx\.nonlinearity must be 'tanh' or 'relu', got 'sigmoid'"),
    "gates dropped": (lambda ctx: setattr(ctx, "gates", None),
                      r"ctx\.gates must be a C-contiguous .* got NoneType None"),
    "w_hr on a GRU": (lambda ctx: setattr(ctx, "w_hr", np.zeros((3, 3))),
                      r"ctx\.w_hr must be None in a context of gru_forward"),
}
CONTEXT_CASES = [("rnn_tanh", c) for c in ("hs shorter", "hs strided", "x float32", "w_hh wider",
                                           "batch of more steps", "nonlinearity")] + \
    [("lstm", c) for c in ("hs shorter", "gates dropped", "batch of more steps")] + \
    [("gru", c) for c in ("hs shorter", "gates dropped", "w_hr on a GRU")]


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("kind, change", CONTEXT_CASES, ids=[f"{k}-{c}" for k, c in CONTEXT_CASES])
def test_backward_refuses_a_context_whose_arrays_were_replaced(kind, change, backend, rng):
    """The native kernel would read the replaced arrays as memory of the forward's sizes."""
    ctx, dy, dstates = context(backend, kind, rng)
    f_backward(backend, kind, ctx, dy, dstates)       # the context as its forward made it works
    modify, match = CONTEXT_CHANGES[change]
    modify(ctx)
    with pytest.raises(ValueError, match=match):
        f_backward(backend, kind, ctx, dy, dstates)


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_a_contexts_batch_cannot_change(backend, rng):
    """Its batch_sizes are read-only (the kernel's loops trust them), and it must be a Batch."""
    ctx, dy, dstates = context(backend, "gru", rng)
    with pytest.raises(ValueError, match="read-only"):
        ctx.batch.batch_sizes[1:] = 3
    ctx.batch = (3, 2)
    with pytest.raises(TypeError, match=r"ctx\.batch must be the Batch its forward made, got a "
                                        r"tuple of 2 items"):
        f_backward(backend, "gru", ctx, dy, dstates)


def test_lstm_context_with_projection_must_keep_its_shapes(rng):
    x, states, weights, dy, dstates = random_problem(rng, "lstmp", 3, 2, 2, 4)
    ctx = f_forward("native", "lstmp", x, states, weights)[2]
    ctx.w_hr = None       # without the projection, h would have hidden_size = 4 columns, not 2
    with pytest.raises(ValueError, match=r"ctx\.hs must be .* shape \(8, 4\).*\(8, 2\)"):
        f_backward("native", "lstmp", ctx, dy, dstates)


# ---------------------------------------------------------------- sizes


@pytest.mark.parametrize("make, what", [
    (lambda: fastlstm.LSTM(3, 4, num_layers=10**12), r"LSTM\(input_size=3, hidden_size=4, "
                                                     r"num_layers=1000000000000\)'s parameters"),
    (lambda: fastlstm.LSTM(10**30, 4), r"LSTM\(input_size=10{30}, hidden_size=4"),
    (lambda: fastlstm.LSTM(1, 10**6), r"LSTM\(input_size=1, hidden_size=1000000, "),
    (lambda: fastlstm.GRU(3, 2**40, bidirectional=True), r"GRU\(input_size=3, hidden_size="),
    (lambda: fastlstm.RNN(3, 4, num_layers=2**62), r"RNN\(input_size=3, hidden_size=4"),
    (lambda: fastlstm.Linear(10**30, 2),
     r"Linear\(in_features=10{30}, out_features=2\)'s parameters"),
    (lambda: fastlstm.LSTM(3, 4).stream(10**30), r"the states of a stream of batch_size=10{30}"),
    (lambda: fastlstm.LSTM(3, 4).stream(2**40), r"the states of a stream of batch_size="),
], ids=["num_layers", "input_size beyond int64", "hidden_size 1e6", "hidden_size 2^40",
        "num_layers 2^62", "Linear", "stream beyond int64", "stream 2^40"])
def test_sizes_that_cannot_be_allocated_raise_memory_error(make, what):
    """Before anything is built: without the check, num_layers=10**12 would loop for hours
    building the parameters' names, and sizes beyond int64 gave NumPy's unnamed errors."""
    with pytest.raises(MemoryError, match=what + r".* more than can be allocated"):
        make()


def test_sizes_that_can_be_allocated_are_not_refused():
    layer = fastlstm.RNN(1, 1, num_layers=2000)
    assert len(layer.state_dict()) == 4 * 2000


FORWARD_TOO_LARGE = textwrap.dedent("""
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    import numpy as np
    import fastlstm
    # 2^24 rows of one feature: 64 MiB; their hidden states of 1024 units: 64 GiB.
    x = np.zeros((2**14, 2**10, 1), np.float32)
    for backend in ("native", "reference"):
        layer = fastlstm.LSTM(1, 1024, backend=backend)
        try:
            layer(x)
        except MemoryError as exc:
            print(backend, "MemoryError", exc)
""")


@pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer's shadow memory alone exceeds the child's 2 GiB "
                           "address-space limit (tools/sanitize.sh)")
def test_a_forward_whose_states_cannot_be_allocated_raises_memory_error():
    """In a child process limited to 2 GiB of address space (never more is used), so that a
    failure could not take the test run, or the machine's memory, with it."""
    result = run_python(["-c", FORWARD_TOO_LARGE], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [["native", "MemoryError"],
                                                    ["reference", "MemoryError"]], result.stdout


# ---------------------------------------------------------------- 32-bit sizes


def test_blas_leading_dimensions_are_checked():
    """The time loops' products stride over rows of one part of the batch, with leading
    dimension parts * gates * hidden_size, a 32-bit number for the BLAS. An LSTM with a
    projection of 1 can have 4 * hidden_size below 2^31 and that stride above it; the check
    reads only the weights' shapes, so broadcast (zero-memory) weights show it."""
    parts = native.build_info()["parts"]
    if parts == 1:
        pytest.skip("one part: the leading dimensions are the sizes the BLAS check covers")
    H = 2**31 // parts // 4 + 1
    w_ih, w_hh = (np.broadcast_to(F32(0), (4 * H, 1)) for _ in range(2))
    w_hr = np.broadcast_to(F32(0), (1, H))
    batch = Batch(np.full(1, 2, np.int64), 2, padded=True)
    with pytest.raises(ValueError, match=rf"{parts} parts of a batch times gates \* hidden_size "
                                         rf"= {parts * 4 * H} is larger than the BLAS can index"):
        native._layer("lstm", None, batch, w_ih, w_hh, w_hr, None)
    # 4 * H itself passes the plain size check
    assert 4 * H < 2**31 - 1


@pytest.mark.parametrize("n", [2**31, 10**30])
def test_thread_counts_beyond_a_c_int_are_refused(n, restore_threads):
    """Stored, such a count made every later kernel call fail with an OverflowError."""
    with pytest.raises(ValueError, match=rf"n must be .* at most 2147483647, got {n}"):
        fastlstm.set_num_threads(n)
    assert fastlstm.get_num_threads() == restore_threads


# ---------------------------------------------------------------- the optimizers

BAD_HYPERPARAMETERS = [
    (lambda m: optim.SGD(m, lr=float("inf")), r"lr must be a finite number >= 0\.0, got inf"),
    (lambda m: optim.SGD(m, lr=0.1, momentum=float("inf")), r"momentum must be a finite"),
    (lambda m: optim.Adam(m, eps=float("inf")), r"eps must be a finite number"),
    (lambda m: optim.Adam(m, weight_decay=float("nan")), r"weight_decay must be a finite"),
    (lambda m: optim.RMSprop(m, momentum=float("-inf")), r"momentum must be a finite"),
]


@pytest.mark.parametrize("make, match", BAD_HYPERPARAMETERS)
def test_non_finite_hyperparameters(make, match):
    with pytest.raises(ValueError, match=match):
        make(fastlstm.Linear(2, 2))


@pytest.mark.parametrize("nesterov", ["no", 1, None])
def test_nesterov_must_be_a_bool(nesterov):
    """bool("no") is True: the string used to switch Nesterov momentum on."""
    with pytest.raises(TypeError, match=r"nesterov must be True or False, got "
                                        + re.escape(repr(nesterov))):
        optim.SGD(fastlstm.Linear(2, 2), lr=0.1, momentum=0.9, nesterov=nesterov)


def test_a_module_whose_grads_do_not_match_its_parameters():
    """The optimizer would fail with a KeyError at its first step."""
    m = fastlstm.Linear(2, 2)
    del m.grads["bias"]
    for make in (lambda: optim.Adam([fastlstm.Linear(1, 1), m]),
                 lambda: optim.clip_grad_norm([fastlstm.Linear(1, 1), m], 1.0)):
        with pytest.raises(ValueError, match=r"layers\[1\]\.grads must have one gradient per "
                                             r"parameter, named \['weight', 'bias'\], got "
                                             r"\['weight'\]"):
            make()


def test_clip_grad_norm_with_an_infinite_max_norm_measures_without_clipping(rng):
    m = fastlstm.Linear(3, 2, dtype=np.float64)
    for g in m.grads.values():
        g[...] = rng.standard_normal(g.shape)
    before = {k: g.copy() for k, g in m.grads.items()}
    norm = optim.clip_grad_norm(m, float("inf"))
    assert norm == pytest.approx(np.sqrt(sum(np.sum(g**2) for g in before.values())), rel=1e-15)
    assert all(np.array_equal(m.grads[k], before[k]) for k in before)


# ---------------------------------------------------------------- any memory layout works

LAYOUTS = {"fortran": np.asfortranarray,
           "reversed": lambda a: np.flip(np.flip(a, 0).copy(), 0),
           "strided": lambda a: np.repeat(a, 2, axis=-1)[..., ::2]}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_toolkit_and_state_dicts_take_any_layout(layout, rng):
    """Each call on a non-contiguous view gives bitwise what it gives on a C-contiguous copy."""
    view = LAYOUTS[layout]
    x, dy = rng.standard_normal((4, 3)), rng.standard_normal((4, 2))
    states = rng.standard_normal((2, 1, 2, 4))
    results = []
    for relayout in (np.ascontiguousarray, view):
        linear = fastlstm.Linear(3, 2, dtype=np.float64, seed=1)
        y = linear(relayout(x))
        dx = linear.backward(relayout(dy))
        mse = losses.mse(relayout(y), relayout(dy))
        ce = losses.cross_entropy(relayout(y), relayout(np.arange(4) % 2))
        lstm = fastlstm.LSTM(3, 4, dtype=np.float64, seed=2)
        lstm.load_state_dict({k: relayout(v + 1) for k, v in lstm.state_dict().items()})
        stream = lstm.stream(2)
        stream.reset(tuple(relayout(s) for s in states))
        results.append([y, dx, linear.grads["weight"], mse[0], mse[1], ce[0], ce[1],
                        *lstm.state_dict().values(), *stream.state])
    for k, (a, b) in enumerate(zip(*results, strict=True)):
        assert np.array_equal(a, b), k


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_unaligned_arrays_are_read_as_copies(backend):
    """An array whose data is not aligned to its elements (a view of raw bytes at an odd
    offset) is accepted, and gives what the same values aligned give."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 2, 4)).astype(np.float32)
    raw = np.empty(x.nbytes + 1, np.uint8)
    unaligned = np.frombuffer(raw.data, np.float32, x.size, offset=1).reshape(x.shape)
    unaligned[...] = x
    assert not unaligned.flags.aligned
    w_ih, w_hh = (rng.standard_normal((5, n)).astype(np.float32) for n in (4, 5))
    module = native if backend == "native" else fastlstm.reference
    y, h_n, _ = module.rnn_forward(unaligned, None, w_ih, w_hh, None, None)
    y_aligned, h_aligned, _ = module.rnn_forward(x, None, w_ih, w_hh, None, None)
    assert np.array_equal(y, y_aligned) and np.array_equal(h_n, h_aligned)
