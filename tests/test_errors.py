"""Bad input raises a ValueError/TypeError (or RuntimeError for a call out of order) whose message
names the argument, what it got and what it expected; and a layer that refused a call is exactly
as it was: parameters, gradients, training flag, the saved forward pass and the dropout stream.
"""
import re

import numpy as np
import pytest
from helpers import (Twins, f_backward, f_forward, layer_backward, layer_forward, make_layer,
                     n_states, random_problem)

import fastlstm

T, B, I, H, L = Twins.T, Twins.B, Twins.I, Twins.H, Twins.L
F32 = np.float32
LAYER_KW = Twins.LAYER_KW


def esc(value):
    """A regex matching ``value``'s repr (or a shape tuple) literally."""
    return re.escape(repr(value))


# ---------------------------------------------------------------- a layer that must not change
# (helpers.Twins: the layer and its twin)

TWIN_PARAMS = [f"{kind}-{backend}" for kind in ("rnn_tanh", "gru", "lstm")
               for backend in ("native", "reference")]
# The same, with the index of the state under test: h0 (0) for every cell, c0 (1) for the LSTM.
TWIN_STATE_PARAMS = [f"{p}-{k}" for p in TWIN_PARAMS for k in ((0, 1) if "lstm" in p else (0,))]


@pytest.fixture(params=TWIN_PARAMS)
def twins(request):
    kind, backend = request.param.split("-")
    return Twins(kind, backend)


@pytest.fixture(params=TWIN_STATE_PARAMS)
def twins_k(request):
    kind, backend, k = request.param.split("-")
    return Twins(kind, backend), int(k)


def bad_states(tw, k, bad):
    """The layer's states argument with state ``k`` replaced by ``bad``."""
    if n_states(tw.kind) == 2:
        states = list(tw.states)
        states[k] = bad
        return tuple(states)
    return bad


def state_name(tw, k):
    return f"hx\\[{k}\\]" if n_states(tw.kind) == 2 else "h0"


def dstate_name(tw, k):
    return f"dhx\\[{k}\\]" if n_states(tw.kind) == 2 else "dh_n"


# ---------------------------------------------------------------- forward with bad x

BAD_X = {
    "2-D": (lambda x: x[0], ValueError, r"x must be 3-D.*input_size=3.*got shape \(2, 3\)"),
    "4-D": (lambda x: x[..., None], ValueError,
            r"x must be 3-D.*input_size=3.*got shape \(5, 2, 3, 1\)"),
    "feature size": (lambda x: np.zeros((T, B, 7), F32), ValueError,
                     r"x must be 3-D.*input_size=3.*got shape \(5, 2, 7\)"),
    "float64": (lambda x: x.astype(np.float64), TypeError,
                r"x must have dtype float32.*got float64"),
    "int": (lambda x: np.zeros((T, B, I), np.int64), TypeError,
            r"x must have dtype float32.*got int64"),
    "string": (lambda x: "abc", TypeError, r"x must have dtype float32.*got <U3"),
}


@pytest.mark.parametrize("case", list(BAD_X))
def test_forward_rejects_bad_x(twins, case):
    make_x, exc, match = BAD_X[case]
    with pytest.raises(exc, match=match):
        layer_forward(twins.layer, make_x(twins.x), twins.states)
    twins.assert_unchanged()


# ---------------------------------------------------------------- forward with bad states

BAD_STATE_SHAPES = {"num_layers": (L + 1, B, H), "batch": (L, B + 1, H),
                    "hidden": (L, B, H + 1), "2-D": (B, H)}


@pytest.mark.parametrize("case", list(BAD_STATE_SHAPES))
def test_forward_rejects_bad_state_shape(twins_k, case):
    twins, k = twins_k
    shape = BAD_STATE_SHAPES[case]
    states = bad_states(twins, k, np.zeros(shape, F32))
    match = (state_name(twins, k) + r" must have shape " + esc((L, B, H))
             + r".*got " + esc(shape))
    with pytest.raises(ValueError, match=match):
        twins.layer(twins.x, states)
    twins.assert_unchanged()


def test_forward_rejects_bad_state_dtype(twins_k):
    twins, k = twins_k
    states = bad_states(twins, k, twins.states[k].astype(np.float64))
    with pytest.raises(TypeError, match=state_name(twins, k)
                       + r" must have dtype float32.*got float64"):
        twins.layer(twins.x, states)
    twins.assert_unchanged()


@pytest.mark.parametrize("hx, got", [
    (lambda s: s[0], r"got an array of shape \(2, 2, 4\)"),
    (lambda s: (s[0],), r"got a tuple of 1 items"),
    (lambda s: (s[0], s[1], s[1]), r"got a tuple of 3 items"),
    (lambda s: "ab", r"got str 'ab'"),
], ids=["array", "tuple of 1", "tuple of 3", "string"])
def test_lstm_hx_must_be_a_pair(hx, got):
    tw = Twins("lstm", "native")
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h0, c0\).*" + got):
        tw.layer(tw.x, hx(tw.states))
    tw.assert_unchanged()


@pytest.mark.parametrize("k", [0, 1])
def test_lstm_hx_items_must_not_be_none(k):
    tw = Twins("lstm", "native")
    hx = list(tw.states)
    hx[k] = None
    with pytest.raises(TypeError,
                       match=rf"hx\[{k}\] must be an array of shape \(2, 2, 4\), got None"):
        tw.layer(tw.x, tuple(hx))
    tw.assert_unchanged()


# ---------------------------------------------------------------- backward


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm"])
def test_backward_before_any_forward(kind, backend):
    layer = make_layer(kind, I, H, backend=backend, **LAYER_KW)
    with pytest.raises(RuntimeError, match="training mode"):
        layer.backward(np.zeros((T, B, H), F32))
    assert not any(g.any() for g in layer.grads.values())


def test_backward_after_an_eval_forward(twins):
    """A training forward, then an eval forward: backward must refuse (the last forward kept
    nothing), even after switching back to training mode."""
    twins.layer.eval()
    layer_forward(twins.layer, twins.x, twins.states)
    twins.layer.train()
    with pytest.raises(RuntimeError, match=r"training mode"):
        layer_backward(twins.layer, twins.dy, twins.dstates)
    twins.assert_unchanged(backward=False)


BAD_DY = {
    "shape": (lambda dy: dy[:, :, :3], ValueError,
              r"dy must have the shape of y, \(5, 2, 4\), got \(5, 2, 3\)"),
    "ndim": (lambda dy: dy[0], ValueError,
             r"dy must have the shape of y, \(5, 2, 4\), got \(2, 4\)"),
    "batch-first": (lambda dy: dy.transpose(1, 0, 2), ValueError,
                    r"dy must have the shape of y, \(5, 2, 4\), got \(2, 5, 4\)"),
    "float64": (lambda dy: dy.astype(np.float64), TypeError,
                r"dy must have dtype float32.*float64"),
    "int": (lambda dy: dy.astype(np.int32), TypeError, r"dy must have dtype float32.*int32"),
}


@pytest.mark.parametrize("case", list(BAD_DY))
def test_backward_rejects_bad_dy(twins, case):
    make_dy, exc, match = BAD_DY[case]
    with pytest.raises(exc, match=match):
        layer_backward(twins.layer, make_dy(twins.dy), twins.dstates)
    twins.assert_unchanged()


@pytest.mark.parametrize("case", list(BAD_STATE_SHAPES))
def test_backward_rejects_bad_state_gradient(twins_k, case):
    twins, k = twins_k
    shape = BAD_STATE_SHAPES[case]
    dstates = list(twins.dstates)
    dstates[k] = np.zeros(shape, F32)
    match = (dstate_name(twins, k) + r" must have shape " + esc((L, B, H))
             + r".*got " + esc(shape))
    with pytest.raises(ValueError, match=match):
        layer_backward(twins.layer, twins.dy, dstates)
    twins.assert_unchanged()


def test_lstm_dhx_must_be_a_pair():
    tw = Twins("lstm", "native")
    with pytest.raises(TypeError,
                       match=r"dhx must be a tuple \(dh_n, dc_n\).*got an array of shape"):
        tw.layer.backward(tw.dy, tw.dstates[0])
    tw.assert_unchanged()


# ---------------------------------------------------------------- constructors

CTOR_CASES = [
    (dict(input_size=0), ValueError, r"input_size.*>= 1.*got 0"),
    (dict(input_size=-1), ValueError, r"input_size.*got -1"),
    (dict(input_size=2.5), ValueError, r"input_size.*got 2\.5"),
    (dict(input_size=True), ValueError, r"input_size.*got True"),
    (dict(input_size="3"), ValueError, r"input_size.*got '3'"),
    (dict(hidden_size=0), ValueError, r"hidden_size.*>= 1.*got 0"),
    (dict(num_layers=0), ValueError, r"num_layers.*>= 1.*got 0"),
    (dict(dropout=-0.1), ValueError, r"dropout.*\[0, 1\].*got -0\.1"),
    (dict(dropout=1.5), ValueError, r"dropout.*\[0, 1\].*got 1\.5"),
    (dict(dropout="a"), ValueError, r"dropout.*got 'a'"),
    (dict(dropout=float("nan")), ValueError, r"dropout.*got nan"),
    (dict(dtype=np.int32), TypeError, r"dtype must be np\.float32 or np\.float64, got int32"),
    (dict(dtype=np.float16), TypeError, r"dtype must be np\.float32 or np\.float64, got float16"),
    (dict(dtype="bogus"), TypeError, r"dtype must be np\.float32 or np\.float64, got 'bogus'"),
    (dict(dtype=None), TypeError, r"dtype must be np\.float32 or np\.float64, got None"),
    (dict(backend="cuda"), ValueError, r"backend must be 'native' or 'reference', got 'cuda'"),
    (dict(bias="yes"), TypeError, r"bias must be True or False, got 'yes'"),
    (dict(batch_first=1), TypeError, r"batch_first must be True or False, got 1"),
    (dict(bidirectional=None), TypeError, r"bidirectional must be True or False, got None"),
    (dict(seed=-1), ValueError, r"seed.*non-negative integer, got -1"),
    (dict(seed=1.5), ValueError, r"seed.*got 1\.5"),
    (dict(recurrent_init="normal"), ValueError,
     r"recurrent_init must be 'uniform' or 'orthogonal', got 'normal'"),
]


def case_id(case):
    return "-".join(f"{k}={v!r}" for k, v in case[0].items())


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
@pytest.mark.parametrize("case", CTOR_CASES, ids=case_id)
def test_constructor_rejects_bad_arguments(kind, case):
    kwargs, exc, match = case
    args = dict(input_size=3, hidden_size=4)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        make_layer(kind, args.pop("input_size"), args.pop("hidden_size"), **args)


@pytest.mark.parametrize("nonlinearity", ["sigmoid", None, "TANH"])
def test_rnn_rejects_bad_nonlinearity(nonlinearity):
    with pytest.raises(ValueError, match=r"nonlinearity must be 'tanh' or 'relu', got "
                       + esc(nonlinearity)):
        fastlstm.RNN(3, 4, nonlinearity=nonlinearity)


@pytest.mark.parametrize("proj_size, exc, match", [
    (-1, ValueError, r"proj_size.*>= 0.*got -1"),
    (True, ValueError, r"proj_size.*got True"),
    (4, ValueError, r"proj_size must be smaller than hidden_size=4, got proj_size=4"),
    (5, ValueError, r"proj_size must be smaller than hidden_size=4, got proj_size=5"),
])
def test_lstm_proj_size(proj_size, exc, match):
    with pytest.raises(exc, match=match):
        fastlstm.LSTM(3, 4, proj_size=proj_size)


@pytest.mark.parametrize("dtype, expected", [
    ("float32", np.float32), ("float64", np.float64), (np.dtype("float32"), np.float32),
    (np.float64, np.float64)])
def test_dtype_accepts_anything_numpy_spells_as_float32_or_float64(dtype, expected):
    layer = fastlstm.LSTM(3, 4, dtype=dtype)
    assert layer.dtype == expected
    assert all(p.dtype == expected for p in layer.parameters())
    y, _ = layer(np.zeros((2, 1, 3), expected))
    assert y.dtype == expected


def test_train_mode_must_be_a_bool():
    layer = fastlstm.RNN(3, 4)
    with pytest.raises(TypeError, match=r"mode must be True or False, got 'no'"):
        layer.train("no")
    assert layer.training is True


# ---------------------------------------------------------------- state dicts


def full_state_dict(tw, change=None):
    """A complete, valid state dict different from the layer's own, then ``change`` applied."""
    sd = {k: v + np.float32(0.25) for k, v in tw.params_before.items()}
    if change:
        change(sd)
    return sd


def set_last(value_of):
    def change(sd):
        last = list(sd)[-1]
        sd[last] = value_of(sd[last])
    return change


BAD_STATE_DICTS = {
    "missing key": (lambda sd: sd.pop("bias_hh_l1"), ValueError,
                    r"missing keys \['bias_hh_l1'\], unexpected keys \[\]"),
    "extra key": (lambda sd: sd.update(weight_hr_l0=np.zeros((4, 4), F32)), ValueError,
                  r"missing keys \[\], unexpected keys \['weight_hr_l0'\]"),
    "wrong shape": (set_last(lambda v: v[:-1]), ValueError,
                    r"state_dict\['bias_hh_l1'\] must have shape \((4|12|16),\), got "
                    r"\((3|11|15),\)"),
    "int dtype": (set_last(lambda v: v.astype(np.int64)), TypeError,
                  r"state_dict\['bias_hh_l1'\] must have a floating dtype, got int64"),
    "string": (set_last(lambda v: "abc"), TypeError, r"state_dict\['bias_hh_l1'\]"),
    "None": (set_last(lambda v: None), TypeError, r"state_dict\['bias_hh_l1'\]"),
}


@pytest.mark.parametrize("case", list(BAD_STATE_DICTS))
def test_rejected_load_state_dict_changes_nothing(twins, case):
    """Every key but the bad one is valid (and different from the current values), so a loader
    that copied key by key would have changed the earlier parameters before failing."""
    change, exc, match = BAD_STATE_DICTS[case]
    with pytest.raises(exc, match=match):
        twins.layer.load_state_dict(full_state_dict(twins, change))
    twins.assert_unchanged()


def test_load_state_dict_needs_a_mapping(twins):
    with pytest.raises(TypeError, match=r"state_dict must be a mapping.*got a list of \d+ items"):
        twins.layer.load_state_dict(list(twins.params_before.values()))
    twins.assert_unchanged()


# ---------------------------------------------------------------- functional API

TF, BF, IF, HF = 5, 2, 3, 4


@pytest.fixture(params=["native", "reference"])
def backend(request):
    return request.param


def functional_args(kind, dtype=np.float64):
    rng = np.random.default_rng(3)
    return random_problem(rng, kind, TF, BF, IF, HF, dtype=dtype)


def call_forward(backend, kind, x=None, states=None, weights=None, **replace):
    """f_forward with one weight replaced by name (w_ih, w_hh, b_ih, b_hh)."""
    x0, s0, w0, _, _ = functional_args(kind)
    weights = dict(zip(("w_ih", "w_hh", "b_ih", "b_hh"), w0 if weights is None else weights))
    weights.update(replace)
    return f_forward(backend, kind, x0 if x is None else x, s0 if states is None else states,
                     tuple(weights.values()))


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm"])
def test_functional_mismatched_dtypes(backend, kind):
    x, states, weights, _, _ = functional_args(kind)
    with pytest.raises(TypeError, match=r"w_ih must have dtype float32 \(like the other arrays\),"
                                        r" got float64"):
        f_forward(backend, kind, x.astype(F32), states, weights)
    with pytest.raises(TypeError, match=r"h0 must have dtype float64.*got float32"):
        f_forward(backend, kind, x, (states[0].astype(F32),) + states[1:], weights)
    with pytest.raises(TypeError, match=r"b_hh must have dtype float64.*got float32"):
        call_forward(backend, kind, b_hh=weights[3].astype(F32))


@pytest.mark.parametrize("kind, name, shape, match", [
    ("rnn_tanh", "w_ih", (4, 4), r"w_ih must have shape \(4, 3\).*got \(4, 4\)"),
    ("rnn_tanh", "w_hh", (4, 5), r"w_hh must have shape \(4, 4\).*got \(4, 5\)"),
    ("rnn_tanh", "b_ih", (5,), r"b_ih must have shape \(4,\).*got \(5,\)"),
    ("lstm", "w_ih", (5, 3), r"w_ih must have shape \(4 \* hidden_size, input_size\).*"
                             r"got \(5, 3\)"),
    ("lstm", "w_ih", (16, 2), r"w_ih must have shape \(16, 3\).*got \(16, 2\)"),
    ("lstm", "w_hh", (16, 5), r"w_hh must have shape \(16, 4\).*got \(16, 5\)"),
    ("lstm", "b_hh", (4,), r"b_hh must have shape \(16,\).*got \(4,\)"),
    ("lstm", "w_hh", (16,), r"w_hh must be 2-D, got 1-D"),
])
def test_functional_weight_shapes(backend, kind, name, shape, match):
    with pytest.raises(ValueError, match=match):
        call_forward(backend, kind, **{name: np.zeros(shape)})


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm"])
def test_functional_bias_pair(backend, kind):
    with pytest.raises(ValueError, match=r"b_ih and b_hh must both be given or both be None"):
        call_forward(backend, kind, b_hh=None)
    with pytest.raises(ValueError, match=r"b_ih and b_hh must both be given or both be None"):
        call_forward(backend, kind, b_ih=None)


@pytest.mark.parametrize("nonlinearity", ["bad", None, "sigmoid"])
def test_functional_nonlinearity(backend, nonlinearity):
    x, states, weights, _, _ = functional_args("rnn_tanh")
    mod = getattr(fastlstm, backend)
    with pytest.raises(ValueError, match=r"nonlinearity must be 'tanh' or 'relu', got "
                       + esc(nonlinearity)):
        mod.rnn_forward(x, states[0], *weights, nonlinearity=nonlinearity)


FUNCTIONAL_BAD_INPUTS = [
    ("x 2-D", ValueError,
     r"x must be 3-D \(T, batch, input_size\); packed .* need batch_sizes, got 2-D array of "
     r"shape \(2, 3\)"),
    ("x int", TypeError, r"x must have dtype float32 or float64, got int64"),
    ("x float16", TypeError, r"x must have dtype float32 or float64, got float16"),
    ("h0 shape", ValueError, r"h0 must have shape \(2, 4\).*got \(3, 4\)"),
]


@pytest.mark.parametrize("kind, case, exc, match",
                         [("rnn_tanh",) + c for c in FUNCTIONAL_BAD_INPUTS]
                         + [("lstm",) + c for c in FUNCTIONAL_BAD_INPUTS]
                         + [("lstm", "c0 shape", ValueError,
                             r"c0 must have shape \(2, 4\).*got \(2, 5\)")])
def test_functional_bad_inputs(backend, kind, case, exc, match):
    x, states, weights, _, _ = functional_args(kind)
    if case == "x 2-D":
        x = x[0]
    elif case == "x int":
        x = np.zeros(x.shape, np.int64)
    elif case == "x float16":
        x = x.astype(np.float16)
    elif case == "h0 shape":
        states = (np.zeros((3, HF)),) + states[1:]
    else:
        states = (states[0], np.zeros((BF, HF + 1)))
    with pytest.raises(exc, match=match):
        f_forward(backend, kind, x, states, weights)


@pytest.mark.parametrize("kind, other", [("rnn_tanh", "lstm"), ("lstm", "rnn_tanh")])
def test_functional_backward_with_the_other_cells_context(backend, kind, other):
    x, states, weights, dy, dstates = functional_args(other)
    ctx = f_forward(backend, other, x, states, weights)[2]
    theirs, mine = ("lstm", "rnn") if other == "lstm" else ("rnn", "lstm")
    with pytest.raises(ValueError, match=rf"ctx comes from {theirs}_forward, expected a context "
                                         rf"of {mine}_forward"):
        f_backward(backend, kind, ctx, dy, (None,) * (2 if kind == "lstm" else 1))


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm"])
@pytest.mark.parametrize("ctx, got", [(None, "NoneType None"), ({"x": 1}, "dict"),
                                      ((1, 2), "a tuple of 2 items")])
def test_functional_backward_needs_a_context(backend, kind, ctx, got):
    n = 2 if kind == "lstm" else 1
    with pytest.raises(TypeError, match=r"ctx must be the Context returned by \w+_forward, got "
                       + re.escape(got)):
        f_backward(backend, kind, ctx, None, (None,) * n)


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm"])
@pytest.mark.parametrize("case, exc, match", [
    ("dy shape", ValueError, r"dy must have shape \(5, 2, 4\).*got \(5, 2, 3\)"),
    ("dy 2-D", ValueError, r"dy must be 3-D, got 2-D"),
    ("dy dtype", TypeError, r"dy must have dtype float64.*got float32"),
    ("dh_n shape", ValueError, r"dh_n must have shape \(2, 4\).*got \(1, 4\)"),
])
def test_functional_bad_gradients_leave_the_context_usable(backend, kind, case, exc, match):
    x, states, weights, dy, dstates = functional_args(kind)
    ctx = f_forward(backend, kind, x, states, weights)[2]
    bad_dy, bad_dstates = dy, dstates
    if case == "dy shape":
        bad_dy = dy[:, :, :3]
    elif case == "dy 2-D":
        bad_dy = dy[0]
    elif case == "dy dtype":
        bad_dy = dy.astype(F32)
    else:
        bad_dstates = (dstates[0][:1],) + dstates[1:]
    with pytest.raises(exc, match=match):
        f_backward(backend, kind, ctx, bad_dy, bad_dstates)
    got = f_backward(backend, kind, ctx, dy, dstates)
    fresh_ctx = f_forward(backend, kind, x, states, weights)[2]
    expected = f_backward(backend, kind, fresh_ctx, dy, dstates)
    for a, b in zip([got[0], *got[1], *got[2]], [expected[0], *expected[1], *expected[2]]):
        assert np.array_equal(a, b)


def test_twins_detect_a_change():
    """The Twins check itself can fail: a parameter changed in place is noticed."""
    tw = Twins("rnn_tanh", "native")
    next(iter(tw.layer.parameters()))[0, 0] += 1
    with pytest.raises(AssertionError):
        tw.assert_unchanged()

