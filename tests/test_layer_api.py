"""The layer API: parameter names and shapes as torch, live parameters and copied state dicts,
initialisation, gradient accumulation, train/eval and dropout, warnings, repr, and what
``import fastlstm`` pulls in."""
import warnings

import numpy as np
import pytest
from helpers import (KINDS, grads_copy, layer_backward, layer_forward, layer_problem,
                     make_layer, run_python)

import fastlstm


@pytest.fixture(params=["native", "reference"])
def backend(request):
    return request.param


# ---------------------------------------------------------------- names, shapes, live arrays


def test_lstm_parameter_names_shapes_and_order():
    layer = fastlstm.LSTM(3, 4, num_layers=2, bidirectional=True)
    expected = []
    for k, layer_in in ((0, 3), (1, 8)):
        for sfx in ("", "_reverse"):
            expected += [(f"weight_ih_l{k}{sfx}", (16, layer_in)),
                         (f"weight_hh_l{k}{sfx}", (16, 4)),
                         (f"bias_ih_l{k}{sfx}", (16,)),
                         (f"bias_hh_l{k}{sfx}", (16,))]
    assert expected[:5] == [("weight_ih_l0", (16, 3)), ("weight_hh_l0", (16, 4)),
                            ("bias_ih_l0", (16,)), ("bias_hh_l0", (16,)),
                            ("weight_ih_l0_reverse", (16, 3))]
    assert expected[8] == ("weight_ih_l1", (16, 8))
    assert [(n, p.shape) for n, p in layer.named_parameters()] == expected
    assert list(layer.state_dict()) == [n for n, _ in expected]
    assert list(layer.grads) == [n for n, _ in expected]
    assert all(layer.grads[n].shape == s for n, s in expected)


def test_rnn_without_bias_parameter_names_and_shapes():
    layer = fastlstm.RNN(5, 2, num_layers=3, bias=False)
    assert [(n, p.shape) for n, p in layer.named_parameters()] == [
        ("weight_ih_l0", (2, 5)), ("weight_hh_l0", (2, 2)),
        ("weight_ih_l1", (2, 2)), ("weight_hh_l1", (2, 2)),
        ("weight_ih_l2", (2, 2)), ("weight_hh_l2", (2, 2))]


def test_parameters_follows_named_parameters():
    layer = fastlstm.LSTM(3, 4, num_layers=2)
    assert all(a is b for a, (_, b) in zip(layer.parameters(), layer.named_parameters()))
    assert len(layer.parameters()) == 8


@pytest.mark.parametrize("kind", KINDS)
def test_named_parameters_are_live(kind, backend, rng):
    layer = make_layer(kind, 3, 4, num_layers=2, dtype=np.float64, backend=backend, seed=0)
    x = rng.standard_normal((5, 2, 3))
    y0, _ = layer_forward(layer, x)
    params = dict(layer.named_parameters())
    params["weight_ih_l0"] += 0.5
    y1, _ = layer_forward(layer, x)
    assert not np.allclose(y0, y1)
    assert np.array_equal(layer.state_dict()["weight_ih_l0"], params["weight_ih_l0"])
    for p in layer.parameters():
        p[...] = 0
    y2, _ = layer_forward(layer, x)
    assert not y2.any()   # all weights and biases zero: every state stays zero


def test_state_dict_returns_copies(backend):
    layer = fastlstm.LSTM(3, 4, backend=backend, seed=0)
    sd = layer.state_dict()
    before = {k: v.copy() for k, v in sd.items()}
    for v in sd.values():
        v += 1
    for k, v in layer.state_dict().items():
        assert np.array_equal(v, before[k])
        assert not np.shares_memory(v, dict(layer.named_parameters())[k])


@pytest.mark.parametrize("kind", KINDS)
def test_load_state_dict_round_trip(kind, backend, rng):
    a = make_layer(kind, 3, 4, num_layers=2, bidirectional=True, backend=backend, seed=1)
    b = make_layer(kind, 3, 4, num_layers=2, bidirectional=True, backend=backend, seed=2)
    live = dict(b.named_parameters())
    x, states, _, _ = layer_problem(rng, a, T=4, B=3)
    assert not np.allclose(layer_forward(a, x, states)[0], layer_forward(b, x, states)[0])
    b.load_state_dict(a.state_dict())
    for name, p in b.named_parameters():
        assert p is live[name], "loading copies into the live arrays"
        assert np.array_equal(p, a.state_dict()[name])
    ya, fa = layer_forward(a, x, states)
    yb, fb = layer_forward(b, x, states)
    assert np.array_equal(ya, yb)
    for u, v in zip(fa, fb):
        assert np.array_equal(u, v)


def test_load_state_dict_casts_to_the_layers_dtype():
    layer = fastlstm.RNN(3, 4, seed=0)                      # float32
    sd64 = {k: v.astype(np.float64) / 3 for k, v in layer.state_dict().items()}
    layer.load_state_dict(sd64)
    for name, p in layer.named_parameters():
        assert p.dtype == np.float32
        assert np.array_equal(p, sd64[name].astype(np.float32))


# ---------------------------------------------------------------- initialisation


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_init_is_uniform_within_one_over_sqrt_h(kind, dtype):
    H = 16
    bound = 1 / np.sqrt(H)
    layer = make_layer(kind, 10, H, num_layers=2, dtype=dtype, seed=3)
    for name, p in layer.named_parameters():
        assert p.dtype == dtype
        assert np.abs(p).max() <= bound * (1 + 1e-6), name     # float32 rounding of the bound
    values = np.concatenate([p.ravel() for p in layer.parameters()]).astype(np.float64)
    assert values.size > 900
    # A uniform sample of this size fills the interval: not a narrower one, not a normal.
    assert values.max() > 0.95 * bound and values.min() < -0.95 * bound
    assert abs(values.mean()) < 0.1 * bound
    hist, _ = np.histogram(values, bins=4, range=(-bound, bound))
    assert hist.min() > 0.8 * values.size / 4


@pytest.mark.parametrize("kind", KINDS)
def test_init_is_reproducible_from_the_seed(kind):
    def params(**kw):
        return make_layer(kind, 3, 5, num_layers=2, **kw).state_dict()

    a, b, c = params(seed=7), params(seed=7), params(seed=8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert all(not np.array_equal(a[k], c[k]) for k in a)
    # The backend and the dropout setting do not change the initial weights.
    for other in (params(seed=7, backend="reference"), params(seed=7, dropout=0.5)):
        assert all(np.array_equal(a[k], other[k]) for k in a)
    # No seed: fresh weights each time.
    u, v = params(), params()
    assert not all(np.array_equal(u[k], v[k]) for k in u)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("kind", KINDS)
def test_grads_accumulate_and_zero_grad_clears(kind, backend, rng):
    layer = make_layer(kind, 3, 4, num_layers=2, bidirectional=True, dtype=np.float64,
                       backend=backend, seed=0)
    x, states, dy, dstates = layer_problem(rng, layer, T=4, B=2)
    assert not any(g.any() for g in layer.grads.values())
    layer_forward(layer, x, states)
    layer_backward(layer, dy, dstates)
    once = grads_copy(layer)
    assert all(g.any() for g in once.values())
    # A second backward through the same forward adds the same again.
    layer_backward(layer, dy, dstates)
    for name, g in layer.grads.items():
        assert np.array_equal(g, 2 * once[name]), name
    # And so does a second forward and backward.
    layer_forward(layer, x, states)
    layer_backward(layer, dy, dstates)
    for name, g in layer.grads.items():
        assert np.allclose(g, 3 * once[name], rtol=1e-14, atol=0), name
    grads_before = dict(layer.grads)
    layer.zero_grad()
    assert not any(g.any() for g in layer.grads.values())
    assert all(layer.grads[k] is grads_before[k] for k in grads_before)
    assert list(layer.grads) == list(layer.state_dict())


@pytest.mark.parametrize("bidirectional, batch_first", [(False, False), (True, False),
                                                        (False, True)])
@pytest.mark.parametrize("kind", KINDS)
def test_caller_may_change_its_arrays_between_forward_and_backward(kind, bidirectional,
                                                                   batch_first, backend, rng):
    """A training forward keeps its own copies: zeroing the caller's x, initial states and the
    returned y, h_n (c_n) before backward changes nothing."""
    def make():
        return make_layer(kind, 3, 4, num_layers=2, bidirectional=bidirectional,
                          batch_first=batch_first, dtype=np.float64, backend=backend, seed=0)

    layer, twin = make(), make()
    x, states, dy, dstates = layer_problem(rng, layer, T=4, B=2)
    layer_forward(twin, x.copy(), tuple(s.copy() for s in states))
    expected = layer_backward(twin, dy, dstates)
    y, finals = layer_forward(layer, x, states)
    for a in (x, *states, y, *finals):
        a[...] = 0
    got = layer_backward(layer, dy, dstates)
    assert np.array_equal(got[0], expected[0])
    for a, b in zip(got[1], expected[1]):
        assert np.array_equal(a, b)
    for name, g in layer.grads.items():
        assert np.array_equal(g, twin.grads[name]), name


@pytest.mark.parametrize("kind", KINDS)
def test_missing_output_gradients_are_zeros(kind, backend, rng):
    layer = make_layer(kind, 3, 4, num_layers=2, dtype=np.float64, backend=backend, seed=0)
    x, states, dy, dstates = layer_problem(rng, layer, T=4, B=2)
    layer_forward(layer, x, states)
    zero_states = tuple(np.zeros_like(s) for s in dstates)
    dx0, d0 = layer_backward(layer, dy, None)
    dx1, d1 = layer_backward(layer, dy, zero_states)
    assert np.array_equal(dx0, dx1)
    for a, b in zip(d0, d1):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_without_dy_means_zeros(kind, backend, rng):
    """``backward(dy=None, ...)``: only the final states get a gradient."""
    layer = make_layer(kind, 3, 4, num_layers=2, dtype=np.float64, backend=backend, seed=0)
    x, states, dy, dstates = layer_problem(rng, layer, T=4, B=2)
    layer_forward(layer, x, states)
    dx2, _ = layer_backward(layer, np.zeros_like(dy), dstates)
    grads2 = grads_copy(layer)
    layer.zero_grad()
    dx3 = (layer.backward(dhx=dstates) if len(dstates) == 2 else layer.backward(dh_n=dstates[0]))[0]
    assert np.array_equal(dx2, dx3)
    assert all(np.array_equal(grads2[k], g) for k, g in layer.grads.items())


# ---------------------------------------------------------------- modes and dropout


def test_train_and_eval_return_self_and_set_training():
    layer = fastlstm.LSTM(3, 4)
    assert layer.training is True
    assert layer.eval() is layer and layer.training is False
    assert layer.train() is layer and layer.training is True
    assert layer.train(False) is layer and layer.training is False


@pytest.mark.parametrize("kind", KINDS)
def test_dropout(kind, backend, rng):
    def make(**kw):
        return make_layer(kind, 3, 6, num_layers=3, dtype=np.float64, backend=backend,
                          seed=11, **kw)

    layer, same_seed = make(dropout=0.5), make(dropout=0.5)
    x, states, _, _ = layer_problem(rng, layer, T=5, B=4)
    y_train, _ = layer_forward(layer, x, states)
    assert np.array_equal(layer_forward(same_seed, x, states)[0], y_train)
    # The generator moves on: the next training forward draws another mask.
    assert not np.allclose(layer_forward(layer, x, states)[0], y_train)

    layer.eval()
    y_eval, f_eval = layer_forward(layer, x, states)
    assert not np.allclose(y_train, y_eval)
    assert np.array_equal(layer_forward(layer, x, states)[0], y_eval)   # eval is deterministic
    no_dropout = make().eval()
    y_plain, f_plain = layer_forward(no_dropout, x, states)
    assert np.allclose(y_eval, y_plain, rtol=0, atol=1e-14)
    for a, b in zip(f_eval, f_plain):
        assert np.allclose(a, b, rtol=0, atol=1e-14)


@pytest.mark.parametrize("p", [0.25, 0.5, 0.8])
def test_dropout_is_inverted_dropout_with_probability_p(p, backend, rng):
    """Make layer 1 of a relu RNN the identity (W_ih = 1, W_hh = 0, no bias): its output is then
    its input, layer 0's output times the dropout mask. Each mask entry must be 0 with
    probability p and 1 / (1 - p) otherwise, so that the expected value is unchanged."""
    layer = fastlstm.RNN(3, 50, num_layers=2, nonlinearity="relu", bias=False, dropout=p,
                         dtype=np.float64, backend=backend, seed=4)
    params = dict(layer.named_parameters())
    params["weight_ih_l1"][...] = np.eye(50)
    params["weight_hh_l1"][...] = 0
    x = rng.standard_normal((20, 8, 3))
    y_train, _ = layer(x)
    y_eval, _ = layer.eval()(x)           # layer 0's output, undropped
    on = y_eval > 0
    assert on.sum() > 2000
    ratio = y_train[on] / y_eval[on]
    kept = ratio != 0
    assert np.allclose(ratio[kept], 1 / (1 - p), rtol=1e-12, atol=0)
    assert not y_train[~on].any()
    # About a fraction p dropped: within 5 standard deviations of a binomial count.
    n = on.sum()
    assert abs((~kept).sum() - p * n) < 5 * np.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("kind", KINDS)
def test_dropout_one_zeroes_the_input_of_later_layers(kind, backend, rng):
    layer = make_layer(kind, 3, 4, num_layers=2, dropout=1.0, dtype=np.float64,
                       backend=backend, seed=0)
    x1, states, dy, dstates = layer_problem(rng, layer, T=4, B=2)
    x2 = rng.standard_normal(x1.shape)
    y1, _ = layer_forward(layer, x1, states)
    y2, _ = layer_forward(layer, x2, states)
    assert np.array_equal(y1, y2), "the last layer sees zeros, whatever x is"
    assert np.isfinite(y1).all()
    # With no gradient on layer 0's final state, nothing reaches x: layer 1 saw only zeros.
    for s in dstates:
        s[0] = 0
    dx, _ = layer_backward(layer, dy, dstates)
    assert not dx.any()
    assert not layer.grads["weight_ih_l1"].any()       # its input was zero
    assert layer.grads["weight_hh_l1"].any()


@pytest.mark.parametrize("cls", [fastlstm.RNN, fastlstm.LSTM], ids=["RNN", "LSTM"])
def test_dropout_with_one_layer_warns(cls):
    with pytest.warns(UserWarning, match=r"dropout.*num_layers=1") as record:
        cls(3, 4, dropout=0.2)
    assert record[0].filename == __file__, "the warning points at the caller's line"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cls(3, 4, num_layers=2, dropout=0.2)
        cls(3, 4, dropout=0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_after_eval_forward_raises(kind, backend, rng):
    layer = make_layer(kind, 3, 4, backend=backend).eval()
    x, states, dy, dstates = layer_problem(rng, layer, T=3, B=2)
    layer_forward(layer, x, states)
    with pytest.raises(RuntimeError, match="training mode"):
        layer_backward(layer, dy, dstates)


# ---------------------------------------------------------------- call, repr, imports


@pytest.mark.parametrize("kind", KINDS)
def test_call_is_forward(kind, backend, rng):
    layer = make_layer(kind, 3, 4, num_layers=2, bidirectional=True, backend=backend, seed=0)
    x, states, _, _ = layer_problem(rng, layer, T=3, B=2)
    lstm = len(states) == 2
    s = states if lstm else states[0]
    a = layer(x, s)
    b = layer.forward(x, s)
    assert np.array_equal(a[0], b[0])
    fa = a[1] if lstm else (a[1],)
    fb = b[1] if lstm else (b[1],)
    for u, v in zip(fa, fb):
        assert np.array_equal(u, v)


def test_repr():
    r = repr(fastlstm.LSTM(3, 7, num_layers=2, bidirectional=True))
    assert r.startswith("LSTM(3, 7") and "num_layers=2" in r and "bidirectional=True" in r
    r = repr(fastlstm.RNN(5, 9, nonlinearity="relu", dtype=np.float64, backend="reference"))
    assert r.startswith("RNN(5, 9") and "relu" in r and "float64" in r and "reference" in r


def test_import_pulls_in_no_optional_extras():
    code = ("import sys, fastlstm\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'tqdm', 'onnx', 'onnxruntime',\n"
            "                         'fastlstm.onnx') if m in sys.modules))\n"
            "print(fastlstm.native.__file__.endswith('.so'))")
    result = run_python(["-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "True"]
