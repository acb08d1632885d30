"""Streaming inference: ``layer.stream(batch_size)`` (fastlstm.stream.Stream), one step per call.

A stream fed x[0], x[1], ... step by step must give the whole-sequence forward's y[t] at every
step and its h_n (c_n) as ``state``, for every kind, both backends and both dtypes. Also checked:
``out=``, the checks of x, out, batch_size and of ``reset(state)`` (a refused state leaves the
stream as it was), ``state`` handing out copies, the snapshot of the weights taken at creation,
inference only (a layer with dropout in training mode streams like its eval-mode forward, and
the layer is left untouched), independence of successive outputs and of two streams, and two
streams stepped in two Python threads at once.

Tolerances, relative to max(1, max |expected|) (helpers.assert_close): float64 1e-12, float32
1e-6, as in test_stepwise.py. Why not bitwise: the whole-sequence forward computes x W_ih^T for
T * B rows in one product (at these sizes), a step for B rows; a native stream's step in a build
that packs forms x_t W_ih^T + h W_hh^T in one pass over the weights its first step packed, and
the generic build's and the reference's through the BLAS, whose single-row path differs from its
many-row one. The sums are rounded in another order (differences of one or two units of
roundoff: ~1e-16 in float64, ~2e-7 in float32 after 8 steps and 3 layers). A stream is bitwise
equal to another stream of the same layer, whichever step it packed its weights on.
"""
import re
import threading

import numpy as np
import pytest
from helpers import KINDS, assert_close, layer_forward, layer_state_sizes, make_layer

import fastlstm
from fastlstm.stream import Stream

TOLS = {np.float32: 1e-6, np.float64: 1e-12}
T, I, H = 8, 4, 5
F64 = np.float64


@pytest.fixture(autouse=True)
def one_thread(restore_threads):
    """The native kernels on one OpenMP thread: on this small shared machine, waking OpenMP
    threads for these tiny problems costs ~15 ms per call (a 3-layer forward of T = 8, B = 5
    takes ~50 ms on 2 threads against 0.2 ms on one). Results do not depend on the thread
    count (test_threads.py)."""
    fastlstm.set_num_threads(1)


def states_of(stream):
    """A stream's ``state`` as a tuple (h,) or (h, c)."""
    state = stream.state
    return state if isinstance(state, tuple) else (state,)


def as_state(layer, states):
    """A tuple of states in the form ``reset`` (and the layer) takes: h, or (h, c)."""
    return tuple(states) if isinstance(layer, fastlstm.LSTM) else states[0]


def random_states(rng, layer, B):
    return tuple(rng.standard_normal((layer.num_layers, B, n)).astype(layer.dtype)
                 for n in layer_state_sizes(layer))


def run_stream(stream, x):
    """Step ``stream`` through x (T, B, I); the outputs stacked to (T, B, P)."""
    return np.stack([stream.step(x_t) for x_t in x])


def assert_stream_matches(stream, layer, x, states=None, tol=None, what=""):
    """Stepping ``stream`` through x gives the eval-mode forward of x from ``states``."""
    tol = TOLS[layer.dtype.type] if tol is None else tol
    was_training = layer.training
    layer.eval()
    try:
        y, finals = layer_forward(layer, x, states)
    finally:
        layer.train(was_training)
    ys = run_stream(stream, x)
    assert ys.dtype == layer.dtype
    assert_close(ys, y, tol, f"{what} y")
    got = states_of(stream)
    assert len(got) == len(finals)
    for name, a, b in zip(("h", "c"), got, finals):
        assert a.dtype == layer.dtype
        assert_close(a, b, tol, f"{what} {name}")


# ---------------------------------------------------------------- streaming equals forward

CASES = [dict(num_layers=1), dict(num_layers=3), dict(num_layers=2, bias=False)]


@pytest.mark.parametrize("B", [1, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("kind", KINDS)
def test_stream_equals_whole_sequence(kind, case, backend, dtype, B, rng):
    layer = make_layer(kind, I, H, dtype=dtype, backend=backend, seed=3, **case)
    stream = layer.stream(B)
    assert isinstance(stream, Stream)
    assert stream.batch_size == B
    x = rng.standard_normal((T, B, I)).astype(dtype)
    # The stream starts from zeros, like a forward without initial states.
    for s in states_of(stream):
        assert not s.any()
    assert_stream_matches(stream, layer, x)
    # The state is carried on: more steps continue the sequence (here with ``out=``).
    x2 = rng.standard_normal((3, B, I)).astype(dtype)
    expected, _ = layer_forward(layer.eval(), np.concatenate([x, x2]))
    out = np.empty((B, layer.output_size), dtype)
    ys = np.stack([stream.step(x_t, out=out).copy() for x_t in x2])
    assert_close(ys, expected[T:], TOLS[dtype], "y after more steps")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_stream_splitting_its_units_equals_whole_sequence(kind, dtype, rng):
    """At B = 1 and H = 512 a native stream's steps split their units between the parts
    (kernels_common.h, splits_units; not the projected LSTM's), each forming its columns of the
    input product too."""
    layer = make_layer(kind, 6, 512, num_layers=2, dtype=dtype, seed=3)
    assert_stream_matches(layer.stream(1), layer, rng.standard_normal((T, 1, 6)).astype(dtype))


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_stream_of_a_batch_first_layer(backend, rng):
    """x_t is (batch_size, input_size) whatever the layer's batch_first."""
    layer = make_layer("lstm", I, H, num_layers=2, batch_first=True, dtype=F64, backend=backend,
                       seed=1).eval()
    x = rng.standard_normal((3, T, I))
    y, (h_n, c_n) = layer(x)
    stream = layer.stream(3)
    ys = np.stack([stream.step(x[:, t]) for t in range(T)], axis=1)
    assert_close(ys, y, 1e-12, "y")
    assert_close(stream.state[0], h_n, 1e-12, "h")
    assert_close(stream.state[1], c_n, 1e-12, "c")


# ---------------------------------------------------------------- weights packed once

PACKED_CASES = [(kind, {}) for kind in KINDS] + [
    ("lstm", dict(layer_norm=True)), ("lstm", dict(feedback="top")), ("gru", dict(feedback="top")),
    ("rnn_tanh", dict(feedback="top"))]


@pytest.mark.parametrize("B", [1, 3])
# At H = 512 and B = 1 the steps split their units between the parts (kernels_common.h,
# splits_units), on one thread here as on several (test_threads.py).
@pytest.mark.parametrize("size", [(I, H), (6, 32), (6, 512)], ids=["small", "H=32", "H=512"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind, options", PACKED_CASES,
                         ids=[k + "".join(f"-{o}" for o in opts) for k, opts in PACKED_CASES])
def test_later_steps_read_the_weights_the_first_step_packed(kind, options, dtype, size, B, rng):
    """A native stream packs its weights into its scratch on its first step and the later steps
    read them there: each step gives bitwise what a fresh stream, started from the same state
    and packing them on that step, gives."""
    layer = make_layer(kind, size[0], size[1], num_layers=2, dtype=dtype, seed=5,
                       **options).eval()
    stream = layer.stream(B)
    for _ in range(4):
        x_t = rng.standard_normal((B, size[0])).astype(dtype)
        fresh = layer.stream(B)
        fresh.reset(stream.state)
        expected = fresh.step(x_t)
        assert np.array_equal(stream.step(x_t), expected)
        for a, b in zip(states_of(stream), states_of(fresh)):
            assert np.array_equal(a, b)


# ---------------------------------------------------------------- out=


@pytest.fixture(params=["native", "reference"])
def backend(request):
    return request.param


@pytest.fixture(params=["rnn_tanh", "gru", "lstmp"])
def kind(request):
    return request.param


def stream_pair(kind, backend, B=3, dtype=F64, num_layers=2, **kwargs):
    """A layer and two fresh streams of it (one to test, one to compare with)."""
    layer = make_layer(kind, I, H, num_layers=num_layers, dtype=dtype, backend=backend, seed=4,
                       **kwargs)
    return layer, layer.stream(B), layer.stream(B)


def test_out_is_filled_and_returned(kind, backend, rng):
    layer, s, twin = stream_pair(kind, backend)
    out = np.full((3, layer.output_size), np.nan)
    for _ in range(3):
        x = rng.standard_normal((3, I))
        got = s.step(x, out=out)
        assert got is out
        assert np.array_equal(out, twin.step(x))
    # The stream does not keep ``out``: writing into it changes nothing downstream.
    out[...] = 1e6
    x = rng.standard_normal((3, I))
    assert np.array_equal(s.step(x), twin.step(x))
    for a, b in zip(states_of(s), states_of(twin)):
        assert np.array_equal(a, b)


def bad_outs(P, dtype=F64):
    read_only = np.zeros((3, P), dtype)
    read_only.flags.writeable = False
    return {
        "shape": np.zeros((3, P + 1), dtype),
        "batch": np.zeros((2, P), dtype),
        "extra dim": np.zeros((1, 3, P), dtype),
        "1-D": np.zeros(3 * P, dtype),
        "dtype": np.zeros((3, P), np.float32),
        "int": np.zeros((3, P), np.int64),
        "non-contiguous": np.zeros((P, 3), dtype).T,
        "strided": np.zeros((3, 2 * P), dtype)[:, ::2],
        "read-only": read_only,
        "list": [[0.0] * P] * 3,
    }


@pytest.mark.parametrize("case", list(bad_outs(1)))
def test_bad_out_is_refused(kind, backend, case, rng):
    layer, s, twin = stream_pair(kind, backend)
    x = rng.standard_normal((3, I))
    s.step(x)
    twin.step(x)
    out = bad_outs(layer.output_size)[case]
    before = np.array(out, copy=True)
    with pytest.raises(ValueError, match=r"\bout\b"):
        s.step(x, out=out)
    assert np.array_equal(np.asarray(out), before), "a refused out was written"
    # The refused step did not happen: the stream is where its twin is.
    for a, b in zip(states_of(s), states_of(twin)):
        assert np.array_equal(a, b)
    x = rng.standard_normal((3, I))
    assert np.array_equal(s.step(x), twin.step(x))


# ---------------------------------------------------------------- x_t


BAD_X = {
    "float32": (lambda x: x.astype(np.float32), TypeError, r"\bx\b.*float64.*got float32"),
    "int": (lambda x: np.zeros((3, I), np.int64), TypeError, r"\bx\b.*float64.*int64"),
    "complex": (lambda x: x.astype(np.complex128), TypeError, r"\bx\b.*float64.*complex128"),
    "string": (lambda x: "abc", TypeError, r"\bx\b"),
    "input_size": (lambda x: np.zeros((3, I + 1)), ValueError, r"\bx\b.*\(3, 4\).*\(3, 5\)"),
    "batch": (lambda x: np.zeros((2, I)), ValueError, r"\bx\b.*\(3, 4\).*\(2, 4\)"),
    "transposed": (lambda x: np.zeros((I, 3)), ValueError, r"\bx\b.*\(3, 4\).*\(4, 3\)"),
    "1-D": (lambda x: x[0], ValueError, r"\bx\b.*2-D.*1-D"),
    "3-D": (lambda x: x[None], ValueError, r"\bx\b.*2-D.*3-D"),
    "0-D": (lambda x: np.float64(1.0), ValueError, r"\bx\b.*2-D.*0-D"),
}


@pytest.mark.parametrize("case", list(BAD_X))
def test_bad_x_is_refused(kind, backend, case, rng):
    make_x, exc, match = BAD_X[case]
    layer, s, twin = stream_pair(kind, backend)
    x = rng.standard_normal((3, I))
    s.step(x)
    twin.step(x)
    with pytest.raises(exc, match=match):
        s.step(make_x(x))
    for a, b in zip(states_of(s), states_of(twin)):
        assert np.array_equal(a, b)
    x = rng.standard_normal((3, I))
    assert np.array_equal(s.step(x), twin.step(x))


def test_x_non_contiguous_read_only_or_a_list(kind, backend, rng):
    """Any array-like of the right shape and dtype works, and gives what a contiguous array
    gives. (Lists of Python floats are float64: a float32 stream refuses them, like a float32
    layer refuses float64 input.)"""
    layer, s, twin = stream_pair(kind, backend)
    base = rng.standard_normal((I, 3))
    inputs = [
        base.T,                                          # Fortran order
        rng.standard_normal((6, 2 * I))[::2, ::2],       # strided
        rng.standard_normal((3, I)).tolist(),            # a list of lists
        np.array(rng.standard_normal((3, I))),           # read-only below
    ]
    inputs[3].flags.writeable = False
    for x in inputs:
        got = s.step(x)
        assert np.array_equal(got, twin.step(np.ascontiguousarray(x)))
    # integer lists take the stream's dtype
    assert np.array_equal(s.step([[1] * I] * 3), twin.step(np.ones((3, I))))


# ---------------------------------------------------------------- state and reset


@pytest.mark.parametrize("kind", KINDS)
def test_state_shapes_and_copies(kind, backend, rng):
    layer, s, twin = stream_pair(kind, backend, B=3, num_layers=3)
    expected = [(3, 3, n) for n in layer_state_sizes(layer)]
    state = s.state
    if isinstance(layer, fastlstm.LSTM):
        assert isinstance(state, tuple) and len(state) == 2
    else:
        assert isinstance(state, np.ndarray)
    assert [a.shape for a in states_of(s)] == expected
    assert all(a.dtype == F64 for a in states_of(s))
    for _ in range(2):
        x = rng.standard_normal((3, I))
        s.step(x)
        twin.step(x)
    first, second = states_of(s), states_of(s)
    for a, b in zip(first, second):
        assert not np.shares_memory(a, b)
    for a in first:
        a[...] = 123.0       # changing a copy changes nothing
    for a, b in zip(states_of(s), states_of(twin)):
        assert np.array_equal(a, b)
    x = rng.standard_normal((3, I))
    assert np.array_equal(s.step(x), twin.step(x))


def test_reset_gives_zeros(kind, backend, rng):
    layer, s, _ = stream_pair(kind, backend)
    run_stream(s, rng.standard_normal((3, 3, I)))
    assert any(a.any() for a in states_of(s))
    assert s.reset() is None
    for a in states_of(s):
        assert not a.any()
    assert_stream_matches(s, layer, rng.standard_normal((T, 3, I)))


@pytest.mark.parametrize("kind", KINDS)
def test_reset_to_a_state_continues_like_a_forward_from_it(kind, backend, rng):
    layer, s, _ = stream_pair(kind, backend, num_layers=3)
    run_stream(s, rng.standard_normal((3, 3, I)))
    states = random_states(rng, layer, 3)
    kept = tuple(a.copy() for a in states)
    s.reset(as_state(layer, states))
    for a, b in zip(states_of(s), kept):
        assert np.array_equal(a, b)
    for a in states:
        a[...] = 0.0         # the stream copied them
    assert_stream_matches(s, layer, rng.standard_normal((T, 3, I)), kept)


def test_reset_accepts_a_list_for_the_lstm_pair(backend, rng):
    layer, s, _ = stream_pair("lstm", backend)
    states = random_states(rng, layer, 3)
    s.reset(list(states))
    for a, b in zip(states_of(s), states):
        assert np.array_equal(a, b)


def bad_resets(kind, layer):
    """Bad ``reset`` arguments: name -> (argument, exception, regex)."""
    L, B = layer.num_layers, 3
    sizes = layer_state_sizes(layer)
    good = [np.zeros((L, B, n)) for n in sizes]
    wrong = {"num_layers": lambda n: np.zeros((L + 1, B, n)),
             "batch": lambda n: np.zeros((L, B + 1, n)),
             "size": lambda n: np.zeros((L, B, n + 1)),
             "2-D": lambda n: np.zeros((B, n)),
             "dtype": lambda n: np.zeros((L, B, n), np.float32)}
    cases = {}
    for k, n in enumerate(sizes):
        for what, make in wrong.items():
            states = list(good)
            states[k] = make(n)
            arg = tuple(states) if len(sizes) == 2 else states[0]
            exc = TypeError if what == "dtype" else ValueError
            cases[f"{'hc'[k]} {what}"] = (arg, exc, r"\bstate\b")
    if len(sizes) == 2:
        cases["one array"] = (good[0], TypeError, r"\bstate\b")
        cases["tuple of 1"] = ((good[0],), TypeError, r"\bstate\b")
        cases["tuple of 3"] = ((good[0], good[1], good[1]), TypeError, r"\bstate\b")
        cases["c None"] = ((good[0], None), TypeError, r"\bstate\b")
    else:
        cases["tuple"] = ((good[0],), ValueError, r"\bstate\b")
    return cases


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm", "lstmp"])
def test_bad_reset_state_leaves_the_stream_unchanged(kind, backend, rng):
    layer, s, twin = stream_pair(kind, backend)
    x = rng.standard_normal((2, 3, I))
    run_stream(s, x)
    run_stream(twin, x)
    for name, (arg, exc, match) in bad_resets(kind, layer).items():
        with pytest.raises(exc, match=match):
            s.reset(arg)
        for a, b in zip(states_of(s), states_of(twin)):
            assert np.array_equal(a, b), f"{name}: the refused reset changed the state"
    x = rng.standard_normal((3, 3, I))
    assert np.array_equal(run_stream(s, x), run_stream(twin, x))


def test_lstm_reset_error_names_the_states_not_their_gradients(backend):
    """The message for a bad LSTM pair speaks of the state (h, c), not of (dh_n, dc_n)."""
    layer, s, _ = stream_pair("lstm", backend)
    with pytest.raises(TypeError, match=r"\bstate\b") as info:
        s.reset(np.zeros((2, 3, H)))
    assert "dh_n" not in str(info.value) and "dc_n" not in str(info.value), str(info.value)


# ---------------------------------------------------------------- weights, dropout, errors


def test_the_stream_keeps_the_weights_it_was_made_with(kind, backend, rng):
    layer, s, _ = stream_pair(kind, backend)
    original = make_layer(kind, I, H, num_layers=2, dtype=F64, backend=backend, seed=4).eval()
    x = rng.standard_normal((T, 3, I))
    # Change the live parameters in place, then load a state dict on top.
    for p in layer.parameters():
        p *= -0.5
    layer.load_state_dict({name: p + 0.25 for name, p in layer.state_dict().items()})
    new_stream = layer.stream(3)
    assert_stream_matches(new_stream, layer, x, what="a stream made after the change")
    assert_stream_matches(s, original, x, what="the stream made before the change")
    assert not np.allclose(states_of(s)[0], states_of(new_stream)[0])


@pytest.mark.parametrize("kind", ["rnn_relu", "gru", "lstmp_peephole"])
def test_dropout_in_training_mode_is_not_applied(kind, backend, rng):
    kwargs = dict(num_layers=3, dropout=0.5, dtype=F64, backend=backend, seed=8)
    layer = make_layer(kind, I, H, **kwargs)
    twin = make_layer(kind, I, H, **kwargs)
    assert layer.training
    s = layer.stream(3)
    x = rng.standard_normal((T, 3, I))
    ys = run_stream(s, x)
    assert layer.training, "stream() switched the layer to eval mode"
    expected, _ = layer_forward(twin.eval(), x)
    assert_close(ys, expected, 1e-12, "y")
    twin.train()
    # Streaming drew nothing from the layer's dropout generator: the next training forwards of
    # the layer and of its twin (which never streamed) draw the same masks.
    y_layer, _ = layer_forward(layer, x)
    y_twin, _ = layer_forward(twin, x)
    assert np.array_equal(y_layer, y_twin)
    assert not np.allclose(y_layer, expected), "dropout should act in a training forward"


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
def test_bidirectional_layers_cannot_stream(kind, backend):
    layer = make_layer(kind, I, H, bidirectional=True, backend=backend)
    with pytest.raises(ValueError, match=r"bidirectional|unidirectional"):
        layer.stream(1)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, 2.0, True, False, "2", None, [2]],
                         ids=repr)
def test_bad_batch_size(backend, batch_size):
    layer = make_layer("gru", I, H, backend=backend)
    with pytest.raises(ValueError, match=r"batch_size.*" + re.escape(repr(batch_size))):
        layer.stream(batch_size)


def test_numpy_integer_batch_size(backend, rng):
    layer = make_layer("gru", I, H, backend=backend, dtype=F64, seed=0)
    s = layer.stream(np.int64(2))
    assert s.batch_size == 2 and type(s.batch_size) is int
    assert s.step(rng.standard_normal((2, I))).shape == (2, H)


# ---------------------------------------------------------------- independence


def test_successive_outputs_are_independent(kind, backend, rng):
    layer, s, _ = stream_pair(kind, backend)
    x = rng.standard_normal((T, 3, I))
    expected, _ = layer_forward(layer.eval(), x)
    outs = []
    for t in range(T):
        outs.append(s.step(x[t]))
        for prev in outs[:-1]:
            assert not np.shares_memory(prev, outs[-1])
    assert_close(np.stack(outs), expected, 1e-12, "outputs kept in a list")
    # Writing into a returned output changes neither the state nor the next steps.
    s2 = layer.stream(3)
    for t in range(T):
        y_t = s2.step(x[t])
        y_t[...] = -7.0
    assert_close(states_of(s2)[0], states_of(s)[0], 1e-12, "h")


def test_two_streams_of_one_layer_are_independent(kind, backend, rng):
    layer, s1, _ = stream_pair(kind, backend)
    s2 = layer.stream(2)
    x1 = rng.standard_normal((T, 3, I))
    x2 = rng.standard_normal((T, 2, I))
    y1, y2, reset_at = [], [], 4
    for t in range(T):       # interleaved
        if t == reset_at:
            s2.reset()       # resetting one does not touch the other
        y1.append(s1.step(x1[t]))
        y2.append(s2.step(x2[t]))
    layer.eval()
    assert_close(np.stack(y1), layer_forward(layer, x1)[0], 1e-12, "stream 1")
    assert_close(np.stack(y2[reset_at:]), layer_forward(layer, x2[reset_at:])[0], 1e-12,
                 "stream 2 after its reset")


@pytest.mark.parametrize("kind", ["gru", "lstmp_peephole"])
def test_two_streams_in_two_threads(kind, rng):
    """The native step runs without the GIL; two streams stepped at the same time by two Python
    threads give bitwise what they give one after the other: streams of two layers, and two
    streams of one layer."""
    n_steps, B = 300, 4
    layer_a, layer_b = (make_layer(kind, I, H, num_layers=2, dtype=F64, seed=seed)
                        for seed in (1, 2))
    xa, xb = (rng.standard_normal((n_steps, B, I)) for _ in range(2))

    def run(stream, x, barrier=None):
        if barrier is not None:
            barrier.wait(timeout=60)
        out = np.empty((B, stream.layer.output_size))
        ys = [stream.step(x_t, out=out).copy() for x_t in x]
        return np.stack(ys), states_of(stream)

    for first, second in ((layer_a, layer_b), (layer_a, layer_a)):
        expected = [run(first.stream(B), xa), run(second.stream(B), xb)]
        jobs = [(first.stream(B), xa), (second.stream(B), xb)]
        results = [None, None]
        barrier = threading.Barrier(2)

        def worker(k):
            results[k] = run(*jobs[k], barrier)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert all(r is not None for r in results), "a thread failed"
        for (ys, states), (ys_e, states_e) in zip(results, expected):
            assert np.array_equal(ys, ys_e)
            for a, b in zip(states, states_e):
                assert np.array_equal(a, b)


def test_the_native_stepper_is_initialized_once_and_only_steps_when_it_was(rng):
    """fastlstm.native.Stepper, the native stream's engine, refuses a second __init__ (which would
    leak and replace its layers under a stream), a step before any __init__ or after one that
    failed (unfilled slots: writes through null pointers), weights of no layer and a layer whose
    input width is not the output width of the one below (reads past its input)."""
    native = pytest.importorskip("fastlstm.native")
    w = {"w_ih": rng.standard_normal((4 * H, I)), "w_hh": rng.standard_normal((4 * H, H))}
    x = rng.standard_normal((2, 2, I))
    stepper, twin = (native.Stepper("lstm", None, [w], 2, F64) for _ in range(2))
    assert np.array_equal(stepper.step(x[0]), twin.step(x[0]))
    with pytest.raises(RuntimeError, match="initialized once"):
        stepper.__init__("lstm", None, [{k: -a for k, a in w.items()}], 2, F64)
    assert np.array_equal(stepper.step(x[1]), twin.step(x[1])), "the refused __init__ changed it"
    with pytest.raises(RuntimeError, match="cannot step: its __init__ did not run"):
        native.Stepper.__new__(native.Stepper).step(x[0])
    failed = native.Stepper.__new__(native.Stepper)
    with pytest.raises(ValueError, match=r"weights\[1\]: w_ih must have 5 columns, the "
                                         r"outputs of the layer below, got 4"):
        failed.__init__("lstm", None, [w, w], 2, F64)
    with pytest.raises(RuntimeError, match="cannot step: its __init__ did not run, or failed"):
        failed.step(x[0])
    with pytest.raises(RuntimeError, match="initialized once"):
        failed.__init__("lstm", None, [w], 2, F64)
    with pytest.raises(ValueError, match="weights must hold at least one layer's, got none"):
        native.Stepper("lstm", None, [], 2, F64)


def lstm_weights(rng, P=None, peephole=False, dtype=F64):
    """Weights of one LSTM layer for native.Stepper: input I, hidden H, projected to P."""
    w = {"w_ih": rng.standard_normal((4 * H, I)), "w_hh": rng.standard_normal((4 * H, P or H)),
         "b_ih": rng.standard_normal(4 * H), "b_hh": rng.standard_normal(4 * H)}
    if P:
        w["w_hr"] = rng.standard_normal((P, H))
    if peephole:
        w["w_peephole"] = rng.standard_normal(3 * H)
    return {k: a.astype(dtype) for k, a in w.items()}


def changed(w, **changes):
    """A copy of the weights w with some replaced (None: removed)."""
    w = dict(w, **changes)
    return {k: a for k, a in w.items() if a is not None}


@pytest.mark.parametrize("arguments, error, match", [
    pytest.param(lambda w: ("lstm", None, [changed(w, w_hh=w["w_hh"][:3 * H])]), ValueError,
                 r"weights\[0\]: w_hh must have shape \(20, 3\)", id="w_hh rows"),
    pytest.param(lambda w: ("lstm", None, [changed(w, b_ih=w["b_ih"][:-1])]), ValueError,
                 r"weights\[0\]: b_ih must have shape \(20,\)", id="b_ih length"),
    pytest.param(lambda w: ("lstm", None, [changed(w, b_hh=w["b_hh"][:-1])]), ValueError,
                 r"weights\[0\]: b_hh must have shape \(20,\)", id="b_hh length"),
    pytest.param(lambda w: ("lstm", None, [changed(w, w_hr=w["w_hr"][:, :-1])]), ValueError,
                 r"weights\[0\]: w_hr must have shape \(3, 5\)", id="w_hr columns"),
    pytest.param(lambda w: ("lstm", None, [changed(w, w_peephole=w["w_peephole"][:-1])]),
                 ValueError, r"weights\[0\]: w_peephole must have shape \(15,\)",
                 id="w_peephole length"),
    pytest.param(lambda w: ("lstm", None, [changed(w, b_hh=None)]), ValueError,
                 r"weights\[0\]: b_ih and b_hh must both be given or both be None",
                 id="b_ih without b_hh"),
    pytest.param(lambda w: ("lstm", None, [changed(w, w_hh=None)]), ValueError,
                 r"weights\[0\] must hold w_ih and w_hh, got b_hh, b_ih, w_hr, w_ih, w_peephole",
                 id="no w_hh"),
    pytest.param(lambda w: ("lstm", None, [changed(w, w_xh=w["w_hh"])]), ValueError,
                 r"weights\[0\] has w_xh, which is none of w_ih, w_hh, b_ih, b_hh, w_hr, "
                 r"w_peephole", id="unknown name"),
    pytest.param(lambda w: ("lstm", None, [changed(w, w_hh=w["w_hh"].astype(np.float32))]),
                 TypeError, r"weights\[0\]: w_hh must have dtype float64", id="dtype"),
    pytest.param(lambda w: ("lstm", None, [changed(w, w_ih=w["w_ih"][:, :3]),
                                           changed(w, w_ih=w["w_ih"][:, :3], b_ih=w["b_ih"][:3])]),
                 ValueError, r"weights\[1\]: b_ih must have shape \(20,\)",
                 id="second layer"),
    pytest.param(lambda w: ("lstm", "relu", [w]), ValueError,
                 r"nonlinearity is the Elman RNN's.*a lstm stepper takes None, got 'relu'",
                 id="lstm with relu"),
    pytest.param(lambda w: ("gru", None, [{k: w[k][:3 * H] for k in ("w_ih", "b_ih", "b_hh")}
                                          | {"w_hh": w["w_hh"][:3 * H], "w_hr": w["w_hr"]}]),
                 ValueError, r"weights\[0\] has w_hr, which a gru layer does not have",
                 id="gru with w_hr"),
    pytest.param(lambda w: ("rnn", "sigmoid", [{k: w[k][:H] for k in ("w_ih", "w_hh")}]),
                 ValueError, r"nonlinearity must be 'tanh' or 'relu', got 'sigmoid'",
                 id="rnn with sigmoid"),
    pytest.param(lambda w: ("elman", None, [w]), ValueError,
                 r"cell must be 'rnn' or 'lstm' or 'gru' or 'lnlstm', got 'elman'", id="unknown cell"),
    pytest.param(lambda w: ("lstm", None, [[w["w_ih"], w["w_hh"]]]), TypeError,
                 r"weights\[0\] must be a dict of the layer's arrays by name, got a list of 2 "
                 r"items", id="not a dict"),
])
def test_the_native_stepper_checks_its_weights_as_the_functional_api_does(arguments, error, match,
                                                                         rng):
    """Every array of every layer has the shape and dtype the functional API's forward checks
    (check_forward): the kernel reads each as memory of those sizes, and a shorter one would be
    read past its end. The cell and its nonlinearity pick the kernel."""
    native = pytest.importorskip("fastlstm.native")
    w = lstm_weights(rng, P=3, peephole=True)
    w["w_hh"] = w["w_hh"][:, :3].copy()       # projected: w_hh is (4 H, P)
    with pytest.raises(error, match=match):
        native.Stepper(*arguments(w), 2, F64)


@pytest.mark.parametrize("B, dtype, error, match", [
    (0, F64, ValueError, "B must be an integer >= 1, got 0"),
    (2.0, F64, ValueError, "B must be an integer >= 1, got 2.0"),
    (2, np.float16, TypeError, "dtype must be np.float32 or np.float64, got float16"),
])
def test_the_native_stepper_checks_its_batch_and_dtype(B, dtype, error, match, rng):
    native = pytest.importorskip("fastlstm.native")
    with pytest.raises(error, match=match):
        native.Stepper("lstm", None, [lstm_weights(rng)], B, dtype)


def test_the_native_stepper_runs_the_kernel_of_its_cell_and_nonlinearity(rng):
    """A relu Elman stepper steps as the functional relu forward does."""
    native = pytest.importorskip("fastlstm.native")
    w = {k: a[:H] for k, a in lstm_weights(rng).items()}
    x = rng.standard_normal((1, 2, I))
    expected = native.rnn_forward(x, None, w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"],
                                  nonlinearity="relu", training=False)[0][0]
    got = native.Stepper("rnn", "relu", [w], 2, F64).step(x[0])
    assert_close(got, expected, TOLS[F64])
