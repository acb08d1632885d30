"""fastlstm.diagnostics.gradient_flow against a direct computation, and the behaviour it exists
to show: the error signal vanishes through a contractive tanh RNN and survives in an LSTM's cell
when the forget gate is open."""
import numpy as np
import pytest
from helpers import FD_TOL, KINDS, assert_close, fd_grad, make_layer

import fastlstm
from fastlstm.diagnostics import gradient_flow, plot_gradient_flow

T, B, I, H = 4, 2, 3, 4


def loss_from_state(layer, x, t, states):
    """L = sum(y[T-1]) as a function of the state (h_t, c_t) that step t hands on: the layer's
    own forward over the steps after t, from that state."""
    rest = x[t + 1:]
    sizes = np.full(len(rest), x.shape[1], np.int64)
    _, finals, _ = layer._cell_forward(rest.reshape(-1, x.shape[2]), states, layer._weights(0),
                                       sizes, training=False)
    return float(finals[0].sum())


def states_after(layer, x, t):
    """The states after step t, from zeros."""
    zeros = tuple(np.zeros((x.shape[1], n)) for n in layer._state_sizes())
    sizes = np.full(t + 1, x.shape[1], np.int64)
    _, finals, _ = layer._cell_forward(x[:t + 1].reshape(-1, x.shape[2]), zeros,
                                       layer._weights(0), sizes, training=False)
    return [f.copy() for f in finals]


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_flow_against_finite_differences(kind, backend, rng):
    layer = make_layer(kind, I, H, dtype=np.float64, backend=backend, seed=2)
    x = rng.standard_normal((T, B, I))
    flow = gradient_flow(layer, x)
    assert list(flow) == (["h", "c"] if kind.startswith("lstm") else ["h"])
    for t in range(T):
        states = states_after(layer, x, t)
        for name, s, norms in zip(("h", "c"), states, flow.values()):
            fd = fd_grad(lambda: loss_from_state(layer, x, t, tuple(states)), s)
            assert_close(norms[t], np.linalg.norm(fd), FD_TOL, f"|dL/d{name}_{t}|")


def test_gradient_flow_leaves_the_layer_unchanged(rng):
    layer = fastlstm.LSTM(I, H, seed=0, batch_first=True)
    before = layer.state_dict()
    flow = gradient_flow(layer, rng.standard_normal((B, T, I)).astype(np.float32))
    assert flow["h"].shape == flow["c"].shape == (T,)
    assert layer.training
    assert not any(g.any() for g in layer.grads.values())
    for name, p in layer.state_dict().items():
        assert np.array_equal(p, before[name])


@pytest.mark.parametrize("backend", ["native", "reference"])
@pytest.mark.parametrize("kind", KINDS)
def test_gradient_flow_of_a_layer_in_eval_mode(kind, backend, rng):
    """gradient_flow backpropagates whatever mode the layer is in (its forwards keep what
    backward needs), and leaves that mode as it was: the norms equal those of the same layer in
    training mode (one layer, so no dropout tells the two apart)."""
    layer = make_layer(kind, I, H, dtype=np.float64, backend=backend, seed=2)
    x = rng.standard_normal((T, B, I))
    expected = gradient_flow(layer, x)
    layer.eval()
    got = gradient_flow(layer, x)
    assert not layer.training
    assert list(got) == list(expected)
    for name, norms in expected.items():
        assert np.array_equal(got[name], norms), name


def test_the_error_signal_vanishes_through_a_tanh_rnn_and_survives_in_an_open_lstm(rng):
    """Default initialisation makes a 32-unit tanh RNN contractive (the spectral radius of W_hh
    is about sqrt(H / (3 H)) = 0.58, and tanh' <= 1): 60 steps shrink the signal by far more
    than 1e-6. An LSTM whose forget gate is held open (bias 5, sigmoid(5) = 0.993) carries it
    back through the cell: after 60 steps it keeps more than a tenth of it."""
    x = rng.standard_normal((60, 8, I))
    rnn = fastlstm.RNN(I, 32, dtype=np.float64, seed=0)
    flow = gradient_flow(rnn, x)["h"]
    assert flow[0] / flow[-1] < 1e-6
    assert flow[0] < flow[30] < flow[-1]

    lstm = fastlstm.LSTM(I, 32, dtype=np.float64, seed=0)
    lstm._params["bias_ih_l0"][32:64] = 5       # gate order i, f, g, o: the forget gate
    flow = gradient_flow(lstm, x)
    assert flow["c"][-1] == 0                     # L reads h_{T-1}, not c_{T-1}
    assert flow["c"][0] / flow["c"][-2] > 0.1
    assert flow["h"][0] / flow["h"][-1] > 1e-2


def test_gradient_flow_errors():
    x = np.zeros((T, B, I), np.float32)
    with pytest.raises(ValueError, match="one-layer unidirectional layer, got num_layers=2"):
        gradient_flow(fastlstm.GRU(I, H, num_layers=2), x)
    with pytest.raises(ValueError, match="bidirectional=True"):
        gradient_flow(fastlstm.GRU(I, H, bidirectional=True), x)
    with pytest.raises(TypeError, match="layer must be a fastlstm RNN, GRU or LSTM"):
        gradient_flow(fastlstm.Linear(I, H), x)
    with pytest.raises(ValueError, match="x must be 3-D"):
        gradient_flow(fastlstm.GRU(I, H), x[0])


def test_plot_gradient_flow(tmp_path, rng):
    pytest.importorskip("matplotlib")
    x = rng.standard_normal((20, 2, I))
    flows = {"RNN": gradient_flow(fastlstm.RNN(I, H, dtype=np.float64), x),
             "LSTM": gradient_flow(fastlstm.LSTM(I, H, dtype=np.float64), x)}
    path = tmp_path / "flow.png"
    plot_gradient_flow(flows, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
