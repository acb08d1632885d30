"""fastlstm.LSTM(layer_norm=True) and fastlstm.torch.LSTM(layer_norm=True): the whole layer
(stacked, bidirectional, lengths, streams) against a PyTorch loop written with
torch.nn.functional.layer_norm (helpers.torch_lnlstm_layers), in both backends and dtypes."""
import numpy as np
import pytest
from helpers import F32_MAX, TOL64, assert_close, layer_problem, run_layer

import fastlstm

T, B, I, H = 5, 3, 4, 6
LENGTHS = [5, 2, 4]


def make(backend, dtype, **kwargs):
    layer = fastlstm.LSTM(I, H, layer_norm=True, backend=backend, dtype=dtype, seed=3, **kwargs)
    # gains and bias away from their initial 1 and 0, so that a gradient or weight sent to
    # the wrong place shows
    rng = np.random.default_rng(4)
    for name, p in layer.state_dict().items():
        if name.startswith("layernorm_"):
            p += (0.5 * rng.standard_normal(p.shape)).astype(dtype)
    return layer


def oracle(layer, x, states, dy, dstates, lengths):
    pytest.importorskip("torch")
    from helpers import torch_lnlstm_layers
    as64 = lambda a: np.asarray(a, np.float64)   # noqa: E731
    twin = make(layer.backend, np.float64, num_layers=layer.num_layers,
                bidirectional=layer.bidirectional)
    twin.load_state_dict({k: as64(v) for k, v in layer.state_dict().items()})
    return torch_lnlstm_layers(twin, as64(x), tuple(map(as64, states)), as64(dy),
                               tuple(map(as64, dstates)), lengths)


def compare(got, expected, tol):
    y, finals, dx, dinits, grads = got
    y_e, finals_e, dx_e, dinits_e, grads_e = expected
    assert_close(y, y_e, tol, "y")
    for name, a, b in zip(("h_n", "c_n", "dx", "dh0", "dc0"), (*finals, dx, *dinits),
                          (*finals_e, dx_e, *dinits_e)):
        assert_close(a, b, tol, name)
    assert grads.keys() == grads_e.keys()
    for name in grads:
        assert_close(grads[name], grads_e[name], tol, name)


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["padded", "lengths"])
def test_layer_matches_a_torch_loop(backend, dtype, num_layers, bidirectional, lengths):
    layer = make(backend, dtype, num_layers=num_layers, bidirectional=bidirectional)
    x, states, dy, dstates = layer_problem(np.random.default_rng(5), layer, T, B)
    got = run_layer(layer, x, states, dy, dstates, lengths)
    compare(got, oracle(layer, x, states, dy, dstates, lengths),
            TOL64 if dtype == np.float64 else F32_MAX)


def test_parameters_names_shapes_and_initial_values():
    layer = fastlstm.LSTM(I, H, num_layers=2, bidirectional=True, layer_norm=True)
    params = layer.state_dict()
    for k in range(2):
        for suffix in ("", "_reverse"):
            for name, shape, value in (("layernorm_ih_weight", (4 * H,), 1),
                                       ("layernorm_hh_weight", (4 * H,), 1),
                                       ("layernorm_c_weight", (H,), 1),
                                       ("layernorm_c_bias", (H,), 0)):
                p = params[f"{name}_l{k}{suffix}"]
                assert p.shape == shape and np.all(p == value), (name, k, suffix)
    assert "layer_norm=True" in repr(layer)
    # the other parameters are those of the plain LSTM of the same seed: nothing else drawn
    plain = fastlstm.LSTM(I, H, num_layers=2, bidirectional=True, seed=1)
    ln = fastlstm.LSTM(I, H, num_layers=2, bidirectional=True, layer_norm=True, seed=1)
    plain_params = plain.state_dict()
    for name, p in ln.state_dict().items():
        if not name.startswith("layernorm_"):
            assert np.array_equal(p, plain_params[name]), name


@pytest.mark.parametrize("option", [dict(proj_size=2), dict(peephole=True),
                                    dict(num_layers=2, feedback="top")],
                         ids=["proj_size", "peephole", "feedback"])
def test_options_it_does_not_combine_with_are_refused(option):
    name = next(iter(option.keys() - {"num_layers"}))
    with pytest.raises(ValueError, match=f"layer_norm=True does not combine with {name}"):
        fastlstm.LSTM(I, H, layer_norm=True, **option)


def test_layer_norm_must_be_a_bool():
    with pytest.raises(TypeError, match="layer_norm"):
        fastlstm.LSTM(I, H, layer_norm="yes")


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_stream_steps_equal_the_whole_sequence(backend, dtype):
    layer = make(backend, dtype, num_layers=2)
    layer.eval()
    x = np.random.default_rng(6).standard_normal((T, B, I)).astype(dtype)
    y, _ = layer(x)
    stream = layer.stream(B)
    steps = np.stack([stream.step(x[t]) for t in range(T)])
    tol = 1e-12 if dtype == np.float64 else 1e-5
    assert_close(steps, y, tol, "stream")


def test_onnx_export_is_refused():
    pytest.importorskip("onnx")
    from fastlstm.onnx import to_onnx
    with pytest.raises(ValueError, match="has no layer_norm"):
        to_onnx(fastlstm.LSTM(I, H, layer_norm=True))


# ---------------------------------------------------------------- the torch bridge

@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("num_layers, bidirectional", [(1, False), (2, True)])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_torch_module_matches_a_torch_loop(dtype, num_layers, bidirectional, packed):
    torch = pytest.importorskip("torch")
    import fastlstm.torch as ft
    torch.manual_seed(0)
    module = ft.LSTM(I, H, num_layers=num_layers, bidirectional=bidirectional, layer_norm=True)
    module = module.double() if dtype == np.float64 else module
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("layernorm_"):
                p.add_(0.5 * torch.randn(p.shape, dtype=p.dtype))
    layer = make("reference", dtype, num_layers=num_layers, bidirectional=bidirectional)
    layer.load_state_dict({k: v.detach().numpy() for k, v in module.state_dict().items()})
    x, states, dy, dstates = layer_problem(np.random.default_rng(7), layer, T, B)
    x_t = torch.from_numpy(x).requires_grad_()
    hx = tuple(torch.from_numpy(s).requires_grad_() for s in states)
    lengths = LENGTHS if packed else None
    if packed:   # a PackedSequence, the sequences not sorted by length
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
        out, (h_n, c_n) = module(pack_padded_sequence(x_t, torch.tensor(LENGTHS),
                                                      enforce_sorted=False), hx)
        y = pad_packed_sequence(out, total_length=T)[0]
    else:
        y, (h_n, c_n) = module(x_t, hx)
    loss = sum((a * torch.from_numpy(g)).sum() for a, g in zip((y, h_n, c_n), (dy, *dstates)))
    loss.backward()
    got = (y.detach().numpy(), (h_n.detach().numpy(), c_n.detach().numpy()), x_t.grad.numpy(),
           tuple(s.grad.numpy() for s in hx),
           {name: p.grad.numpy() for name, p in module.named_parameters()})
    compare(got, oracle(layer, x, states, dy, dstates, lengths),
            TOL64 if dtype == np.float64 else F32_MAX)


def test_torch_module_parameters_and_refusals():
    torch = pytest.importorskip("torch")
    import fastlstm.torch as ft
    module = ft.LSTM(I, H, layer_norm=True)
    with torch.no_grad():
        module.layernorm_c_bias_l0.fill_(3)
    module.reset_parameters()
    assert torch.all(module.layernorm_ih_weight_l0 == 1)
    assert torch.all(module.layernorm_c_bias_l0 == 0)
    assert "layer_norm=True" in repr(module)
    with pytest.raises(ValueError, match="layer_norm=True does not combine with proj_size"):
        ft.LSTM(I, H, proj_size=2, layer_norm=True)
    # the state_dict moves both ways with the NumPy layer's
    layer = fastlstm.LSTM(I, H, layer_norm=True)
    module.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()})
