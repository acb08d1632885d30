"""Bad arguments for every public entry point, drawn by hypothesis: run by test_fuzz.py in a
child process (``python tests/fuzz_bad_inputs.py``), so that a crash ends this process only.

Each property draws one bad argument (the others good) and asserts that the call raises a
documented exception (TypeError or ValueError; MemoryError for a size that cannot be allocated)
whose message names the argument, and that what the call was made on is exactly as it was: a
layer's parameters and gradients byte for byte, its mode, saved forward pass and dropout
generator (a backward afterwards gives the same bits as before); a functional context (its
backward gives the same bits); a stream's state; a Linear's parameters, gradients and saved
input; a fastlstm.torch module's parameters. Each property prints its name and the number of
examples it ran; the last line printed is all of them as a JSON object. Deterministic
(derandomize, no example database).
"""
import faulthandler
import functools
import json
import re
import sys

import numpy as np
from helpers import (BrokenTensor, f_backward, f_forward, layer_backward, layer_forward,
                     layer_problem, layer_state_sizes, make_layer, random_problem, weight_names)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastlstm
from fastlstm import losses, optim

SETTINGS = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow])
T, B, I, H, L = 3, 2, 3, 4, 2
F32 = np.float32
KINDS = ("rnn_tanh", "gru", "lstm", "lstmp")
# The layers' properties also run on stacks with feedback from later layers: a kind with
# FEEDBACK appended is that layer with feedback="top".
FEEDBACK = "+feedback"
LAYER_KINDS = KINDS + tuple(kind + FEEDBACK for kind in ("gru", "lstmp"))
COUNTS = {}


# ---------------------------------------------------------------- bad values

# Not arrays of numbers at all (None is left out: it means "zeros" or "none" for many arguments).
NOT_ARRAYS = st.sampled_from(["abc", {"a": 1}, [[1.0, 2.0], [3.0]], BrokenTensor(), object(),
                              1 + 2j, [None, None]])
BAD_DTYPES = st.sampled_from([np.int8, np.int32, np.int64, np.uint8, np.uint64, np.bool_,
                              np.float16, np.longdouble, np.complex64, np.complex128, object,
                              "U2", "S2", "M8[s]", "m8[s]"])
SHAPES = st.lists(st.integers(0, 5), max_size=5).map(tuple)


def bad_array(shape, dtype, valid=None):
    """Anything but an array of ``shape`` (or, when given, a shape ``valid`` accepts) and
    ``dtype``: no array at all, another shape, or another dtype."""
    valid = valid or (lambda s: s == shape)
    return st.one_of(
        NOT_ARRAYS,
        SHAPES.filter(lambda s: not valid(s)).map(lambda s: np.zeros(s, dtype)),
        BAD_DTYPES.map(lambda d: np.zeros(shape, d)),
        st.just(np.zeros(shape, np.float64 if dtype == F32 else F32)))


def bad_lengths(T, B):
    """Anything but B integers in [0, T]: one bad value among good ones, in a list or an array,
    or the wrong number of them, or not integers at all."""
    good = st.lists(st.integers(0, T), min_size=B, max_size=B)
    bad_value = st.one_of(st.integers(max_value=-1), st.integers(min_value=T + 1),
                          st.sampled_from([float("nan"), 1.5, 2.0, "1", None, True, 1j]))
    in_list = st.tuples(good, st.integers(0, B - 1), bad_value).map(
        lambda a: a[0][:a[1]] + [a[2]] + a[0][a[1] + 1:])
    in_array = st.tuples(good, st.integers(0, B - 1),
                         st.sampled_from([-1, T + 1, 2**64 - 1, np.nan, 0.5])).map(
        lambda a: np.array(a[0][:a[1]] + [a[2]] + a[0][a[1] + 1:]))
    return st.one_of(in_list, in_array,
                     st.lists(st.integers(0, T), max_size=5).filter(lambda v: len(v) != B),
                     SHAPES.filter(lambda s: s != (B,)).map(lambda s: np.zeros(s, np.int64)),
                     BAD_DTYPES.filter(lambda d: np.dtype(d).kind not in "iu").map(
                         lambda d: np.zeros(B, d)),
                     NOT_ARRAYS)


def expect_refusal(names, call, allowed=(TypeError, ValueError)):
    """``call()`` must raise one of ``allowed`` naming ``names`` (one name, or any of a tuple)."""
    names = (names,) if isinstance(names, str) else names
    try:
        call()
    except allowed as exc:
        assert any(re.search(rf"(?<![\w.]){re.escape(n)}\b", str(exc)) for n in names), \
            f"{type(exc).__name__}: {exc} does not name {' or '.join(names)}"
        return
    raise AssertionError(f"a bad {names[0]} was accepted")


# ---------------------------------------------------------------- layers that must not change


class Subject:
    """A layer (two layers deep, with dropout) after one training forward, and what a backward
    from it gives: the state every refused call must leave it in."""

    def __init__(self, kind, backend):
        feedback = "top" if kind.endswith(FEEDBACK) else None
        self.layer = make_layer(kind.removesuffix(FEEDBACK), I, H, num_layers=L, dropout=0.5,
                                seed=1, backend=backend, feedback=feedback)
        self.kind = kind
        self.x, self.states, self.dy, self.dstates = layer_problem(
            np.random.default_rng(0), self.layer, T, B)
        layer_forward(self.layer, self.x, self.states)
        self.before = self.snapshot()
        dx, dinits = layer_backward(self.layer, self.dy, self.dstates)
        self.after_backward = [dx, *dinits, *self.layer.grads.values()]
        self.layer.zero_grad()

    def snapshot(self):
        layer = self.layer
        return ([p.tobytes() for p in layer.parameters()],
                [g.tobytes() for g in layer.grads.values()], layer.training, id(layer._saved),
                layer._dropout_rng.bit_generator.state)

    def assert_unchanged(self):
        assert self.snapshot() == self.before, "a refused call changed the layer"
        dx, dinits = layer_backward(self.layer, self.dy, self.dstates)
        for a, b in zip([dx, *dinits, *self.layer.grads.values()], self.after_backward,
                        strict=True):
            assert np.array_equal(a, b), "the saved forward pass changed"
        self.layer.zero_grad()

    @property
    def state_arg(self):
        """The states in the form forward takes: h0, or (h0, c0)."""
        return self.states if len(self.states) == 2 else self.states[0]


SUBJECTS = {}


def subject(kind, backend):
    if (kind, backend) not in SUBJECTS:
        SUBJECTS[(kind, backend)] = Subject(kind, backend)
    return SUBJECTS[(kind, backend)]


def counted(fn):
    """Count the examples a property runs to the end, in COUNTS."""
    COUNTS[fn.__name__] = 0

    @functools.wraps(fn)
    def run(*args, **kwargs):
        fn(*args, **kwargs)
        COUNTS[fn.__name__] += 1
    return run


subjects = st.tuples(st.sampled_from(KINDS), st.sampled_from(["native", "reference"]))
layer_subjects = st.tuples(st.sampled_from(LAYER_KINDS), st.sampled_from(["native", "reference"]))


def bad_states(s, grad):
    """Bad h0 / hx (or with ``grad`` dh_n / dhx) for Subject ``s``: (name, value)."""
    shapes = [(L, B, n) for n in layer_state_sizes(s.layer)]
    names = ("dh_n", "dhx") if grad else ("h0", "hx")
    if len(shapes) == 1:
        return bad_array(shapes[0], F32).map(lambda v: (names[0], v))
    good = s.dstates if grad else s.states
    one_bad = st.tuples(st.integers(0, 1), st.one_of(st.none(), bad_array(shapes[0], F32))).map(
        lambda a: tuple(a[1] if k == a[0] else good[k] for k in range(2)))
    not_pair = st.one_of(bad_array(shapes[0], F32), st.just((good[0],)),
                         st.just((*good, good[0])), st.just({0: good[0], 1: good[1]}))
    return st.one_of(one_bad, not_pair).map(lambda v: (names[1], v))


@settings(SETTINGS, max_examples=300)
@given(layer_subjects, st.data())
@counted
def layer_forward_refuses(which, data):
    s = subject(*which)
    arg = data.draw(st.sampled_from(["x", "states", "lengths"]))
    if arg == "x":
        x = data.draw(bad_array((T, B, I), F32, lambda s: len(s) == 3 and s[2] == I))
        expect_refusal("x", lambda: s.layer(x))
    elif arg == "states":
        name, states = data.draw(bad_states(s, grad=False))
        expect_refusal(name, lambda: s.layer(s.x, states))
    else:
        lengths = data.draw(bad_lengths(T, B))
        expect_refusal("lengths", lambda: s.layer(s.x, s.state_arg, lengths=lengths))
    s.assert_unchanged()


@settings(SETTINGS, max_examples=200)
@given(layer_subjects, st.data())
@counted
def layer_backward_refuses(which, data):
    s = subject(*which)
    if data.draw(st.booleans()):
        dy = data.draw(bad_array(s.dy.shape, F32))
        expect_refusal("dy", lambda: s.layer.backward(dy, None))
    else:
        name, dstates = data.draw(bad_states(s, grad=True))
        expect_refusal(name, lambda: s.layer.backward(s.dy, dstates))
    s.assert_unchanged()


@settings(SETTINGS, max_examples=150)
@given(layer_subjects, st.data())
@counted
def load_state_dict_refuses(which, data):
    s = subject(*which)
    sd = s.layer.state_dict()
    names = list(sd)
    change = data.draw(st.sampled_from(["missing", "extra", "value", "not a mapping"]))
    if change == "missing":
        del sd[data.draw(st.sampled_from(names))]
    elif change == "extra":
        sd[data.draw(st.text(max_size=8).filter(lambda k: k not in sd))] = np.zeros(2, F32)
    elif change == "value":
        name = data.draw(st.sampled_from(names))
        sd[name] = data.draw(st.one_of(st.none(), bad_array(sd[name].shape, F32).filter(
            lambda v: not (isinstance(v, np.ndarray) and v.dtype.kind == "f"
                           and v.shape == sd[name].shape))))
    else:
        sd = data.draw(st.sampled_from([list(sd.values()), None, "abc", 3]))
    expect_refusal("state_dict", lambda: s.layer.load_state_dict(sd))
    s.assert_unchanged()


# ---------------------------------------------------------------- constructors

SIZES = ("input_size", "hidden_size", "num_layers")
NOT_INTS = st.sampled_from([2.5, 3.0, "3", None, True, [3], np.float64(2), 1j])
BAD_ARGS = {
    **{name: st.one_of(st.integers(max_value=0), NOT_INTS, st.integers(2**62, 10**30))
       for name in SIZES},
    "proj_size": st.one_of(st.integers(max_value=-1), st.integers(min_value=H), NOT_INTS),
    "dropout": st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1 + 1e-9),
                         st.sampled_from([float("nan"), "0.5", None, True, 1j, [0.5]])),
    "dtype": st.one_of(BAD_DTYPES, st.sampled_from(["bogus", None, [1, 2], "f4,f4", 3])),
    "seed": st.one_of(st.integers(max_value=-1), st.sampled_from([1.5, "1", True, [1]])),
    **{name: st.one_of(st.text(max_size=6).filter(lambda v: v not in choices),
                       st.sampled_from([None, 1, ["native"], np.array(["tanh"])]))
       for name, choices in (("backend", ("native", "reference")),
                             ("nonlinearity", ("tanh", "relu")),
                             ("recurrent_init", ("uniform", "orthogonal")))},
    **{name: st.sampled_from([1, 0, "yes", None, 1.0, [True], np.int64(1)])
       for name in ("bias", "batch_first", "bidirectional", "peephole", "unit_forget_bias")},
}
CELL_ARGS = {"nonlinearity": "rnn", "proj_size": "lstm", "peephole": "lstm",
             "unit_forget_bias": "lstm"}
CLASSES = {"rnn": fastlstm.RNN, "gru": fastlstm.GRU, "lstm": fastlstm.LSTM}


@settings(SETTINGS, max_examples=250)
@given(st.sampled_from(sorted(BAD_ARGS)), st.data())
@counted
def constructors_refuse(name, data):
    cell = CELL_ARGS.get(name) or data.draw(st.sampled_from(sorted(CLASSES)))
    value = data.draw(BAD_ARGS[name])
    size = name in SIZES and isinstance(value, int) and not isinstance(value, bool) and value > 0
    kwargs = dict(input_size=I, hidden_size=H, num_layers=L)
    kwargs[name] = value
    expect_refusal(name, lambda: CLASSES[cell](**kwargs),
                   (MemoryError,) if size else (TypeError, ValueError))


# ---------------------------------------------------------------- the functional API

FUNCTIONAL = {}


def functional_problem(kind, backend):
    """A good call's arguments, a context from it and the gradients its backward gives."""
    if (kind, backend) not in FUNCTIONAL:
        x, states, weights, dy, dstates = random_problem(np.random.default_rng(2), kind, T, B, I,
                                                         H)
        ctx = f_forward(backend, kind, x, states, weights)[2]
        FUNCTIONAL[(kind, backend)] = (x, states, weights, dy, dstates, ctx,
                                       f_backward(backend, kind, ctx, dy, dstates))
    return FUNCTIONAL[(kind, backend)]


def blamed(kind, arg):
    """The arguments a refusal of a bad ``arg`` may name. w_ih fixes hidden_size and w_hr
    proj_size, so a w_ih or w_hr of another consistent shape makes the others the odd ones."""
    names = ("x", "h0", "c0") + weight_names(kind)
    return {"w_ih": names, "w_hr": ("w_hr", "w_hh", "h0"),
            "batch_sizes": ("batch_sizes", "x")}.get(arg, (arg,))


@settings(SETTINGS, max_examples=300)
@given(subjects, st.data())
@counted
def functional_refuses(which, data):
    kind, backend = which
    x, states, weights, dy, dstates, ctx, expected = functional_problem(kind, backend)
    names = ("x", "h0", "c0")[:1 + len(states)] + weight_names(kind)
    good = [x, *states, *weights]
    arg = data.draw(st.sampled_from(names + ("batch_sizes", "dy", "dh_n", "ctx")))
    if arg == "batch_sizes":   # the valid ones: non-increasing, summing to x's T * B rows
        bs = data.draw(st.one_of(
            st.lists(st.integers(0, B), min_size=1, max_size=T + 2).filter(
                lambda v: sum(v) != T * B or v != sorted(v, reverse=True)),
            st.sampled_from([[np.nan, 2], [2.0, 2.0], [[2, 2]], [2**64 - 1], [True, True],
                             "ab", {"a": 1}, [-1, 7]])))
        call = lambda: f_forward(backend, kind, x.reshape(T * B, I), states, weights, bs)  # noqa
    elif arg == "dy":
        bad = data.draw(bad_array(dy.shape, np.float64))
        call = lambda: f_backward(backend, kind, ctx, bad, dstates)  # noqa: E731
    elif arg == "dh_n":
        bad = data.draw(bad_array(dstates[0].shape, np.float64))
        call = lambda: f_backward(backend, kind, ctx, dy, (bad,) + dstates[1:])  # noqa: E731
    elif arg == "ctx":
        other = "gru" if kind != "gru" else "rnn_tanh"
        bad = data.draw(st.sampled_from([None, {"x": 1}, (1, 2), "ctx",
                                         functional_problem(other, backend)[5]]))
        call = lambda: f_backward(backend, kind, bad, dy, dstates)  # noqa: E731
    else:
        k = names.index(arg)
        if good[k] is None:        # a bias of a layer without biases: nothing to spoil
            return
        # float32 would be refused as the other arrays' mismatch; x of other T, B is valid
        bad = data.draw(bad_array(good[k].shape, np.float64).filter(
            lambda v: not (isinstance(v, np.ndarray) and (v.dtype == F32 or (
                arg == "x" and v.ndim == 3 and v.shape[2] == I and v.dtype == np.float64)))))
        args = good[:k] + [bad] + good[k + 1:]
        n = 1 + len(states)
        call = lambda: f_forward(backend, kind, args[0], args[1:n], args[n:])  # noqa: E731
    expect_refusal(blamed(kind, arg), call)
    got = f_backward(backend, kind, ctx, dy, dstates)       # the context is as it was
    for a, b in zip([got[0], *got[1], *got[2]], [expected[0], *expected[1], *expected[2]],
                    strict=True):
        assert np.array_equal(a, b), "a refused call changed the context"


# ---------------------------------------------------------------- stacks with feedback

STACKS = {}
STACK_PAIRS = ((2, 0), (2, 1), (1, 0))


def stack_problem(kind, backend):
    """A good stack_forward call (three layers, every pair of STACK_PAIRS, dropout masks), its
    context and what its backward gives."""
    if (kind, backend) not in STACKS:
        layer = make_layer(kind, I, H, num_layers=3, feedback=list(STACK_PAIRS), seed=3,
                           dtype=np.float64)
        rng = np.random.default_rng(3)
        P, N = layer.output_size, T * B
        weights = [layer._weights(k) for k in range(3)]
        states = [tuple(rng.standard_normal((B, n)) for n in layer_state_sizes(layer))
                  for _ in range(3)]
        masks = [None] + [(rng.random((N, P)) < 0.5) * 2.0 for _ in range(2)]
        x, dy = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, P))
        dfinals = [tuple(rng.standard_normal(s.shape) for s in st_) for st_ in states]
        module = getattr(fastlstm, backend)
        call = functools.partial(module.stack_forward, layer.cell,
                                 nonlinearity=getattr(layer, "nonlinearity", "tanh"))
        ctx = call(x, states, weights, STACK_PAIRS, masks=masks)[2]
        expected = module.stack_backward(ctx, dy, dfinals)
        STACKS[(kind, backend)] = (call, module, x, states, weights, masks, dy, dfinals, ctx,
                                   expected)
    return STACKS[(kind, backend)]


def flat(result):
    """stack_backward's (dx, dinits, grads) as a list of arrays."""
    dx, dinits, grads = result
    return [dx] + [a for d in dinits for a in d] + [g[k] for g in grads for k in sorted(g)]


@settings(SETTINGS, max_examples=300)
@given(subjects, st.data())
@counted
def stacks_refuse(which, data):
    kind, backend = which
    call, module, x, states, weights, masks, dy, dfinals, ctx, expected = stack_problem(kind,
                                                                                        backend)
    arg = data.draw(st.sampled_from(["x", "states", "weights", "feedback", "masks", "dy",
                                     "dfinals", "ctx"]))
    bad_f64 = lambda shape: bad_array(shape, np.float64).filter(  # noqa: E731
        lambda v: not (isinstance(v, np.ndarray) and v.dtype == F32))
    if arg in ("states", "dfinals", "masks"):
        entries = {"states": states, "dfinals": dfinals, "masks": masks}[arg]
        k = data.draw(st.integers(1 if arg == "masks" else 0, 2))
        if arg == "masks":
            bad_entry = data.draw(bad_f64(masks[k].shape))
        else:
            j = data.draw(st.integers(0, len(entries[k]) - 1))
            bad_entry = data.draw(st.one_of(
                bad_f64(entries[k][j].shape).map(lambda v, j=j, k=k: tuple(
                    v if i == j else a for i, a in enumerate(entries[k]))),
                st.sampled_from([(entries[k][0],) * 3, "ab", 1.5])))
        bad = list(entries[:k]) + [bad_entry] + list(entries[k + 1:])
        bad = data.draw(st.one_of(st.just(bad), st.sampled_from(["abc", bad[:2], {0: 1}])))
        if arg == "states":
            run = lambda: call(x, bad, weights, STACK_PAIRS, masks=masks)  # noqa: E731
        elif arg == "masks":
            run = lambda: call(x, states, weights, STACK_PAIRS, masks=bad)  # noqa: E731
        else:
            run = lambda: module.stack_backward(ctx, dy, bad)  # noqa: E731
        names = (arg,)
    elif arg == "weights":
        k = data.draw(st.integers(0, 2))
        name = data.draw(st.sampled_from(sorted(weights[k])))
        value = data.draw(st.one_of(bad_f64(weights[k][name].shape), st.none()))
        bad = [dict(w) for w in weights]
        bad[k][name] = value
        bad = data.draw(st.one_of(st.just(bad), st.sampled_from(
            [bad[:2], {0: weights[0]}, "w", [weights[0], weights[1], 3]])))
        run = lambda: call(x, states, bad, STACK_PAIRS, masks=masks)  # noqa: E731
        # w_ih of layer 0 fixes hidden_size, and a weight of other consistent sizes makes the
        # others odd ones
        # (a list of two layers' weights makes the pairs with layer 2 out of range)
        names = ("weights", "x", "states", "masks", "feedback")
    elif arg == "feedback":
        bad = data.draw(st.one_of(NOT_ARRAYS, st.sampled_from(
            [((0, 2),), ((2, 0), (2, 0)), ((3, 0),), ((1, 1),), ((2, -1),), ((2.0, 0),),
             ((True, 0),), (2, 0), "top", ((2, 0, 1),)])))
        run = lambda: call(x, states, weights, bad, masks=masks)  # noqa: E731
        names = ("feedback",)
    elif arg == "x":
        bad = data.draw(bad_f64(x.shape).filter(
            lambda v: not (isinstance(v, np.ndarray) and v.ndim == 3 and v.shape[2] == I
                           and v.dtype == np.float64)))
        run = lambda: call(bad, states, weights, STACK_PAIRS, masks=masks)  # noqa: E731
        names = ("x", "weights", "states", "masks")
    elif arg == "dy":
        bad = data.draw(bad_f64(dy.shape))
        run = lambda: module.stack_backward(ctx, bad, dfinals)  # noqa: E731
        names = ("dy",)
    else:
        bad = data.draw(st.sampled_from([None, {"x": 1}, (1, 2), "ctx",
                                         functional_problem("gru", backend)[5]]))
        run = lambda: module.stack_backward(bad, dy, dfinals)  # noqa: E731
        names = ("ctx",)
    expect_refusal(names, run)
    for a, b in zip(flat(module.stack_backward(ctx, dy, dfinals)), flat(expected), strict=True):
        assert np.array_equal(a, b), "a refused call changed the context"


# ---------------------------------------------------------------- streams

STREAMS = {}


def stream_state(stream):
    state = stream.state
    return [a.tobytes() for a in (state if isinstance(state, tuple) else (state,))]


def stream_of(kind, backend):
    if (kind, backend) not in STREAMS:
        STREAMS[(kind, backend)] = subject(kind, backend).layer.stream(B)
        STREAMS[(kind, backend)].step(np.ones((B, I), F32))     # a state that is not zeros
    return STREAMS[(kind, backend)]


@settings(SETTINGS, max_examples=200)
@given(layer_subjects, st.data())
@counted
def streams_refuse(which, data):
    s, stream = subject(*which), stream_of(*which)
    before = stream_state(stream)
    P = s.layer.output_size
    arg = data.draw(st.sampled_from(["batch_size", "x", "out", "state"]))
    if arg == "batch_size":
        value = data.draw(st.one_of(st.integers(max_value=0), NOT_INTS,
                                    st.integers(2**62, 10**30)))
        huge = isinstance(value, int) and not isinstance(value, bool) and value > 0
        expect_refusal("batch_size", lambda: s.layer.stream(value),
                       (MemoryError,) if huge else (TypeError, ValueError))
    elif arg == "x":
        x = data.draw(bad_array((B, I), F32))
        expect_refusal("x", lambda: stream.step(x))
    elif arg == "out":
        out = data.draw(st.one_of(bad_array((B, P), F32), st.sampled_from([
            np.zeros((P, B), F32).T, np.zeros((B, 2 * P), F32)[:, ::2],
            np.broadcast_to(np.zeros(P, F32), (B, P))])))
        expect_refusal("out", lambda: stream.step(np.ones((B, I), F32), out=out))
    else:
        name, state = data.draw(bad_states(s, grad=False))
        expect_refusal("state", lambda: stream.reset(state))
    assert stream_state(stream) == before, "a refused call changed the stream's state"



# ---------------------------------------------------------------- Linear, losses, optimizers

NOT_NUMBERS = st.sampled_from([float("nan"), float("inf"), -float("inf"), "0.1", None, True,
                               [0.1], 1j])
LINEAR_ARGS = {"in_features": "input_size", "out_features": "input_size"}   # bad values alike
OPTIMIZERS = {
    "SGD": (optim.SGD, dict(lr=0.1), ("lr", "momentum", "weight_decay")),
    "Adam": (optim.Adam, {}, ("lr", "eps", "weight_decay")),
    "RMSprop": (optim.RMSprop, {}, ("lr", "alpha", "eps", "weight_decay", "momentum")),
}


def linear_subject():
    if "linear" not in SUBJECTS:
        linear = fastlstm.Linear(3, 2, seed=0)
        linear(np.ones((4, 3), F32))
        SUBJECTS["linear"] = linear
    return SUBJECTS["linear"]


def module_bytes(m):
    return ([p.tobytes() for p in m.parameters()], [g.tobytes() for g in m.grads.values()],
            m._x.tobytes())


@settings(SETTINGS, max_examples=250)
@given(st.sampled_from(["Linear", "Linear.forward", "Linear.backward", "mse", "cross_entropy",
                        "optimizer", "clip_grad_norm"]), st.data())
@counted
def toolkit_refuses(what, data):
    linear = linear_subject()
    before = module_bytes(linear)
    if what == "Linear":
        name = data.draw(st.sampled_from(["in_features", "out_features", "bias", "dtype",
                                          "seed"]))
        value = data.draw(BAD_ARGS[LINEAR_ARGS.get(name, name)])
        huge = name.endswith("features") and isinstance(value, int) and value > 0 and \
            not isinstance(value, bool)
        kwargs = dict(in_features=3, out_features=2)
        kwargs[name] = value
        expect_refusal(name, lambda: fastlstm.Linear(**kwargs),
                       (MemoryError,) if huge else (TypeError, ValueError))
    elif what == "Linear.forward":
        x = data.draw(bad_array((4, 3), F32, lambda s: len(s) >= 1 and s[-1] == 3))
        expect_refusal("x", lambda: linear(x))
    elif what == "Linear.backward":
        dy = data.draw(bad_array((4, 2), F32))
        expect_refusal("dy", lambda: linear.backward(dy))
    elif what == "mse":
        name = data.draw(st.sampled_from(["pred", "target"]))
        bad = data.draw(st.one_of(NOT_ARRAYS, BAD_DTYPES.map(lambda d: np.zeros(3, d)))
                        if name == "pred" else bad_array((3,), np.float64))
        args = (bad, np.zeros(3)) if name == "pred" else (np.zeros(3), bad)
        expect_refusal(name, lambda: losses.mse(*args))
    elif what == "cross_entropy":
        name = data.draw(st.sampled_from(["logits", "labels"]))
        if name == "logits":
            bad = data.draw(st.one_of(NOT_ARRAYS, BAD_DTYPES.map(lambda d: np.zeros((2, 3), d)),
                                      SHAPES.filter(lambda s: s[-1:] in ((), (0,))).map(
                                          np.zeros)))
            args = (bad, np.zeros(2, np.int64))
        else:
            bad = data.draw(st.one_of(
                NOT_ARRAYS, BAD_DTYPES.filter(lambda d: np.dtype(d).kind not in "iu").map(
                    lambda d: np.zeros(2, d)),
                SHAPES.filter(lambda s: s != (2,)).map(lambda s: np.zeros(s, np.int64)),
                st.lists(st.one_of(st.integers(max_value=-1), st.integers(min_value=3)),
                         min_size=2, max_size=2)))
            args = (np.zeros((2, 3)), bad)
        expect_refusal(name, lambda: losses.cross_entropy(*args))
    elif what == "optimizer":
        cls, kwargs, numbers = OPTIMIZERS[data.draw(st.sampled_from(sorted(OPTIMIZERS)))]
        name = data.draw(st.sampled_from(numbers + ("layers",)))
        kwargs = dict(kwargs)
        if name == "layers":
            layers = data.draw(st.sampled_from([None, [], "abc", [linear, object()], 3]))
        else:
            layers = linear
            kwargs[name] = data.draw(st.one_of(st.floats(max_value=-1e-9), NOT_NUMBERS))
        expect_refusal(name, lambda: cls(layers, **kwargs))
    else:
        max_norm = data.draw(st.one_of(st.floats(max_value=-1e-9),
                                       NOT_NUMBERS.filter(lambda v: v != float("inf"))))
        expect_refusal("max_norm", lambda: optim.clip_grad_norm(linear, max_norm))
    assert module_bytes(linear) == before, "a refused call changed the Linear"


# ---------------------------------------------------------------- fastlstm.torch


@settings(SETTINGS, max_examples=150)
@given(st.sampled_from(["RNN", "GRU", "LSTM"]), st.data())
@counted
def torch_bridge_refuses(cell, data):
    import torch
    import fastlstm.torch as ft
    if cell not in SUBJECTS:
        SUBJECTS[cell] = getattr(ft, cell)(I, H, num_layers=L)
    module = SUBJECTS[cell]
    before = [p.detach().numpy().tobytes() for p in module.parameters()]
    x = torch.zeros(T, B, I)
    hx_shape = (L, B, H)
    if data.draw(st.booleans()):
        spec = data.draw(st.one_of(
            NOT_ARRAYS.map(lambda v: ("python", v)),
            BAD_DTYPES.filter(lambda d: d in (np.int64, np.float16, np.complex64, np.bool_,
                                              np.int8)).map(lambda d: ("dtype", d)),
            st.just(("dtype", np.float64)),
            SHAPES.filter(lambda s: len(s) not in (2, 3) or s[-1] != I).map(
                lambda s: ("shape", s))))
        kind, v = spec
        bad = v if kind == "python" else torch.zeros(T, B, I, dtype=torch.from_numpy(
            np.zeros(1, v)).dtype) if kind == "dtype" else torch.zeros(v)
        expect_refusal("input", lambda: module(bad))
    else:
        good = torch.zeros(hx_shape)
        bad = data.draw(st.one_of(
            NOT_ARRAYS, st.just(np.zeros(hx_shape, F32)),
            SHAPES.filter(lambda s: s != hx_shape).map(torch.zeros),
            st.sampled_from([torch.float64, torch.int64, torch.float16]).map(
                lambda d: torch.zeros(hx_shape, dtype=d))))
        hx = (bad, good) if cell == "LSTM" and data.draw(st.booleans()) else bad
        expect_refusal("hx", lambda: module(x, hx))
    after = [p.detach().numpy().tobytes() for p in module.parameters()]
    assert after == before and all(p.grad is None for p in module.parameters())


def main():
    faulthandler.enable()          # a crash prints the Python stack of where it happened
    fastlstm.set_num_threads(1)
    properties = [layer_forward_refuses, layer_backward_refuses, load_state_dict_refuses,
                  constructors_refuse, functional_refuses, stacks_refuse, streams_refuse,
                  toolkit_refuses]
    try:
        import torch  # noqa: F401
        properties.append(torch_bridge_refuses)
    except ImportError:
        pass
    for prop in properties:
        prop()
        print(prop.__name__, COUNTS[prop.__name__], flush=True)
    # the properties that ran (COUNTS names every one defined, torch's too without torch)
    print(json.dumps({prop.__name__: COUNTS[prop.__name__] for prop in properties}))


if __name__ == "__main__":
    sys.exit(main())
