"""fastlstm.onnx: export to ONNX and import from it, checked against ONNX Runtime (float32) and
ONNX's own reference evaluator (float64, which ONNX Runtime's CPU kernels do not run).

Oracles: the exported model runs in ONNX Runtime, whose LSTM, GRU and RNN kernels share no code
with fastlstm's, on the same inputs as the layer; imported models are built here with
onnx.helper (random weights, every attribute spelled out) or exported by torch.onnx.export from
torch.nn modules, and run in ONNX Runtime beside the fastlstm layers imported from them.

Tolerance: float32 1e-5 relative to max(1, max |value|), as in test_torch.py (two
implementations summing in different orders, ~1e-7 per dot product of a few terms, carried over
5 steps and 2 layers); measured here: at most 3e-7. float64 1e-12 (measured: 4e-16).
"""
import io
import warnings

import numpy as np
import pytest
from helpers import assert_close, has_peephole, layer_forward, layer_problem, make_layer

import fastlstm

onnx = pytest.importorskip("onnx")
fo = pytest.importorskip("fastlstm.onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TOL32, TOL64 = 1e-5, 1e-12
KINDS = ("rnn_tanh", "rnn_relu", "lstm", "lstm_peephole", "gru")
I, H, T, B = 3, 4, 5, 4
LENGTHS = np.array([5, 2, 0, 3], np.int32)     # the full length, a length 0 and others


@pytest.fixture(scope="module")
def ort():
    return pytest.importorskip("onnxruntime")


def session(model):
    """An ONNX Runtime session as the tests want one: one thread, no spinning (ort_session)."""
    pytest.importorskip("onnxruntime")
    return fo.ort_session(model, threads=1)


def feeds_of(x, states, lengths):
    feeds = {"x": x}
    if lengths is not None:
        feeds["lengths"] = lengths
    if states is not None:
        feeds.update(zip(("h0", "c0"), states))
    return feeds


def layer_weights_of_node(layer, k):
    """The parameters of layer ``k`` of a stacked ``layer``, named as a single layer's (l0)."""
    return {name.replace(f"_l{k}", "_l0"): a for name, a in layer.named_parameters()
            if f"_l{k}" in name}


def run_chain(layers, x, states, lengths):
    """The layers imported from a stack, one per ONNX node, run one after another as the graph
    runs its nodes: each on the previous one's y and its own slice of the initial states."""
    finals = []
    for k, layer in enumerate(layers):
        D = layer.num_directions
        own = None if states is None else tuple(s[k * D:(k + 1) * D] for s in states)
        x, f = layer_forward(layer, x, own, lengths)
        finals.append(f)
    return x, tuple(np.concatenate(f) for f in zip(*finals))


# ---------------------------------------------------------------------------- export, round trip


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_float32(rng, kind, num_layers, bidirectional, lengths):
    """to_onnx's model in ONNX Runtime gives the layer's outputs and final states, with and
    without initial states; from_onnx gives back one layer per node with the same weights, bit
    for bit, whose chain gives the same outputs as the stacked layer."""
    layer = make_layer(kind, I, H, num_layers=num_layers, bidirectional=bidirectional,
                       seed=1).eval()
    model = fo.to_onnx(layer)
    onnx.checker.check_model(model, full_check=True)
    sess = session(model)
    x, states, _, _ = layer_problem(rng, layer, T, B)
    for given in (states, None):
        outs = sess.run(None, feeds_of(x, given, lengths))
        y, finals = layer_forward(layer, x, given, lengths)
        assert len(outs) == 1 + len(finals)
        assert_close(outs[0], y, TOL32, "y")
        for name, a, b in zip(("h_n", "c_n"), outs[1:], finals):
            assert_close(a, b, TOL32, name)

    layers = fo.from_onnx(model)
    assert len(layers) == num_layers
    for k, imported in enumerate(layers):
        assert type(imported) is type(layer) and imported.num_layers == 1
        assert imported.bidirectional == bidirectional and not imported.training
        got, want = dict(imported.named_parameters()), layer_weights_of_node(layer, k)
        assert got.keys() == want.keys()
        for name, a in got.items():
            assert a.dtype == want[name].dtype and np.array_equal(a, want[name]), name
    y_chain, finals_chain = run_chain(layers, x, states, lengths)
    y, finals = layer_forward(layer, x, states, lengths)
    # the same kernels on the same weights: equal, not merely close
    assert np.array_equal(y_chain, y)
    for a, b in zip(finals_chain, finals):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_float64(rng, kind, num_layers, bidirectional):
    """A float64 layer exports to a float64 model (ONNX Runtime has no double kernels for these
    operators, see fastlstm.onnx): checked by ONNX's reference evaluator, which ignores
    sequence_lens, hence no lengths here (the graph is the float32 one's, whose lengths ONNX
    Runtime checks), and has no Relu RNN, whose model is checked by the checker alone; and
    imported back bit for bit."""
    from onnx.reference import ReferenceEvaluator
    layer = make_layer(kind, I, H, num_layers=num_layers, bidirectional=bidirectional, seed=2,
                       dtype=np.float64).eval()
    model = fo.to_onnx(layer)
    onnx.checker.check_model(model, full_check=True)
    assert all(t.data_type == TensorProto.DOUBLE for t in model.graph.initializer
               if t.name.startswith(("W_", "R_", "B_", "P_", "h0", "c0")))
    if kind != "rnn_relu":
        x, states, _, _ = layer_problem(rng, layer, T, B)
        outs = ReferenceEvaluator(model).run(None, feeds_of(x, states, None))
        y, finals = layer_forward(layer, x, states)
        assert_close(outs[0], y, TOL64, "y")
        for name, a, b in zip(("h_n", "c_n"), outs[1:], finals):
            assert a.dtype == np.float64
            assert_close(a, b, TOL64, name)
    for k, imported in enumerate(fo.from_onnx(model)):
        assert imported.dtype == np.float64
        want = layer_weights_of_node(layer, k)
        for name, a in imported.named_parameters():
            assert np.array_equal(a, want[name]), name


@pytest.mark.parametrize("layer_batch_first", [False, True])
@pytest.mark.parametrize("batch_first", [None, False, True])
def test_batch_first(rng, layer_batch_first, batch_first):
    """x and y are batch-first in the graph when asked (None: as the layer), whatever the layer's
    own layout; the states never are."""
    layer = fastlstm.LSTM(I, H, num_layers=2, bidirectional=True, batch_first=layer_batch_first,
                          seed=3).eval()
    model = fo.to_onnx(layer, batch_first=batch_first)
    graph_batch_first = layer_batch_first if batch_first is None else batch_first
    x, states, _, _ = layer_problem(rng, layer, T, B)      # in the layer's layout
    x_graph = x.transpose(1, 0, 2) if graph_batch_first != layer_batch_first else x
    y_graph, h_n, c_n = session(model).run(None, {"x": x_graph, "h0": states[0],
                                                  "c0": states[1]})
    y, (h, c) = layer(x, states)
    y = y.transpose(1, 0, 2) if graph_batch_first != layer_batch_first else y
    assert_close(y_graph, y, TOL32, "y")
    assert_close(h_n, h, TOL32, "h_n")
    assert_close(c_n, c, TOL32, "c_n")
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == (["batch", "seq_len", I] if graph_batch_first else ["seq_len", "batch", I])


def test_dynamic_dims_and_defaults(rng):
    """One session runs any seq_len and batch; a single length and initial states of batch 1
    are broadcast over the batch; inputs of other sizes are refused by the runtime."""
    layer = fastlstm.GRU(I, H, num_layers=2, bidirectional=True, seed=4).eval()
    sess = session(fo.to_onnx(layer))
    h0 = rng.standard_normal((4, 1, H)).astype(np.float32)
    for t, b in ((5, 3), (2, 1), (7, 6)):
        x = rng.standard_normal((t, b, I)).astype(np.float32)
        y, h_n = sess.run(None, {"x": x, "lengths": np.array([t - 1], np.int32), "h0": h0})
        y_ref, h_ref = layer(x, np.repeat(h0, b, axis=1), lengths=[t - 1] * b)
        assert_close(y, y_ref, TOL32, f"y at T={t}, B={b}")
        assert_close(h_n, h_ref, TOL32, f"h_n at T={t}, B={b}")
    x = rng.standard_normal((5, 3, I)).astype(np.float32)
    for bad in ({"lengths": np.array([5, 5], np.int32)}, {"h0": np.zeros((4, 2, H), np.float32)},
                {"lengths": np.array([6, 1, 1], np.int32)}):
        with pytest.raises(Exception, match="broadcast_|sequence_lens"):
            sess.run(None, {"x": x, **bad})


def test_the_graph_has_one_node_per_layer():
    layer = fastlstm.LSTM(I, H, num_layers=3, bidirectional=True, peephole=True, bias=False)
    nodes = [n for n in fo.to_onnx(layer).graph.node if n.op_type == "LSTM"]
    assert [n.name for n in nodes] == ["lstm_l0", "lstm_l1", "lstm_l2"]
    for n in nodes:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        assert attrs == {"hidden_size": H, "direction": b"bidirectional"}
        assert n.input[3] == "" and n.input[7].startswith("P_")    # no B, peepholes
    gru = next(n for n in fo.to_onnx(fastlstm.GRU(I, H)).graph.node if n.op_type == "GRU")
    assert {a.name: helper.get_attribute_value(a) for a in gru.attribute}["linear_before_reset"] \
        == 1


def test_export_refuses_what_onnx_cannot_hold():
    with pytest.raises(ValueError, match="proj_size=2.*no projection|no projection.*proj_size=2"):
        fo.to_onnx(fastlstm.LSTM(I, H, proj_size=2))
    with pytest.raises(TypeError, match="layer must be a fastlstm.RNN, LSTM or GRU, got "
                                        "Linear"):
        fo.to_onnx(fastlstm.Linear(I, H))
    with pytest.raises(TypeError, match="batch_first must be None, True or False, got 1"):
        fo.to_onnx(fastlstm.GRU(I, H), batch_first=1)


def test_dropout_is_left_out(rng):
    """Dropout is training-only: the export is the eval() forward, whatever the layer's mode."""
    layer = fastlstm.LSTM(I, H, num_layers=2, dropout=0.5, seed=5)       # in training mode
    model = fo.to_onnx(layer)
    assert layer.training
    assert not any(n.op_type == "Dropout" for n in model.graph.node)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    assert_close(session(model).run(None, {"x": x})[0], layer.eval()(x)[0], TOL32, "y")


def test_ort_session_options(ort):
    sess = fo.ort_session(fo.to_onnx(fastlstm.RNN(I, H)), threads=2)
    options = sess.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert sess.get_providers() == ["CPUExecutionProvider"]
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match=f"threads must be an integer >= 1, got {bad!r}"):
            fo.ort_session(fo.to_onnx(fastlstm.RNN(I, H)), threads=bad)


# ---------------------------------------------------------------------------- import


def node_model(rng, op, *, direction="forward", bias=True, peephole=False, layout=0,
               dtype=np.float32, weights_as=None, **attrs):
    """A model of one ONNX ``op`` node with random weights as initializers, built with
    onnx.helper: inputs X, sequence_lens, initial_h (initial_c); outputs Y, Y_h (Y_c).
    ``weights_as="input"`` makes W a graph input instead, ``"default"`` an initializer that is
    also a graph input (a default the caller may replace), ``"computed"`` the output of a node."""
    D = 2 if direction == "bidirectional" else 1
    G = {"RNN": 1, "LSTM": 4, "GRU": 3}[op]
    elem = {np.float32: TensorProto.FLOAT, np.float64: TensorProto.DOUBLE}[dtype]
    weights = {"W": rng.uniform(-0.7, 0.7, (D, G * H, I)), "R": rng.uniform(-0.7, 0.7,
                                                                          (D, G * H, H))}
    if bias:
        weights["B"] = rng.uniform(-0.7, 0.7, (D, 2 * G * H))
    if peephole:
        weights["P"] = rng.uniform(-0.7, 0.7, (D, 3 * H))
    weights = {k: v.astype(dtype) for k, v in weights.items()}
    x_dims = ["batch", "seq", I] if layout else ["seq", "batch", I]
    s_dims = ["batch", D, H] if layout else [D, "batch", H]
    states = ["initial_h", "initial_c"][:1 + (op == "LSTM")]
    inputs = [helper.make_tensor_value_info("X", elem, x_dims),
              helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["batch"])]
    inputs += [helper.make_tensor_value_info(s, elem, s_dims) for s in states]
    node_inputs = ["X", "W", "R", "B" if bias else "", "sequence_lens"] + states
    if op == "LSTM":
        node_inputs.append("P" if peephole else "")
    finals = ["Y_h", "Y_c"][:len(states)]
    node = helper.make_node(op, node_inputs, ["Y"] + finals, name=f"my_{op.lower()}",
                            hidden_size=H, direction=direction, layout=layout, **attrs)
    initializers = [numpy_helper.from_array(v, k) for k, v in weights.items()]
    nodes = [node]
    if weights_as in ("input", "default"):
        inputs.append(helper.make_tensor_value_info("W", elem, list(weights["W"].shape)))
        if weights_as == "input":
            initializers = initializers[1:]
    elif weights_as == "computed":
        initializers[0].name = "W0"
        nodes.insert(0, helper.make_node("Identity", ["W0"], ["W"]))
    y_dims = ["batch", "seq", D, H] if layout else ["seq", D, "batch", H]
    outputs = [helper.make_tensor_value_info("Y", elem, y_dims)]
    outputs += [helper.make_tensor_value_info(f, elem, s_dims) for f in finals]
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 7
    onnx.checker.check_model(model, full_check=True)
    return model, weights


# Each ONNX operator with the attributes fastlstm computes, spelt out (activations in ONNX's
# spelling or lower case, which ONNX Runtime also reads).
NODES = {
    "rnn_tanh": ("RNN", {}),
    "rnn_relu": ("RNN", {"activations": ["Relu"]}),
    "lstm": ("LSTM", {"activations": ["Sigmoid", "Tanh", "Tanh"]}),
    "lstm_peephole": ("LSTM", {"peephole": True}),
    "gru": ("GRU", {"linear_before_reset": 1, "activations": ["sigmoid", "tanh"]}),
}


def node_expected(sess, x, lengths, states, D, layout=0):
    """ONNX Runtime's outputs as fastlstm's: Y (T, D, B, H) -> y (T, B, D * H)."""
    feeds = {"X": x, "sequence_lens": lengths}
    feeds.update(zip(("initial_h", "initial_c"), states))
    Y, *finals = sess.run(None, feeds)
    y = Y.transpose(0, 2, 1, 3).reshape(Y.shape[0], Y.shape[2], D * H)
    return y, finals


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("kind", KINDS)
def test_import_node(rng, kind, direction, bias):
    """A node built by hand imports as a layer giving ONNX Runtime's outputs; a node without B
    as a bias=False layer. Lengths start at 1: for a sequence of length 0, ONNX Runtime gives
    zero final states where fastlstm keeps the initial ones (the export selects them)."""
    op, attrs = NODES[kind]
    attrs = dict(attrs)
    if attrs.get("activations") and direction == "bidirectional":
        attrs["activations"] = attrs["activations"] * 2
    model, _ = node_model(rng, op, direction=direction, bias=bias,
                                peephole=attrs.pop("peephole", False), **attrs)
    layer = fo.from_onnx(model, node=0)
    D = 2 if direction == "bidirectional" else 1
    assert (layer.bias, layer.bidirectional, layer.input_size, layer.hidden_size) == \
        (bias, D == 2, I, H)
    assert getattr(layer, "nonlinearity", "tanh") == ("relu" if kind == "rnn_relu" else "tanh")
    assert layer.peephole == has_peephole(kind)       # False on RNN and GRU layers
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lengths = np.array([5, 2, 1, 3], np.int32)
    states = [rng.standard_normal((D, B, H)).astype(np.float32) for _ in range(1 + (op == "LSTM"))]
    y_ort, finals_ort = node_expected(session(model), x, lengths, states, D)
    y, finals = layer_forward(layer, x, states, lengths)
    assert_close(y, y_ort, TOL32, "y")
    for name, a, b in zip(("h_n", "c_n"), finals, finals_ort):
        assert_close(a, b, TOL32, name)


def test_import_layout_1(rng):
    """layout=1 (batch first; ONNX Runtime's CPU kernels refuse it) imports as a batch_first
    layer: checked against the same node with layout=0 in ONNX Runtime."""
    model1, _ = node_model(np.random.default_rng(7), "LSTM", direction="bidirectional",
                           peephole=True, layout=1)
    model0, _ = node_model(np.random.default_rng(7), "LSTM", direction="bidirectional",
                           peephole=True, layout=0)
    layer = fo.from_onnx(model1, node="my_lstm")
    assert layer.batch_first
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    states = [rng.standard_normal((2, B, H)).astype(np.float32) for _ in range(2)]
    y_ort, finals_ort = node_expected(session(model0), x, LENGTHS + (LENGTHS == 0), states, 2)
    y, finals = layer(x.transpose(1, 0, 2), tuple(states), lengths=LENGTHS + (LENGTHS == 0))
    assert_close(y, y_ort.transpose(1, 0, 2), TOL32, "y")
    for name, a, b in zip(("h_n", "c_n"), finals, finals_ort):
        assert_close(a, b, TOL32, name)


def test_import_float64_weights(rng):
    model, weights = node_model(rng, "GRU", direction="bidirectional", dtype=np.float64,
                                linear_before_reset=1)
    layer = fo.from_onnx(model, 0)
    assert layer.dtype == np.float64
    # ONNX's z, r, h blocks are torch's r, z, n: block 0 of weight_ih is ONNX's block 1
    assert np.array_equal(layer.state_dict()["weight_ih_l0_reverse"][:H], weights["W"][1, H:2 * H])


TORCH_MODULES = {
    "rnn_tanh": lambda torch: torch.nn.RNN(I, H, num_layers=2, bidirectional=True),
    "rnn_relu": lambda torch: torch.nn.RNN(I, H, num_layers=2, nonlinearity="relu"),
    "lstm": lambda torch: torch.nn.LSTM(I, H, num_layers=2, bidirectional=True),
    "gru": lambda torch: torch.nn.GRU(I, H, num_layers=2, bidirectional=True, bias=False),
}


@pytest.mark.parametrize("kind", list(TORCH_MODULES))
def test_import_torch_export(rng, torch, kind):
    """A stacked torch.nn module exported by torch.onnx.export (the TorchScript exporter: the
    dynamo one needs onnxscript) imports as one layer per node, with torch's own weights bit for
    bit, and gives ONNX Runtime's outputs on that model."""
    torch.manual_seed(0)
    module = TORCH_MODULES[kind](torch).eval()
    D = 2 if module.bidirectional else 1
    n_states = 2 if kind == "lstm" else 1
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    states = [rng.standard_normal((2 * D, B, H)).astype(np.float32) for _ in range(n_states)]
    args = (torch.from_numpy(x), tuple(torch.from_numpy(s) for s in states)
            if n_states == 2 else torch.from_numpy(states[0]))
    names = ["x", "h0", "c0"][:1 + n_states]
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # the exporter's deprecation and batch notes
            torch.onnx.export(module, args, buffer, dynamo=False, input_names=names,
                              dynamic_axes={n: {1: "batch"} for n in names})
    except Exception as exc:                     # an exporter that cannot run offline
        pytest.skip(f"torch.onnx.export failed: {type(exc).__name__}: {exc}")
    model = onnx.load_from_string(buffer.getvalue())
    layers = fo.from_onnx(model)
    assert len(layers) == module.num_layers
    torch_weights = {name: p.detach().numpy() for name, p in module.named_parameters()}
    for k, layer in enumerate(layers):
        for name, a in layer.named_parameters():
            assert np.array_equal(a, torch_weights[name.replace("_l0", f"_l{k}")]), name
    outs = session(model).run(None, dict(zip(names, [x] + states)))
    y, finals = run_chain(layers, x, states, None)
    assert_close(y, outs[0], TOL32, "y")
    for name, a, b in zip(("h_n", "c_n"), finals, outs[1:]):
        assert_close(a, b, TOL32, name)


def test_import_selects_nodes(rng, tmp_path):
    model = fo.to_onnx(fastlstm.GRU(I, H, num_layers=3, seed=6))
    path = tmp_path / "gru.onnx"
    onnx.save(model, path)
    for source in (model, path, str(path), model.SerializeToString()):
        layers = fo.from_onnx(source)
        assert [layer.input_size for layer in layers] == [I, H, H]
    second = fo.from_onnx(model, node="gru_l1")
    assert np.array_equal(second.state_dict()["weight_hh_l0"],
                          fo.from_onnx(model, node=1).state_dict()["weight_hh_l0"])
    with pytest.raises(ValueError, match=r"node must name one of the recurrent nodes \['gru_l0'"
                                         r", 'gru_l1', 'gru_l2'\], got 'gru'"):
        fo.from_onnx(model, node="gru")
    twins = onnx.ModelProto()
    twins.CopyFrom(model)
    for n in twins.graph.node:
        if n.op_type == "GRU":
            n.name = "gru"
    with pytest.raises(ValueError, match=r"node='gru' names 3 of the recurrent nodes \['gru', "
                                         r"'gru', 'gru'\]: give the index of one instead"):
        fo.from_onnx(twins, node="gru")
    assert fo.from_onnx(twins, node=2).input_size == H
    with pytest.raises(ValueError, match=r"node must be an index in \[0, 3\).*got 3"):
        fo.from_onnx(model, node=3)
    with pytest.raises(TypeError, match="node must be None, a node's name or an index"):
        fo.from_onnx(model, node=True)
    with pytest.raises(TypeError, match="model_or_path must be an onnx.ModelProto, a path or "
                                        "the model's bytes, got int"):
        fo.from_onnx(3)
    empty = helper.make_model(helper.make_graph([], "g", [], []))
    with pytest.raises(ValueError, match="no RNN, LSTM or GRU node"):
        fo.from_onnx(empty)


@pytest.mark.parametrize("op, attrs, message", [
    ("LSTM", {"direction": "reverse"}, "direction must be 'forward' or 'bidirectional', got "
                                       "'reverse'"),
    ("GRU", {"clip": 5.0}, "clip=5.0 is not supported"),
    ("LSTM", {"input_forget": 1}, "input_forget=1 is not supported"),
    ("GRU", {"linear_before_reset": 0}, "linear_before_reset=0 is not supported"),
    ("GRU", {}, "linear_before_reset=0 is not supported"),            # ONNX's default
    ("LSTM", {"activations": ["Sigmoid", "Tanh", "Relu"]}, r"activations must be \['sigmoid', "
                                                           r"'tanh', 'tanh'\]"),
    ("RNN", {"activations": ["Sigmoid"]}, "activations must be Tanh or Relu, got"),
    ("RNN", {"direction": "bidirectional", "activations": ["Tanh", "Relu"]},
     r"activations must be \['tanh', 'tanh'\]"),
    ("GRU", {"linear_before_reset": 1, "weights_as": "input"}, r"W \('W'\) is a graph input$"),
    ("GRU", {"linear_before_reset": 1, "weights_as": "computed"}, r"W \('W'\) is computed by "
                                                                  "the graph"),
    ("GRU", {"linear_before_reset": 1, "weights_as": "default"}, r"W \('W'\) is a graph input "
                                                                 "with a default"),
])
def test_import_refuses(rng, op, attrs, message):
    """What fastlstm cannot compute exactly, refused with the node and attribute named."""
    model, _ = node_model(rng, op, **attrs)
    with pytest.raises(ValueError, match=f"{op} node 'my_{op.lower()}' \\(recurrent node 0\\): "
                                         f".*{message}"):
        fo.from_onnx(model)


def test_import_refuses_weights_of_other_dtypes(rng):
    model, _ = node_model(rng, "RNN")
    w = next(t for t in model.graph.initializer if t.name == "W")
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w).astype(np.float16), "W"))
    with pytest.raises(TypeError, match="W has dtype float16; expected float32 or float64"):
        fo.from_onnx(model)

