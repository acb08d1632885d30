"""ONNX in and out: fastlstm's layers as ONNX ``RNN``, ``LSTM`` and ``GRU`` nodes, and back.

    import fastlstm.onnx
    model = fastlstm.onnx.to_onnx(lstm)               # an onnx.ModelProto
    sess = fastlstm.onnx.ort_session(model)           # ONNX Runtime, one thread, no spinning
    y, h_n, c_n = sess.run(None, {"x": x})            # lengths, h0, c0 optional
    layers = fastlstm.onnx.from_onnx("model.onnx")    # one layer per recurrent node

**The exported graph** (:func:`to_onnx`) computes what the layer's forward does in eval() mode
(dropout between layers is training-only, so it is not in the graph). Its inputs and outputs are
named after the layer's arguments and return values:

    x        (seq_len, batch, input_size), or (batch, seq_len, input_size) if batch-first
    lengths  int32 (batch,): the layer's ``lengths``, ONNX's ``sequence_lens``. Optional: a
             length of -1, the default, means all seq_len steps, and one value is broadcast
             over the batch.
    h0, c0   (num_layers * num_directions, batch, hidden_size), the layer's own shape. Optional:
             the default is zeros; an initial state of batch 1 is broadcast over the batch.
    y        (seq_len, batch, num_directions * hidden_size), or batch-first
    h_n, c_n like h0 and c0: feed them back as h0 and c0 to carry the state across calls.

The optional inputs are graph inputs with a default (an initializer of the same name), so a
runtime takes them when given and the default otherwise. seq_len and batch are dynamic.

Each of the layer's ``num_layers`` layers is one ONNX node (direction "forward" or
"bidirectional"), fed the Slice of h0 (and c0) that is its own, its final states concatenated into
h_n (and c_n). ONNX orders the gates differently from torch: LSTM i, o, f, c (torch i, f, g, o),
GRU z, r, h (torch r, z, n), peepholes i, o, f (fastlstm i, f, o); the weights are reordered, not
changed, so they round-trip bit for bit. fastlstm's GRU is torch's, whose reset gate scales
``W_hn h + b_hn``: ONNX's ``linear_before_reset=1``. A batch-first layer transposes x and y in the
graph rather than setting ONNX's ``layout=1``, which ONNX Runtime's CPU kernels refuse.

**Import** (:func:`from_onnx`) builds one single-layer fastlstm layer per ONNX node: a stack
exported by torch or :func:`to_onnx` comes back as its layers, in graph order, each taking the
previous one's y. Only what fastlstm computes exactly is accepted; anything else is refused with
a ValueError naming the node and the attribute or input: ``direction="reverse"`` (a fastlstm layer
runs forward or both ways), activations other than the standard ones (RNN Tanh or Relu, the same
in both directions; LSTM Sigmoid, Tanh, Tanh; GRU Sigmoid, Tanh), ``clip``,
``input_forget=1``, a GRU's ``linear_before_reset=0``, and weights that are not constants (a
graph initializer or a Constant node's value; an initializer that is also a graph input is a
default the caller may replace, so it is refused too). A node without the bias input B becomes a
``bias=False`` layer, which computes ONNX's zero bias exactly; one without P an LSTM without
peepholes. ``layout=1`` gives a ``batch_first=True`` layer (its h0 and c0 stay
(num_directions, batch, hidden_size), fastlstm's shape, where ONNX's would be batch-first too).
The node's data inputs (X, sequence_lens, initial_h, initial_c) are the layer's call arguments.

**Float64**: ONNX's operators take double, but ONNX Runtime's CPU kernels do not (LSTM and GRU
raise "does not support double yet", RNN has no double kernel): a float64 export is valid ONNX,
for other runtimes (onnx.reference runs it, without sequence_lens, which it ignores).

This module imports onnx, and :func:`ort_session` onnxruntime; ``import fastlstm`` imports
neither. They are two extras, ``pip install "fastlstm[onnx]"`` and ``"fastlstm[onnxruntime]"``:
exporting and importing need onnx alone, and a model may be meant for another runtime.
"""

import numbers
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .layers import GRU, LSTM, RNN, _Recurrent

__all__ = ["to_onnx", "from_onnx", "ort_session"]

# The opset of the exported models: the latest version of the recurrent operators but for
# opset 22, which only added types (bfloat16) that fastlstm has no use for; Transpose, Slice,
# Squeeze, Expand and Where have their current forms there too. A lower opset means more
# runtimes (and older ONNX Runtime releases) take the models.
OPSET = 14

_ONNX_OPS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
_LAYERS = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
_ELEM_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}

# ONNX's gate blocks, each given as the index of the same gate in torch's (fastlstm's) order:
# LSTM ONNX i, o, f, c from torch i, f, g, o; GRU ONNX z, r, h from torch r, z, n.
_ONNX_GATES = {"RNN": [0], "LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2]}
# ONNX's peepholes p_i, p_o, p_f from fastlstm's i, f, o.
_ONNX_PEEPHOLES = [0, 2, 1]
# The standard activations of each ONNX operator, per direction: what fastlstm's cells compute.
# The RNN's one is the layer's nonlinearity. ONNX Runtime reads the names case-insensitively.
_ACTIVATIONS = {"RNN": None, "LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh")}
_RNN_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu"}


def _blocks(a, order):
    """``a``'s gate blocks (equal slices along its first axis) in ``order``: block j of the result
    is block ``order[j]`` of ``a``. A pure copy, so the values round-trip bit for bit."""
    blocks = np.split(a, len(order))
    return np.concatenate([blocks[j] for j in order])


def _inverse(order):
    return list(np.argsort(order))


# ---------------------------------------------------------------------------- export


class _Graph:
    """The nodes and initializers of a graph being built, with names that do not collide."""

    def __init__(self):
        self.nodes, self.initializers = [], []
        self._count = 0

    def const(self, name, value):
        """An initializer holding ``value``; returns its name."""
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def add(self, op, inputs, outputs=None, name=None, **attrs):
        """A node; ``outputs`` names its outputs (default: one fresh name), ``name`` the node
        (default: a fresh one), which a runtime's errors quote. Returns the output name, or the
        list of them when ``outputs`` is a list."""
        self._count += 1
        names = outputs if outputs is not None else f"{op.lower()}_{self._count}"
        node = helper.make_node(op, list(inputs), names if isinstance(names, list) else [names],
                                name=name or f"{op}_{self._count}", **attrs)
        self.nodes.append(node)
        return names


def _check_exportable(layer):
    if not isinstance(layer, _Recurrent):
        raise TypeError(f"layer must be a fastlstm.RNN, LSTM or GRU, got {type(layer).__name__}")
    if layer.proj_size:
        raise ValueError(f"ONNX's LSTM has no projection, so a layer with proj_size="
                         f"{layer.proj_size} cannot be exported (expected proj_size=0)")
    # Options of the contract that ONNX's operators do not have; checked by name, so that a
    # layer that has them is refused rather than exported without them.
    for option in ("feedback", "layer_norm"):
        if getattr(layer, option, None):
            raise ValueError(f"ONNX's {type(layer).__name__} has no {option}, so a layer with "
                             f"{option}={getattr(layer, option)!r} cannot be exported")


def _onnx_weights(layer, k):
    """Layer ``k``'s weights as the ONNX node's W, R, B (None without biases) and P (None
    without peepholes), directions stacked along the first axis, gates in ONNX's order."""
    op = _ONNX_OPS[layer.cell]
    gates = _ONNX_GATES[op]
    per_direction = [layer._weights(k * layer.num_directions + d)
                     for d in range(layer.num_directions)]
    W = np.stack([_blocks(w["w_ih"], gates) for w in per_direction])
    R = np.stack([_blocks(w["w_hh"], gates) for w in per_direction])
    B = P = None
    if layer.bias:
        B = np.stack([np.concatenate([_blocks(w["b_ih"], gates), _blocks(w["b_hh"], gates)])
                      for w in per_direction])
    if layer.peephole:
        P = np.stack([_blocks(w["w_peephole"], _ONNX_PEEPHOLES) for w in per_direction])
    return W, R, B, P


def to_onnx(layer, *, batch_first=None):
    """``layer`` (a fastlstm.RNN, LSTM or GRU, stacked or bidirectional) as an ONNX model.

    The graph computes the layer's eval() forward: inputs ``x``, ``lengths``, ``h0`` (and ``c0``),
    the last three optional; outputs ``y``, ``h_n`` (and ``c_n``), as the module docstring
    describes. ``batch_first`` sets the layout of x and y (None: the layer's own). An LSTM with
    ``proj_size`` is refused (ValueError): ONNX's LSTM has no projection.

    Returns an ``onnx.ModelProto`` of opset 14 that passes ``onnx.checker.check_model``; save it
    with ``onnx.save(model, path)``.
    """
    _check_exportable(layer)
    batch_first = layer.batch_first if batch_first is None else batch_first
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first must be None, True or False, got {batch_first!r}")
    op = _ONNX_OPS[layer.cell]
    L, D, H = layer.num_layers, layer.num_directions, layer.hidden_size
    elem = _ELEM_TYPES[layer.dtype]
    state_names = ("h0", "c0")[:layer.n_states]
    final_names = ("h_n", "c_n")[:layer.n_states]
    g = _Graph()

    x_dims = ["batch", "seq_len", layer.input_size] if batch_first else \
        ["seq_len", "batch", layer.input_size]
    inputs = [helper.make_tensor_value_info("x", elem, x_dims),
              helper.make_tensor_value_info("lengths", TensorProto.INT32, ["batch"])]
    inputs += [helper.make_tensor_value_info(s, elem, [L * D, "batch", H]) for s in state_names]
    # The defaults of the optional inputs: initializers named as the inputs (IR >= 4: a runtime
    # uses one unless the caller feeds the input). Their batch dimension is 1, broadcast below.
    g.const("lengths", np.array([-1], np.int32))
    for s in state_names:
        g.const(s, np.zeros((L * D, 1, H), layer.dtype))

    x = g.add("Transpose", ["x"], perm=[1, 0, 2]) if batch_first else "x"
    shape = g.add("Shape", [x])
    seq_len = g.add("Slice", [shape, g.const("zero", np.array([0])), g.const("one", np.array([1]))])
    batch = g.add("Slice", [shape, "one", g.const("two", np.array([2]))])
    # lengths: broadcast over the batch (Expand refuses any length but 1 and batch), then -1
    # replaced by seq_len; other values go to the nodes as they are, which check them.
    lengths = g.add("Expand", ["lengths", batch], name="broadcast_lengths")
    full = g.add("Cast", [seq_len], to=TensorProto.INT32)
    lengths = g.add("Where", [g.add("Equal", [lengths, g.const("minus_one",
                                                               np.array(-1, np.int32))]),
                              full, lengths])
    state_shape = g.add("Concat", [g.const("states", np.array([L * D])), batch,
                                   g.const("hidden", np.array([H]))], axis=0)
    states = [g.add("Expand", [s, state_shape], name=f"broadcast_{s}") for s in state_names]
    # A sequence of length 0 keeps its initial states, as in the layer; ONNX Runtime's nodes give
    # it zeros (the ONNX spec does not say), so each final state is chosen by this mask, (1, B, 1).
    empty = g.add("Unsqueeze", [g.add("Equal", [lengths, g.const("zero_length",
                                                                 np.array(0, np.int32))]),
                                g.const("batch_axis_only", np.array([0, 2]))])

    attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    if op == "RNN":
        attrs["activations"] = [_RNN_ACTIVATIONS[layer.nonlinearity]] * D
    if op == "GRU":
        attrs["linear_before_reset"] = 1
    finals = [[] for _ in state_names]
    for k in range(L):
        W, R, B, P = _onnx_weights(layer, k)
        weights = [g.const(f"W_l{k}", W), g.const(f"R_l{k}", R),
                   "" if B is None else g.const(f"B_l{k}", B)]
        lo, hi = g.const(f"l{k}_start", np.array([k * D])), g.const(f"l{k}_end",
                                                                    np.array([(k + 1) * D]))
        init = [g.add("Slice", [s, lo, hi, "zero"]) for s in states]
        node_inputs = [x] + weights + [lengths] + init
        if op == "LSTM":
            node_inputs += ["" if P is None else g.const(f"P_l{k}", P)]
        outs = g.add(op, node_inputs, [f"Y_l{k}"] + [f"{f}_l{k}" for f in final_names],
                     name=f"{layer.cell}_l{k}", **attrs)
        for f, out, s in zip(finals, outs[1:], init):
            f.append(g.add("Where", [empty, s, out]))
        # Y is (seq_len, num_directions, batch, hidden); the next layer, and y, want
        # (seq_len, batch, num_directions * hidden), as the layer's y.
        if D == 1:
            x = g.add("Squeeze", [outs[0], "one"])
        else:
            x = g.add("Reshape", [g.add("Transpose", [outs[0]], perm=[0, 2, 1, 3]),
                                  g.const(f"l{k}_out_shape", np.array([0, 0, D * H]))])
    if batch_first:
        g.add("Transpose", [x], "y", perm=[1, 0, 2])
    else:
        g.add("Identity", [x], "y")
    for name, f in zip(final_names, finals):
        g.add("Concat", f, name, axis=0)

    y_dims = ["batch", "seq_len", D * H] if batch_first else ["seq_len", "batch", D * H]
    outputs = [helper.make_tensor_value_info("y", elem, y_dims)]
    outputs += [helper.make_tensor_value_info(f, elem, [L * D, "batch", H]) for f in final_names]
    graph = helper.make_graph(g.nodes, f"fastlstm_{layer.cell}", inputs, outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="fastlstm", doc_string=repr(layer))
    # The oldest IR version that has this opset, for the runtimes that take no newer one.
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    onnx.checker.check_model(model)
    return model


# ---------------------------------------------------------------------------- import


def _load(model_or_path):
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path
    if isinstance(model_or_path, (bytes, bytearray)):
        return onnx.load_from_string(bytes(model_or_path))
    if isinstance(model_or_path, (str, os.PathLike)):
        return onnx.load(os.fspath(model_or_path))
    raise TypeError(f"model_or_path must be an onnx.ModelProto, a path or the model's bytes, got "
                    f"{type(model_or_path).__name__}")


def _constants(graph):
    """``{name: array}`` of the graph's constant tensors: initializers that are not graph inputs
    (those are defaults a caller may replace) and the values of Constant nodes; and ``{name:
    whether it has a default}`` of the graph's inputs."""
    initializers = {t.name for t in graph.initializer}
    inputs = {i.name: i.name in initializers for i in graph.input}
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer
                 if t.name not in inputs}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            constants[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return constants, inputs


def _select(nodes, node):
    """The recurrent nodes ``node`` asks for: all of them for None, else one, by name or index."""
    names = [n.name for n in nodes]
    if node is None:
        return list(range(len(nodes)))
    if isinstance(node, str):
        found = [k for k, name in enumerate(names) if name == node]
        if not found:
            raise ValueError(f"node must name one of the recurrent nodes {names}, got {node!r}")
        if len(found) > 1:
            raise ValueError(f"node={node!r} names {len(found)} of the recurrent nodes {names}: "
                             f"give the index of one instead")
        return found
    if isinstance(node, numbers.Integral) and not isinstance(node, bool):
        if not 0 <= node < len(nodes):
            raise ValueError(f"node must be an index in [0, {len(nodes)}) of the model's "
                             f"{len(nodes)} recurrent nodes {names}, got {node}")
        return [int(node)]
    raise TypeError(f"node must be None, a node's name or an index among the recurrent nodes, "
                    f"got {type(node).__name__} {node!r}")


def _layer_from_node(n, index, constants, inputs):
    """The fastlstm layer computing ONNX node ``n`` (the ``index``-th recurrent node), whose
    weights come from ``constants``; ``inputs`` are the graph's (for errors)."""
    op = n.op_type
    what = f"{op} node {n.name!r} (recurrent node {index})"
    attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
    for key in ("activations", "direction"):
        if key in attrs:
            attrs[key] = [a.decode() for a in attrs[key]] if key == "activations" else \
                attrs[key].decode()

    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "bidirectional"):
        raise ValueError(f"{what}: direction must be 'forward' or 'bidirectional', got "
                         f"{direction!r}: a fastlstm layer has no reverse-only form")
    D = 2 if direction == "bidirectional" else 1
    if "clip" in attrs:
        raise ValueError(f"{what}: clip={attrs['clip']} is not supported (expected no clip): "
                         f"fastlstm's cells do not clip their pre-activations")
    if attrs.get("input_forget", 0):
        raise ValueError(f"{what}: input_forget={attrs['input_forget']} is not supported "
                         f"(expected 0): fastlstm's LSTM has independent input and forget gates")
    if op == "GRU" and attrs.get("linear_before_reset", 0) != 1:
        raise ValueError(f"{what}: linear_before_reset={attrs.get('linear_before_reset', 0)} is "
                         f"not supported (expected 1): fastlstm's GRU is torch's, whose reset gate "
                         f"scales W_hn h + b_hn")
    layout = attrs.get("layout", 0)
    if layout not in (0, 1):
        raise ValueError(f"{what}: layout must be 0 or 1, got {layout}")

    # Only activations without parameters are accepted, so activation_alpha and _beta, which
    # parametrise the others, change nothing and are not read.
    expected = _ACTIVATIONS[op]
    activations = [a.lower() for a in attrs.get("activations", [])]
    if op == "RNN":
        nonlinearity = activations[0] if activations else "tanh"
        expected = (nonlinearity,)
        if nonlinearity not in _RNN_ACTIVATIONS:
            raise ValueError(f"{what}: activations must be Tanh or Relu, got "
                             f"{attrs['activations']}")
    if activations and activations != list(expected) * D:
        raise ValueError(f"{what}: activations must be {list(expected) * D} (case aside), the "
                         f"ones fastlstm computes, got {attrs['activations']}")

    def constant(k, name):
        """The node's input ``k`` (ONNX's ``name``) as an array; None when absent."""
        if len(n.input) <= k or not n.input[k]:
            return None
        source = n.input[k]
        if source not in constants:
            if source not in inputs:
                why = "computed by the graph"
            elif inputs[source]:
                why = "a graph input with a default, which a caller may replace"
            else:
                why = "a graph input"
            raise ValueError(f"{what}: its weights must be constants (initializers), but {name} "
                             f"({source!r}) is {why}")
        return constants[source]

    W, R, B = constant(1, "W"), constant(2, "R"), constant(3, "B")
    P = constant(7, "P") if op == "LSTM" else None
    if W is None or R is None:
        raise ValueError(f"{what}: W and R are required inputs")
    G = len(_ONNX_GATES[op])
    H = R.shape[-1] if R.ndim == 3 else None
    if H is None or R.shape != (D, G * H, H):
        raise ValueError(f"{what}: R must have shape (num_directions={D}, {G} * hidden_size, "
                         f"hidden_size), got {R.shape}")
    if attrs.get("hidden_size", H) != H:
        raise ValueError(f"{what}: hidden_size={attrs['hidden_size']} does not match R's shape "
                         f"{R.shape}")
    if W.ndim != 3 or W.shape[:2] != (D, G * H):
        raise ValueError(f"{what}: W must have shape ({D}, {G * H}, input_size), got {W.shape}")
    for name, a, shape in (("B", B, (D, 2 * G * H)), ("P", P, (D, 3 * H))):
        if a is not None and a.shape != shape:
            raise ValueError(f"{what}: {name} must have shape {shape}, got {a.shape}")
    dtype = W.dtype
    for name, a in (("W", W), ("R", R), ("B", B), ("P", P)):
        if a is not None and (a.dtype not in _ELEM_TYPES or a.dtype != dtype):
            raise TypeError(f"{what}: {name} has dtype {a.dtype}; expected float32 or float64, "
                            f"the same for W, R, B and P")

    kwargs = dict(bias=B is not None, batch_first=layout == 1, bidirectional=D == 2,
                  dtype=dtype)
    if op == "RNN":
        kwargs["nonlinearity"] = nonlinearity
    if op == "LSTM":
        kwargs["peephole"] = P is not None
    layer = _LAYERS[op](W.shape[2], H, **kwargs)
    gates = _inverse(_ONNX_GATES[op])
    state = {}
    for d, suffix in enumerate(("", "_reverse")[:D]):
        state[f"weight_ih_l0{suffix}"] = _blocks(W[d], gates)
        state[f"weight_hh_l0{suffix}"] = _blocks(R[d], gates)
        if B is not None:
            b_ih, b_hh = np.split(B[d], 2)
            state[f"bias_ih_l0{suffix}"] = _blocks(b_ih, gates)
            state[f"bias_hh_l0{suffix}"] = _blocks(b_hh, gates)
        if P is not None:
            state[f"weight_peephole_l0{suffix}"] = _blocks(P[d], _inverse(_ONNX_PEEPHOLES))
    layer.load_state_dict(state)
    return layer.eval()


def from_onnx(model_or_path, node=None):
    """The fastlstm layer of an ONNX ``RNN``, ``LSTM`` or ``GRU`` node, or with ``node=None`` a
    list of them, one per recurrent node of the model's main graph, in graph order.

    ``model_or_path``: an ``onnx.ModelProto``, a path to a .onnx file or the model's bytes.
    ``node``: a node's name, or its index among the recurrent nodes. Each layer is a
    single-layer fastlstm layer with the node's weights (reordered to torch's gate order, values
    unchanged), in eval() mode; call ``.train()`` to train it. What fastlstm cannot compute
    exactly is refused (ValueError), as the module docstring lists.
    """
    model = _load(model_or_path)
    # ONNX's own operators only (the default domain), not others' of the same name
    nodes = [n for n in model.graph.node
             if n.op_type in _LAYERS and n.domain in ("", "ai.onnx")]
    if not nodes:
        raise ValueError("the model has no RNN, LSTM or GRU node in its main graph")
    picked = _select(nodes, node)
    constants, inputs = _constants(model.graph)
    layers = [_layer_from_node(nodes[k], k, constants, inputs) for k in picked]
    return layers if node is None else layers[0]


# ---------------------------------------------------------------------------- running


def ort_session(model, threads=1):
    """An ONNX Runtime ``InferenceSession`` of ``model`` (an onnx.ModelProto, a path or the
    model's bytes) on the CPU, with ``threads`` intra-op threads that sleep when idle.

    ONNX Runtime's threads spin, busy-waiting for work, between and after its kernels; on a
    shared machine (and beside fastlstm's own threads in a benchmark) that steals the cores
    others run on, so spinning is turned off. Nodes run one after another (inter-op threads: 1).
    The session logs errors only (see below).
    """
    import onnxruntime

    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    # Errors only: every session of a to_onnx model would warn that its optional inputs
    # (initializers that are also graph inputs) "will not be treated as constant", which is
    # what they are for.
    options.log_severity_level = 3
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = os.fspath(model)
    elif not isinstance(model, (str, bytes)):
        raise TypeError(f"model must be an onnx.ModelProto, a path or the model's bytes, got "
                        f"{type(model).__name__}")
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
