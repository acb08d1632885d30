"""What the GRU, the projected LSTM and the peephole LSTM add beyond the shared tests.

The shared tests (finite differences, native vs reference, torch, threads, steps) run every kind;
this file checks what only these cells have: zero peepholes are exactly the plain LSTM, the GRU
keeps W_hn h + b_hn for backward, the parameter layout, the two initialisation options, and the
errors for the new arguments.
"""
import re

import numpy as np
import pytest
from helpers import BACKENDS, assert_close, layer_backward, layer_forward, layer_problem

import fastlstm

T, B, I, H, P = 5, 3, 4, 6, 2


@pytest.fixture(params=["native", "reference"])
def backend(request):
    return request.param


def lstm_weights(rng, proj):
    w = [0.5 * rng.standard_normal(s) for s in ((4 * H, I), (4 * H, P if proj else H), (4 * H,),
                                                 (4 * H,))]
    w_hr = 0.5 * rng.standard_normal((P, H)) if proj else None
    return w, w_hr


# ---------------------------------------------------------------- peepholes


@pytest.mark.parametrize("proj", [False, True], ids=["plain", "projected"])
def test_zero_peepholes_are_exactly_the_plain_lstm(backend, proj, rng):
    mod = BACKENDS[backend]
    w, w_hr = lstm_weights(rng, proj)
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((B, P if proj else H)), rng.standard_normal((B, H))
    dy, dh, dc = rng.standard_normal((T, B, P if proj else H)), np.ones_like(h0), np.ones_like(c0)
    plain = mod.lstm_forward(x, h0, c0, *w, w_hr=w_hr)
    peep = mod.lstm_forward(x, h0, c0, *w, w_hr=w_hr, w_peephole=np.zeros(3 * H))
    for a, b in zip(plain[:3], peep[:3]):
        assert np.array_equal(a, b)
    g_plain = mod.lstm_backward(plain[3], dy, dh, dc)
    g_peep = mod.lstm_backward(peep[3], dy, dh, dc)
    dw_peephole = g_peep.pop("w_peephole")
    assert g_peep.keys() == g_plain.keys()
    for name in g_plain:
        assert np.array_equal(g_plain[name], g_peep[name]), name
    assert dw_peephole.shape == (3 * H,) and dw_peephole.any(), "dw_peephole is a real gradient"


def test_peephole_layer_with_zero_weights_is_the_plain_layer(backend, rng):
    kw = dict(num_layers=2, bidirectional=True, proj_size=P, dtype=np.float64, backend=backend,
              seed=4)
    plain, peep = fastlstm.LSTM(I, H, **kw), fastlstm.LSTM(I, H, peephole=True, **kw)
    state = plain.state_dict()
    state.update({name: np.zeros(3 * H) for name in peep.state_dict() if "peephole" in name})
    peep.load_state_dict(state)
    x, states, dy, dstates = layer_problem(rng, plain, T, B)
    y_plain, finals_plain = layer_forward(plain, x, states)
    y_peep, finals_peep = layer_forward(peep, x, states)
    assert np.array_equal(y_plain, y_peep)
    for a, b in zip(finals_plain, finals_peep, strict=True):
        assert np.array_equal(a, b)
    dx_plain, d_plain = layer_backward(plain, dy, dstates)
    dx_peep, d_peep = layer_backward(peep, dy, dstates)
    assert np.array_equal(dx_plain, dx_peep)
    for a, b in zip(d_plain, d_peep):
        assert np.array_equal(a, b)
    for name, g in plain.grads.items():
        assert np.array_equal(g, peep.grads[name]), name


def test_peepholes_change_the_output(backend, rng):
    """The converse: nonzero peepholes do act (so the test above is not vacuous)."""
    mod = BACKENDS[backend]
    w, _ = lstm_weights(rng, False)
    x = rng.standard_normal((T, B, I))
    c0 = rng.standard_normal((B, H))
    for k in range(3):   # each gate's peephole on its own: i and f see c_{t-1}, o sees c_t
        p = np.zeros(3 * H)
        p[k * H:(k + 1) * H] = 1
        y_plain = mod.lstm_forward(x, None, c0, *w)[0]
        y_peep = mod.lstm_forward(x, None, c0, *w, w_peephole=p)[0]
        assert not np.allclose(y_plain, y_peep), f"peephole of gate {'ifo'[k]}"


# ---------------------------------------------------------------- the GRU's saved state


def test_gru_context_keeps_the_recurrent_part_of_n(backend, rng):
    """hn[t] = W_hn h_{t-1} + b_hn, computed here directly from the saved states."""
    mod = BACKENDS[backend]
    w_ih, w_hh = rng.standard_normal((3 * H, I)), rng.standard_normal((3 * H, H))
    b_ih, b_hh = rng.standard_normal(3 * H), rng.standard_normal(3 * H)
    x = rng.standard_normal((T, B, I))
    h0 = rng.standard_normal((B, H))
    y, h_n, ctx = mod.gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh)
    h_prev = np.concatenate([h0[None], y[:-1]])          # the state each step started from
    assert ctx.hn.shape == (T * B, H)                   # the context keeps the rows of all steps
    hn = ctx.hn.reshape(T, B, H)
    assert_close(hn, h_prev @ w_hh[2 * H:].T + b_hh[2 * H:], 1e-13, "hn")
    # and h follows torch's update h' = (1 - z) n + z h from the saved gates
    gates = ctx.gates.reshape(T, B, 3 * H)
    r, z, n = gates[..., :H], gates[..., H:2 * H], gates[..., 2 * H:]
    assert_close(y, (1 - z) * n + z * h_prev, 1e-13, "h")
    assert_close(n, np.tanh(x @ w_ih[2 * H:].T + b_ih[2 * H:] + r * hn), 1e-13, "n")


# ---------------------------------------------------------------- parameters


def test_projected_peephole_lstm_parameter_names_shapes_and_order():
    layer = fastlstm.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P, peephole=True)
    expected = []
    for k, layer_in in ((0, I), (1, 2 * P)):
        for sfx in ("", "_reverse"):
            expected += [(f"weight_ih_l{k}{sfx}", (4 * H, layer_in)),
                         (f"weight_hh_l{k}{sfx}", (4 * H, P)),
                         (f"bias_ih_l{k}{sfx}", (4 * H,)), (f"bias_hh_l{k}{sfx}", (4 * H,)),
                         (f"weight_hr_l{k}{sfx}", (P, H)),
                         (f"weight_peephole_l{k}{sfx}", (3 * H,))]
    assert [(n, p.shape) for n, p in layer.named_parameters()] == expected
    assert layer.output_size == P


def test_gru_parameter_names_and_shapes():
    layer = fastlstm.GRU(I, H, num_layers=2, bias=False)
    assert [(n, p.shape) for n, p in layer.named_parameters()] == [
        ("weight_ih_l0", (3 * H, I)), ("weight_hh_l0", (3 * H, H)),
        ("weight_ih_l1", (3 * H, H)), ("weight_hh_l1", (3 * H, H))]


def test_projected_layer_shapes(rng):
    layer = fastlstm.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P, batch_first=True)
    y, (h_n, c_n) = layer(rng.standard_normal((B, T, I)).astype(np.float32))
    assert y.shape == (B, T, 2 * P) and h_n.shape == (4, B, P) and c_n.shape == (4, B, H)


# ---------------------------------------------------------------- initialisation options


def test_unit_forget_bias_is_keras_init(rng):
    default = fastlstm.LSTM(I, H, num_layers=2, bidirectional=True, seed=9)
    keras = fastlstm.LSTM(I, H, num_layers=2, bidirectional=True, seed=9, unit_forget_bias=True)
    expected = np.zeros(4 * H, np.float32)
    expected[H:2 * H] = 1                                   # i, f, g, o: the forget block
    for name, p in keras.named_parameters():
        if name.startswith("bias_ih"):
            assert np.array_equal(p, expected), name
        elif name.startswith("bias_hh"):
            assert not p.any(), name
        else:   # the option touches the biases only
            assert np.array_equal(p, default.state_dict()[name]), name


@pytest.mark.parametrize("cls, G, kw", [(fastlstm.RNN, 1, {}), (fastlstm.GRU, 3, {}),
                                        (fastlstm.LSTM, 4, {}),
                                        (fastlstm.LSTM, 4, dict(proj_size=P))],
                         ids=["rnn", "gru", "lstm", "lstmp"])
def test_orthogonal_recurrent_init(cls, G, kw):
    default = cls(I, H, num_layers=2, seed=9, dtype=np.float64, **kw)
    ortho = cls(I, H, num_layers=2, seed=9, dtype=np.float64, recurrent_init="orthogonal", **kw)
    again = cls(I, H, num_layers=2, seed=9, dtype=np.float64, recurrent_init="orthogonal", **kw)
    blocks = []
    for name, p in ortho.named_parameters():
        assert np.array_equal(p, again.state_dict()[name]), "reproducible from the seed"
        if not name.startswith("weight_hh"):
            assert np.array_equal(p, default.state_dict()[name]), name
            continue
        for g in range(G):                                  # each gate's (H, P) block
            block = p[g * H:(g + 1) * H]
            n = block.shape[1]
            assert_close(block.T @ block, np.eye(n), 1e-12, f"{name} gate {g}")
            blocks.append(block)
    assert len({b.tobytes() for b in blocks}) == len(blocks), "independent draws"


def test_orthogonal_init_in_float32_is_orthogonal_to_float32_precision():
    layer = fastlstm.GRU(I, 64, recurrent_init="orthogonal", seed=0)
    block = layer.state_dict()["weight_hh_l0"][:64].astype(np.float64)
    assert_close(block @ block.T, np.eye(64), 1e-6, "weight_hh block")


def test_init_options_show_in_repr():
    assert repr(fastlstm.LSTM(3, 5, proj_size=2, peephole=True, unit_forget_bias=True,
                              recurrent_init="orthogonal")) == (
        "LSTM(3, 5, proj_size=2, peephole=True, unit_forget_bias=True, "
        "recurrent_init='orthogonal')")
    assert repr(fastlstm.GRU(3, 5, dtype=np.float64)) == "GRU(3, 5, dtype=float64)"


# ---------------------------------------------------------------- bad arguments

CTOR_CASES = [
    (fastlstm.LSTM, dict(peephole="yes"), TypeError, r"peephole must be True or False, got 'yes'"),
    (fastlstm.LSTM, dict(unit_forget_bias=1), TypeError,
     r"unit_forget_bias must be True or False, got 1"),
    (fastlstm.LSTM, dict(unit_forget_bias=True, bias=False), ValueError,
     r"unit_forget_bias=True sets the forget gate's bias, so it needs bias=True"),
    (fastlstm.LSTM, dict(recurrent_init="xavier"), ValueError,
     r"recurrent_init must be 'uniform' or 'orthogonal', got 'xavier'"),
    (fastlstm.GRU, dict(recurrent_init=None), ValueError,
     r"recurrent_init must be 'uniform' or 'orthogonal', got None"),
    (fastlstm.GRU, dict(proj_size=2), TypeError, r"proj_size"),
    (fastlstm.GRU, dict(peephole=True), TypeError, r"peephole"),
    (fastlstm.RNN, dict(unit_forget_bias=True), TypeError, r"unit_forget_bias"),
]


@pytest.mark.parametrize("cls, kwargs, exc, match", CTOR_CASES,
                         ids=lambda c: getattr(c, "__name__", None))
def test_constructor_rejects_bad_new_arguments(cls, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        cls(I, H, **kwargs)


FUNCTIONAL_CASES = {
    "w_hr shape": (dict(w_hr=np.zeros((P, H + 1))), ValueError,
                   rf"w_hr must have shape \({P}, {H}\) \(proj_size, hidden_size={H} from w_ih\)"
                   rf", got \({P}, {H + 1}\)"),
    "w_hr empty": (dict(w_hr=np.zeros((0, H))), ValueError,
                   r"w_hr must have shape \(proj_size, hidden_size\) with proj_size >= 1"),
    "w_hr 1-D": (dict(w_hr=np.zeros(H)), ValueError, r"w_hr must be 2-D, got 1-D"),
    "w_hh not projected": (dict(w_hh=np.zeros((4 * H, H))), ValueError,
                           rf"w_hh must have shape \({4 * H}, {P}\) \(gates \* hidden_size, "
                           rf"proj_size\), got \({4 * H}, {H}\)"),
    "h0 of size H": (dict(h0=np.zeros((B, H))), ValueError,
                     rf"h0 must have shape \({B}, {P}\) \(batch, proj_size\), got \({B}, {H}\)"),
    "c0 of size P": (dict(c0=np.zeros((B, P))), ValueError,
                     rf"c0 must have shape \({B}, {H}\) \(batch, hidden_size\), got \({B}, {P}\)"),
    "w_peephole shape": (dict(w_peephole=np.zeros(4 * H)), ValueError,
                         rf"w_peephole must have shape \({3 * H},\) \(3 \* hidden_size,\), gates "
                         rf"i, f, o, got \({4 * H},\)"),
    "w_peephole dtype": (dict(w_peephole=np.zeros(3 * H, np.float32)), TypeError,
                         r"w_peephole must have dtype float64 \(like the other arrays\), got "
                         r"float32"),
}


@pytest.mark.parametrize("case", list(FUNCTIONAL_CASES))
def test_functional_lstm_rejects_bad_projection_and_peepholes(backend, case, rng):
    change, exc, match = FUNCTIONAL_CASES[case]
    w, w_hr = lstm_weights(rng, proj=True)
    args = dict(x=rng.standard_normal((T, B, I)), h0=None, c0=None, w_ih=w[0], w_hh=w[1],
                b_ih=w[2], b_hh=w[3], w_hr=w_hr, w_peephole=np.zeros(3 * H))
    args.update(change)
    with pytest.raises(exc, match=match):
        BACKENDS[backend].lstm_forward(**args)


def test_functional_projected_backward_checks_gradient_shapes(backend, rng):
    w, w_hr = lstm_weights(rng, proj=True)
    ctx = BACKENDS[backend].lstm_forward(rng.standard_normal((T, B, I)), None, None, *w,
                                         w_hr=w_hr)[3]
    with pytest.raises(ValueError, match=rf"dy must have shape \({T}, {B}, {P}\)"):
        BACKENDS[backend].lstm_backward(ctx, np.zeros((T, B, H)), None, None)
    with pytest.raises(ValueError,
                       match=rf"dh_n must have shape \({B}, {P}\) \(batch, proj_size\)"):
        BACKENDS[backend].lstm_backward(ctx, None, np.zeros((B, H)), None)
    with pytest.raises(ValueError,
                       match=rf"dc_n must have shape \({B}, {H}\) \(batch, hidden_size\)"):
        BACKENDS[backend].lstm_backward(ctx, None, None, np.zeros((B, P)))


def test_functional_gru_rejects_lstm_weights(backend, rng):
    with pytest.raises(ValueError, match=re.escape(
            "w_ih must have shape (3 * hidden_size, input_size) with hidden_size >= 1, "
            "got (16, 4)")):
        BACKENDS[backend].gru_forward(rng.standard_normal((T, B, I)), None, np.zeros((16, I)),
                                      np.zeros((16, 4)), None, None)


def test_projected_layer_rejects_states_of_hidden_size(backend, rng):
    layer = fastlstm.LSTM(I, H, proj_size=P, dtype=np.float64, backend=backend)
    x = rng.standard_normal((T, B, I))
    before = layer.state_dict()
    with pytest.raises(ValueError, match=rf"hx\[0\] must have shape \(1, {B}, {P}\) "
                                         rf"\(num_layers \* num_directions, batch, proj_size\), "
                                         rf"got \(1, {B}, {H}\)"):
        layer(x, (np.zeros((1, B, H)), np.zeros((1, B, H))))
    with pytest.raises(ValueError, match=rf"hx\[1\] must have shape \(1, {B}, {H}\) "
                                         rf"\(num_layers \* num_directions, batch, hidden_size\)"):
        layer(x, (np.zeros((1, B, P)), np.zeros((1, B, P))))
    layer(x)
    with pytest.raises(ValueError, match=rf"dy must have the shape of y, \({T}, {B}, {P}\)"):
        layer.backward(np.zeros((T, B, H)))
    for name, p in layer.named_parameters():
        assert np.array_equal(p, before[name])


def test_peephole_state_dict_needs_the_peephole_weights():
    layer = fastlstm.LSTM(I, H, peephole=True)
    plain = fastlstm.LSTM(I, H)
    with pytest.raises(ValueError, match=r"missing keys \['weight_peephole_l0'\]"):
        layer.load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match=r"unexpected keys \['weight_peephole_l0'\]"):
        plain.load_state_dict(layer.state_dict())
