"""fastlstm.torch: the torch.nn modules on fastlstm's kernels, against torch.nn itself.

The oracle is torch.nn's own RNN, LSTM and GRU holding the same weights: a small model (the
recurrent layer and a Linear head) is copied, one copy converted, and both run the same input,
states and loss. Outputs and every gradient (parameters, input, initial states) must agree to
test_torch.py's tolerances (1e-10 in float64, 1e-5 in float32, relative to max(1, |value|); its
docstring says why). torch.autograd.gradcheck checks the backward against finite differences.

The dropout between layers draws its masks through torch's RNG in the same order and shape as
torch.nn's own layers, so with the same seed the masks are the same and dropout is compared too.
"""
import copy
import os
import pickle

import numpy as np
import pytest
from helpers import assert_close, run_python

import fastlstm

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastlstm.torch")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN"),
    pytest.mark.usefixtures("torch_and_fastlstm_on_one_thread"),
]

TOLS = {torch.float32: 1e-5, torch.float64: 1e-10}
DTYPES = {"f32": torch.float32, "f64": torch.float64}
KINDS = ("rnn_tanh", "rnn_relu", "gru", "lstm", "lstmp")
I, H, T, B = 3, 5, 6, 4
LENGTHS = [6, 2, 5, 3]    # for packed input: unsorted, so torch permutes the states
SORTED_LENGTHS = [6, 5, 3, 2]   # for packed input with enforce_sorted=True: no permutation


def make_rnn(kind, dtype=torch.float64, input_size=I, hidden_size=H, **options):
    """A torch.nn recurrent module of a kind, torch's own initialisation; "lstmp" projects to
    half the hidden size."""
    if kind.startswith("rnn"):
        return torch.nn.RNN(input_size, hidden_size, nonlinearity=kind[4:], dtype=dtype,
                            **options)
    if kind == "gru":
        return torch.nn.GRU(input_size, hidden_size, dtype=dtype, **options)
    proj = {"proj_size": hidden_size // 2} if kind == "lstmp" else {}
    return torch.nn.LSTM(input_size, hidden_size, dtype=dtype, **proj, **options)


class Model(torch.nn.Module):
    """A recurrent layer and a Linear head on its outputs (padded back from a packed output)."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn
        D = 2 if rnn.bidirectional else 1
        self.head = torch.nn.Linear(D * (rnn.proj_size or rnn.hidden_size), 2,
                                    dtype=rnn.weight_hh_l0.dtype)

    def forward(self, x, hx=None):
        y, finals = self.rnn(x, hx)
        if isinstance(y, torch.nn.utils.rnn.PackedSequence):
            y, _ = pad_packed_sequence(y, batch_first=self.rnn.batch_first)
        return self.head(y), finals


def states_of(kind, rnn, batch, dtype, gen):
    """Random initial states for ``batch`` sequences (None: unbatched)."""
    LD = rnn.num_layers * (2 if rnn.bidirectional else 1)
    H = rnn.hidden_size
    sizes = (rnn.proj_size or H, H) if kind.startswith("lstm") else (H,)
    shape = (LD,) if batch is None else (LD, batch)
    states = [torch.randn(*shape, n, dtype=dtype, generator=gen).requires_grad_() for n in sizes]
    return tuple(states) if kind.startswith("lstm") else states[0]


def as_tuple(states):
    return () if states is None else states if isinstance(states, tuple) else (states,)


def run(model, x, hx, lengths, seed):
    """Forward and backward of a loss touching every output; returns the outputs and every
    gradient (parameters by name, then x and the initial states). With ``lengths``, the model
    gets x packed (sorted lengths: packed with enforce_sorted=True)."""
    model.zero_grad()
    inputs = (x, *as_tuple(hx))
    for t in inputs:
        t.grad = None
    if lengths is not None:
        x = pack_padded_sequence(x, torch.tensor(lengths), batch_first=model.rnn.batch_first,
                                 enforce_sorted=lengths == sorted(lengths, reverse=True))
    torch.manual_seed(seed)          # the dropout masks
    out, finals = model(x, hx)
    finals = finals if isinstance(finals, tuple) else (finals,)
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, dtype=o.dtype, generator=gen)).sum()
               for o in (out, *finals))
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    grads.update({f"input {k}": t.grad for k, t in enumerate(inputs)})
    return [out.detach(), *(f.detach() for f in finals)], grads


def assert_same_run(model, x, hx=None, lengths=None, seed=0):
    """The model against a converted copy of itself: outputs and every gradient."""
    converted = ft.convert(copy.deepcopy(model))
    assert type(converted.rnn).__module__ == "fastlstm.torch"
    outs, grads = run(model, x, hx, lengths, seed)
    outs_f, grads_f = run(converted, x, hx, lengths, seed)
    tol = TOLS[x.dtype]
    for k, (a, b) in enumerate(zip(outs_f, outs, strict=True)):
        assert_close(a.numpy(), b.numpy(), tol, f"output {k}")
    assert grads_f.keys() == grads.keys()
    for name, g in grads.items():
        assert grads_f[name] is not None, name
        assert_close(grads_f[name].numpy(), g.numpy(), tol, name)


OPTIONS = [
    dict(),
    dict(num_layers=2),
    dict(bidirectional=True),
    dict(num_layers=3, bidirectional=True, dropout=0.5),
    dict(num_layers=2, dropout=0.3, batch_first=True),
    dict(bias=False, batch_first=True),
    dict(num_layers=2, bidirectional=True, bias=False),
]


def options_id(options):
    return "-".join(f"{k}={v}" for k, v in options.items()) or "defaults"


@pytest.mark.parametrize("dtype", DTYPES.values(), ids=DTYPES.keys())
@pytest.mark.parametrize("form", ["padded", "padded+hx", "packed", "packed+hx",
                                  "packed-sorted+hx", "unbatched"])
@pytest.mark.parametrize("options", OPTIONS, ids=options_id)
@pytest.mark.parametrize("kind", KINDS)
def test_model_matches_torch(kind, options, form, dtype, rng):
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    torch.manual_seed(gen.initial_seed())
    model = Model(make_rnn(kind, dtype, **options))
    if form == "unbatched":
        x = torch.randn(T, I, dtype=dtype, generator=gen, requires_grad=True)
        hx = states_of(kind, model.rnn, None, dtype, gen)
    else:
        shape = (B, T, I) if options.get("batch_first") else (T, B, I)
        x = torch.randn(*shape, dtype=dtype, generator=gen, requires_grad=True)
        hx = states_of(kind, model.rnn, B, dtype, gen) if form.endswith("+hx") else None
    lengths = {"packed": LENGTHS, "packed-sorted": SORTED_LENGTHS}.get(form.split("+")[0])
    assert_same_run(model, x, hx, lengths)


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck(kind):
    """torch.autograd.gradcheck (finite differences in float64) through two bidirectional
    layers, with respect to the input, the initial states and every parameter."""
    torch.manual_seed(0)
    rnn = ft.convert(make_rnn(kind, num_layers=2, bidirectional=True))
    names = [name for name, _ in rnn.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in rnn.parameters()]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 2, I, dtype=torch.float64, generator=gen, requires_grad=True)
    hx = states_of(kind, rnn, 2, torch.float64, gen)
    hx = list(hx) if isinstance(hx, tuple) else [hx]

    def f(x, *rest):
        states, weights = rest[:len(hx)], rest[len(hx):]
        y, finals = torch.func.functional_call(
            rnn, dict(zip(names, weights)),
            (x, tuple(states) if len(states) == 2 else states[0]))
        return (y,) + (finals if isinstance(finals, tuple) else (finals,))

    assert torch.autograd.gradcheck(f, (x, *hx, *params), eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("kind", ["gru", "lstmp"])
def test_gradcheck_packed(kind):
    torch.manual_seed(0)
    rnn = ft.convert(make_rnn(kind, bidirectional=True))
    x = torch.randn(4, 3, I, dtype=torch.float64, requires_grad=True)

    def f(x):
        y, _ = rnn(pack_padded_sequence(x, torch.tensor([2, 4, 1]), enforce_sorted=False))
        return y.data

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7, rtol=1e-6)


# ---------------------------------------------------------------- convert() and the module API


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Linear(4, I)
        self.layers = torch.nn.ModuleList([torch.nn.GRU(I, H), torch.nn.RNN(H, H)])
        self.inner = torch.nn.Sequential(torch.nn.LSTM(H, H, num_layers=2), torch.nn.Identity())


class MyLSTM(torch.nn.LSTM):
    """A user's subclass, which convert() must leave alone."""


def test_convert_nested_model_in_place():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"encoder": Encoder(), "top": torch.nn.LSTM(H, 2),
                                 "mine": MyLSTM(H, 2)})
    before = {name: type(m) for name, m in model.named_modules()}
    params = {name: p for name, p in model.named_parameters()}
    values = copy.deepcopy(model.state_dict())
    x = torch.randn(T, B, 4)

    def outputs():
        h = model["encoder"].embed(x)
        for layer in model["encoder"].layers:
            h, _ = layer(h)
        h, _ = model["encoder"].inner[0](h)
        return h, model["top"](h)[0], model["mine"](h)[0]

    expected = outputs()
    assert ft.convert(model) is model
    converted = {name: type(m) for name, m in model.named_modules()}
    for name, cls in before.items():
        twin = {torch.nn.RNN: ft.RNN, torch.nn.LSTM: ft.LSTM, torch.nn.GRU: ft.GRU}.get(cls, cls)
        assert converted[name] is twin, name
    assert converted["mine"] is MyLSTM
    assert {name: p for name, p in model.named_parameters()} == params   # the same objects
    for name, v in model.state_dict().items():
        assert torch.equal(v, values[name]), name
    for a, b in zip(outputs(), expected):
        assert_close(a.detach().numpy(), b.detach().numpy(), TOLS[torch.float32])
    assert ft.convert(model) is model            # converting again changes nothing
    assert type(model["top"]) is ft.LSTM


def test_convert_a_recurrent_module_itself_and_train_with_an_existing_optimizer():
    torch.manual_seed(0)
    gru = torch.nn.GRU(I, H, dtype=torch.float64)
    reference = copy.deepcopy(gru)
    opt = torch.optim.SGD(gru.parameters(), lr=0.1)     # made before convert()
    opt_ref = torch.optim.SGD(reference.parameters(), lr=0.1)
    assert ft.convert(gru) is gru and type(gru) is ft.GRU
    x = torch.randn(T, B, I, dtype=torch.float64)
    for module, optimizer in ((gru, opt), (reference, opt_ref)):
        for _ in range(3):
            optimizer.zero_grad()
            module(x)[0].square().mean().backward()
            optimizer.step()
    for name, p in reference.named_parameters():
        assert_close(getattr(gru, name).detach().numpy(), p.detach().numpy(),
                     TOLS[torch.float64], name)


def test_module_api_is_torch_nn():
    torch.manual_seed(0)
    lstm = ft.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, batch_first=True)
    twin = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=2, batch_first=True)
    assert isinstance(lstm, torch.nn.LSTM)
    assert repr(lstm) == repr(twin)
    assert [(n, p.shape) for n, p in lstm.named_parameters()] == \
        [(n, p.shape) for n, p in twin.named_parameters()]
    assert all(isinstance(p, torch.nn.Parameter) for p in lstm.parameters())
    lstm.load_state_dict(twin.state_dict())
    x = torch.randn(B, T, I)
    assert_close(lstm(x)[0].detach().numpy(), twin(x)[0].detach().numpy(), TOLS[torch.float32])

    lstm.to(torch.float64)
    twin.to(torch.float64)
    y, (h, c) = lstm(x.double())
    assert y.dtype == h.dtype == c.dtype == torch.float64
    assert_close(y.detach().numpy(), twin(x.double())[0].detach().numpy(), TOLS[torch.float64])

    clone = pickle.loads(pickle.dumps(lstm))
    assert type(clone) is ft.LSTM
    assert torch.equal(clone(x.double())[0], y)


def test_eval_and_no_grad():
    torch.manual_seed(0)
    rnn = torch.nn.GRU(I, H, num_layers=3, dropout=0.5).double()
    ours = ft.convert(copy.deepcopy(rnn))
    x = torch.randn(T, B, I, dtype=torch.float64)
    rnn.eval()
    ours.eval()
    with torch.no_grad():
        y, y_ours = rnn(x)[0], ours(x)[0]
    assert not y_ours.requires_grad
    assert_close(y_ours.numpy(), y.numpy(), TOLS[torch.float64])


@pytest.mark.parametrize("kind", KINDS)
def test_a_forward_without_gradients_runs_the_inference_kernels(kind, monkeypatch):
    """Under no_grad or inference_mode, or when nothing requires a gradient, the kernels get
    training=False and keep nothing for backward; the outputs are exactly those of a forward
    that keeps it."""
    torch.manual_seed(0)
    ours = ft.convert(make_rnn(kind, num_layers=2, bidirectional=True))
    x, lengths = torch.randn(T, B, I, dtype=torch.float64), torch.tensor(LENGTHS)
    name = {"rnn_tanh": "rnn", "rnn_relu": "rnn", "lstmp": "lstm"}.get(kind, kind) + "_forward"
    real, seen = getattr(fastlstm.native, name), []

    def spy(*args, training, **kwargs):
        seen.append(training)
        return real(*args, training=training, **kwargs)
    monkeypatch.setattr(fastlstm.native, name, spy)

    def run(inp):
        out, finals = ours(inp)
        out = out.data if isinstance(out, torch.nn.utils.rnn.PackedSequence) else out
        return [out] + list(finals if isinstance(finals, tuple) else (finals,))

    for inp in (x, pack_padded_sequence(x, lengths, enforce_sorted=False)):
        expected = run(inp)
        assert seen == [True] * 4 and all(t.requires_grad for t in expected)
        for context in (torch.no_grad, torch.inference_mode):
            seen.clear()
            with context():
                got = run(inp)
            assert seen == [False] * 4
            for a, b in zip(expected, got):
                assert not b.requires_grad and torch.equal(a, b)
        seen.clear()
        ours.requires_grad_(False)
        got = run(inp)
        assert seen == [False] * 4 and all(torch.equal(a, b) for a, b in zip(expected, got))
        ours.requires_grad_(True)
        seen.clear()


@pytest.mark.parametrize("kind", KINDS)
def test_the_first_layer_skips_dx_when_the_input_needs_no_gradient(kind, monkeypatch):
    torch.manual_seed(0)
    rnn = make_rnn(kind, num_layers=2)
    ours = ft.convert(copy.deepcopy(rnn))
    name = {"rnn_tanh": "rnn", "rnn_relu": "rnn", "lstmp": "lstm"}.get(kind, kind) + "_backward"
    real, seen = getattr(fastlstm.native, name), []

    def spy(*args, input_grad, **grads):
        seen.append(input_grad)
        return real(*args, input_grad=input_grad, **grads)
    monkeypatch.setattr(fastlstm.native, name, spy)
    for requires_grad in (False, True):
        seen.clear()
        x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=requires_grad)
        for module in (rnn, ours):
            module.zero_grad()
            module(x)[0].square().sum().backward()
        assert seen == [True, requires_grad]      # the layers' backwards run top first
        for p, q in zip(rnn.parameters(), ours.parameters()):
            assert_close(q.grad.numpy(), p.grad.numpy(), TOLS[torch.float64])


@pytest.mark.parametrize("kind", KINDS)
def test_smallest_sizes_match_torch(kind):
    """B=1, I=1 and the smallest hidden size (1, or 2 to project to 1)."""
    torch.manual_seed(0)
    rnn = make_rnn(kind, input_size=1, hidden_size=2 if kind == "lstmp" else 1, num_layers=2,
                   bidirectional=True)
    x = torch.randn(T, 1, 1, dtype=torch.float64, requires_grad=True)
    assert_same_run(Model(rnn), x, states_of(kind, rnn, 1, torch.float64, torch.Generator()))


@pytest.mark.parametrize("kind", KINDS)
def test_empty_batch_as_torch(kind):
    """B=0: outputs and states of torch's shapes, with no rows."""
    rnn = make_rnn(kind, num_layers=2, bidirectional=True)
    ours = ft.convert(copy.deepcopy(rnn))
    x = torch.zeros(T, 0, I, dtype=torch.float64)
    expected, got = rnn(x), ours(x)
    assert got[0].shape == expected[0].shape
    for a, b in zip(as_tuple(got[1]), as_tuple(expected[1]), strict=True):
        assert a.shape == b.shape


@pytest.mark.parametrize("kind", KINDS)
def test_no_steps_returns_the_initial_states(kind):
    """T=0, which torch.nn refuses: y is empty, the final states are the initial ones and their
    gradients pass straight through."""
    rnn = ft.convert(make_rnn(kind, num_layers=2))
    hx = states_of(kind, rnn, B, torch.float64, torch.Generator().manual_seed(0))
    y, finals = rnn(torch.zeros(0, B, I, dtype=torch.float64), hx)
    assert y.shape == (0, B, rnn.proj_size or H)
    sum((k + 2) * got.sum() for k, got in enumerate(as_tuple(finals))).backward()
    for k, (got, h0) in enumerate(zip(as_tuple(finals), as_tuple(hx), strict=True)):
        assert torch.equal(got, h0)
        assert torch.equal(h0.grad, torch.full_like(h0, k + 2))


def test_saved_tensor_hooks():
    """Saved tensors offloaded by save_on_cpu, or handed back by a hook in another layout, give
    the same gradients."""
    torch.manual_seed(0)
    gru = ft.GRU(I, H, num_layers=2, bidirectional=True).double()
    x = torch.randn(T, B, I, dtype=torch.float64)

    def grads():
        gru.zero_grad()
        gru(x)[0].square().sum().backward()
        return [p.grad.clone() for p in gru.parameters()]

    expected = grads()
    transposed = (lambda t: t.t().contiguous().t() if t.dim() == 2 else t, lambda t: t)
    for hooks in (torch.autograd.graph.save_on_cpu(),
                  torch.autograd.graph.saved_tensors_hooks(*transposed)):
        with hooks:
            got = grads()
        for a, b in zip(got, expected):
            assert torch.equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_backward_takes_each_missing_gradient_as_zeros_in_its_own_place(kind):
    """The Function's backward given None for some output gradients (what autograd passes when
    gradient materialisation is off) treats each as zeros where it stands: the later ones keep
    their places, none slides into a None's slot. Called directly on the node of a forward."""
    torch.manual_seed(0)
    rnn = ft.convert(make_rnn(kind))
    x = torch.randn(T * B, I, dtype=torch.float64)
    states = [torch.zeros(B, n, dtype=torch.float64) for n in rnn._state_sizes()]
    batch = ft.Batch(np.full(T, B, np.int64), B, padded=False)
    kinds, weights = rnn._weights(0)
    y, *finals = ft._LayerDirection.apply(rnn.cell, getattr(rnn, "nonlinearity", None), batch,
                                          True, kinds, x, *states, *weights)
    node = y.grad_fn
    gen = torch.Generator().manual_seed(1)
    grads = [torch.randn(t.shape, dtype=torch.float64, generator=gen) for t in (y, *finals)]
    for missing in range(len(grads)):
        given = [None if k == missing else g for k, g in enumerate(grads)]
        zeros = [torch.zeros_like(g) if k == missing else g for k, g in enumerate(grads)]
        with torch.no_grad():
            got = ft._LayerDirection.backward(node, *given)
            expected = ft._LayerDirection.backward(node, *zeros)
        assert len(got) == len(expected)
        for k, (a, b) in enumerate(zip(got, expected)):
            assert (a is None) == (b is None), k
            if a is not None:
                assert torch.equal(a, b), (missing, k)


def test_backward_twice_with_retain_graph():
    torch.manual_seed(0)
    lstm = ft.LSTM(I, H).double()
    y, _ = lstm(torch.randn(T, B, I, dtype=torch.float64))
    y.sum().backward(retain_graph=True)
    once = lstm.weight_hh_l0.grad.clone()
    y.sum().backward()
    assert torch.allclose(lstm.weight_hh_l0.grad, 2 * once, rtol=1e-14, atol=0)


def test_the_kernels_get_the_tensors_memory(monkeypatch):
    """Zero-copy: the native forward and backward receive views of the parameters, the input
    and the states, not copies."""
    lstm = ft.LSTM(I, H, proj_size=2)
    x = torch.randn(T, B, I, requires_grad=True)
    hx = (torch.randn(1, B, 2), torch.randn(1, B, H))
    seen = {}

    def spy(name):
        real = getattr(fastlstm.native, name)

        def call(*args, **kwargs):
            seen[name] = args, kwargs
            return real(*args, **kwargs)
        monkeypatch.setattr(fastlstm.native, name, call)

    spy("lstm_forward")
    spy("lstm_backward")
    y, _ = lstm(x, hx)
    y.sum().backward()
    (xa, h0, c0), kwargs = seen["lstm_forward"]
    pairs = [(xa, x), (h0, hx[0]), (c0, hx[1]), (kwargs["w_ih"], lstm.weight_ih_l0),
             (kwargs["w_hh"], lstm.weight_hh_l0), (kwargs["b_ih"], lstm.bias_ih_l0),
             (kwargs["b_hh"], lstm.bias_hh_l0), (kwargs["w_hr"], lstm.weight_hr_l0)]
    for array, tensor in pairs:
        assert np.shares_memory(array, tensor.detach().numpy())
    saved = seen["lstm_backward"][0][0]
    assert np.shares_memory(saved.x, x.detach().numpy())
    assert np.shares_memory(saved.w_hh, lstm.weight_hh_l0.detach().numpy())


# ---------------------------------------------------------------- errors


def gradient_penalty(module, x):
    """The gradient-penalty pattern: the gradient of the output with respect to x, kept as a
    graph (create_graph=True) to be differentiated again in the loss."""
    out = module(x)[0]
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return out.sum() + g.square().sum()


@pytest.mark.parametrize("kind", KINDS)
def test_double_backward_is_refused(kind):
    """Every create_graph=True through a layer raises fastlstm's error (its backward is not
    differentiable), never gradients without their second-order terms: here, whether or not
    the incoming gradient requires grad (out.sum()'s does not), and with respect to the input,
    the parameters or the initial states."""
    torch.manual_seed(0)
    rnn = ft.convert(make_rnn(kind))
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="cannot differentiate twice.*create_graph=True"):
        gradient_penalty(rnn, x)
    out = rnn(x)[0].square().sum()        # an incoming gradient that requires grad
    with pytest.raises(RuntimeError, match="cannot differentiate twice"):
        torch.autograd.grad(out, x, create_graph=True)
    out = rnn(x.detach())[0].sum()
    with pytest.raises(RuntimeError, match="cannot differentiate twice"):
        torch.autograd.grad(out, list(rnn.parameters()), create_graph=True)
    hx = states_of(kind, rnn, B, torch.float64, torch.Generator().manual_seed(0))
    finals = rnn(x.detach(), hx)[1]
    with pytest.raises(RuntimeError, match="cannot differentiate twice"):
        torch.autograd.grad(as_tuple(finals)[0].sum(), as_tuple(hx), create_graph=True)


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_activation_checkpointing_matches_torch(use_reentrant):
    """torch.utils.checkpoint runs the forward again inside the backward, with grad enabled,
    and backpropagates through it without create_graph: not a double backward, and not
    refused."""
    torch.manual_seed(0)
    rnn = make_rnn("lstmp", num_layers=2)
    ours = ft.convert(copy.deepcopy(rnn))
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    for module in (rnn, ours):
        y = torch.utils.checkpoint.checkpoint(lambda t: module(t)[0], x,
                                              use_reentrant=use_reentrant)
        y.square().sum().backward()
    for name, p in rnn.named_parameters():
        assert_close(getattr(ours, name).grad.numpy(), p.grad.numpy(), TOLS[torch.float64], name)


def test_gradgradcheck_is_refused():
    torch.manual_seed(0)
    gru = ft.GRU(I, H).double()
    x = torch.randn(2, 1, I, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="cannot differentiate twice"):
        torch.autograd.gradgradcheck(lambda x: gru(x)[0], (x,))


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_can_be_changed_in_place(kind):
    """As torch.nn's GRU and RNN allow (its float32 LSTM does not): y and h_n changed in place
    before the backward, which sees the changed values' gradients."""
    torch.manual_seed(0)
    rnn = make_rnn(kind)
    ours = ft.convert(copy.deepcopy(rnn))
    x = torch.randn(T, B, I, dtype=torch.float64)
    for module in (rnn, ours):
        y, finals = module(x)
        y.mul_(2)
        as_tuple(finals)[0].add_(1)
        (y.square().sum() + as_tuple(finals)[0].square().sum()).backward()
    for name, p in rnn.named_parameters():
        assert_close(getattr(ours, name).grad.numpy(), p.grad.numpy(), TOLS[torch.float64], name)


def test_changing_a_weight_in_place_before_backward_is_refused():
    gru = ft.GRU(I, H)
    y, _ = gru(torch.randn(T, B, I))
    with torch.no_grad():
        gru.weight_hh_l0.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_tensors_not_on_the_cpu_are_refused():
    """There is no GPU here: tensors on the meta device stand in for CUDA ones."""
    lstm = ft.LSTM(I, H)
    with pytest.raises(ValueError, match="input is on meta.*runs on the CPU"):
        lstm(torch.empty(T, B, I, device="meta"))
    with pytest.raises(ValueError, match=r"hx\[1\] is on meta"):
        lstm(torch.randn(T, B, I), (torch.zeros(1, B, H), torch.empty(1, B, H, device="meta")))
    lstm.to("meta")
    with pytest.raises(ValueError, match="parameters are on meta"):
        lstm(torch.randn(T, B, I))
    with pytest.raises(ValueError, match="cannot convert rnn: .*parameters are on meta"):
        ft.convert(torch.nn.ModuleDict({"rnn": torch.nn.GRU(I, H, device="meta")}))


def test_unsupported_dtypes_are_refused():
    with pytest.raises(TypeError, match="runs float32 and float64.*torch.float16"):
        ft.GRU(I, H).half()(torch.randn(T, B, I).half())
    with pytest.raises(TypeError, match="input must have dtype torch.float64.*got torch.float32"):
        ft.GRU(I, H).double()(torch.randn(T, B, I))
    model = torch.nn.Sequential(torch.nn.LSTM(I, H).bfloat16())
    with pytest.raises(TypeError, match="cannot convert 0: .*bfloat16"):
        ft.convert(model)
    assert type(model[0]) is torch.nn.LSTM       # nothing was changed
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        ft.convert("lstm")


@pytest.mark.parametrize("bad, error, match", [
    (lambda: torch.randn(T, B, I + 1), ValueError, r"input must be 3-D .*got shape \(6, 4, 4\)"),
    (lambda: torch.randn(1, T, B, I), ValueError, "input must be 3-D"),
    (lambda: np.zeros((T, B, I), np.float32), TypeError, "input must be a torch.Tensor"),
    (lambda: torch.randn(T, B, I).to_sparse(), TypeError, "input must be a dense"),
])
def test_bad_input(bad, error, match):
    with pytest.raises(error, match=match):
        ft.LSTM(I, H)(bad())


def packed(data_rows=3, batch_sizes=(2, 1), sorted_indices=(0, 1), unsorted_indices=(0, 1)):
    """A PackedSequence built field by field, as a caller could get wrong."""
    def tensor(v):
        return v if v is None or isinstance(v, torch.Tensor) else torch.tensor(v)
    return torch.nn.utils.rnn.PackedSequence(torch.randn(data_rows, I), tensor(batch_sizes),
                                             tensor(sorted_indices), tensor(unsorted_indices))


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("bad, error, match", [
    (dict(sorted_indices=(0, 1, 0), unsorted_indices=(0, 1, 0)), ValueError,
     r"input.sorted_indices must be a permutation of the 2 sequences, got a tensor \[0, 1, 0\]"),
    (dict(sorted_indices=(1, 1)), ValueError, "input.sorted_indices must be a permutation"),
    (dict(sorted_indices=(1, 0)), ValueError, "unsorted_indices must be the inverse"),
    (dict(batch_sizes=(1, 2)), ValueError, r"non-increasing.*got \[1, 2\]"),
    (dict(batch_sizes=(2, 2)), ValueError, r"summing to the 3 rows of input.data"),
    (dict(data_rows=0, batch_sizes=torch.zeros(0, dtype=torch.int64)), ValueError,
     r"input.batch_sizes must be positive.*got \[\]"),
    (dict(batch_sizes=(3, 0)), ValueError, "must be positive"),
    (dict(batch_sizes=((2, 1),)), TypeError, "input.batch_sizes must be a 1-D int64"),
    (dict(batch_sizes=(2.0, 1.0)), TypeError, "input.batch_sizes must be a 1-D int64"),
])
def test_bad_packed_sequence(bad, error, match, bidirectional):
    gru = ft.GRU(I, H, bidirectional=bidirectional)
    for hx in (None, torch.zeros(2 if bidirectional else 1, 2, H)):
        with pytest.raises(error, match=match):
            gru(packed(**bad), hx)


def test_bad_states():
    lstm, gru, x = ft.LSTM(I, H, num_layers=2), ft.GRU(I, H), torch.randn(T, B, I)
    with pytest.raises(TypeError, match=r"hx must be a tuple \(h_0, c_0\)"):
        lstm(x, torch.zeros(2, B, H))
    with pytest.raises(ValueError, match=r"hx\[1\] must have shape \(2, 4, 5\)"):
        lstm(x, (torch.zeros(2, B, H), torch.zeros(1, B, H)))
    with pytest.raises(ValueError, match=r"hx must have shape \(1, 5\) .*got \(1, 4, 5\)"):
        gru(torch.randn(T, I), torch.zeros(1, B, H))       # unbatched input, batched state
    with pytest.raises(TypeError, match="hx must be a torch.Tensor"):
        gru(x, np.zeros((1, B, H), np.float32))


# ---------------------------------------------------------------- threads


def test_openmp_runtimes_beside_torch(restore_threads):
    """A source build links libgomp under torch's soname, so the process loads one runtime and
    fastlstm's parallel regions reuse the threads torch's have started. A wheel carries its own
    copy (auditwheel's, in fastlstm.libs): then it is a second runtime. Either way, torch and
    fastlstm taking turns start no threads after their first parallel regions."""
    torch.set_num_threads(2)
    fastlstm.set_num_threads(2)
    try:
        lstm = ft.LSTM(8, 16, num_layers=2)

        def both():
            torch.ones(1 << 20).add_(1)              # an OpenMP-parallel torch op
            lstm(torch.randn(10, 8, 8))[0].sum().backward()
        both()
        threads = len(os.listdir("/proc/self/task"))
        for _ in range(3):
            both()
        assert len(os.listdir("/proc/self/task")) == threads
        runtimes = {line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line}
        fastlstms = {r for r in runtimes if "fastlstm.libs" in r}
        assert len(runtimes) == 1 + len(fastlstms) and len(fastlstms) <= 1, runtimes
    finally:
        torch.set_num_threads(1)


def test_threads_running_models_at_once():
    """Python threads training their own converted models concurrently, with torch's and
    fastlstm's OpenMP on two threads each: no deadlock (the run has a time limit) and the same
    results as one after the other. In a subprocess, so that a hang cannot stall the suite."""
    code = """
import copy, threading, torch, fastlstm, fastlstm.torch as ft
torch.set_num_threads(2); fastlstm.set_num_threads(2)
torch.manual_seed(0)
rnns = [ft.convert(cls(8, 16, num_layers=2, dtype=torch.float64))
        for cls in (torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN, torch.nn.LSTM)]
x = torch.randn(20, 6, 8, dtype=torch.float64)

def train(rnn):
    opt = torch.optim.SGD(rnn.parameters(), lr=0.01)
    for _ in range(20):
        opt.zero_grad()
        rnn(x)[0].square().mean().backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in rnn.parameters()])

start = [copy.deepcopy(r) for r in rnns]
sequential = [train(copy.deepcopy(r)) for r in start]
results = [None] * 4
threads = [threading.Thread(target=lambda k=k: results.__setitem__(k, train(start[k])))
           for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
assert all(torch.equal(a, b) for a, b in zip(results, sequential))
print("ok")
"""
    result = run_python(["-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_fastlstm_import_does_not_import_torch():
    code = "import sys, fastlstm; print('torch' in sys.modules)"
    result = run_python(["-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_bench_measures_models_before_and_after_convert():
    from fastlstm import bench
    lines = []
    rows = bench.run(sections=["convert"], repeat=1, bar=False, out=lines.append,
                     convert_cases=[("gru", 3, 2, 4), ("lstmp", 2, 1, 4)])["rows"]
    assert [(r["cell"], r["T"]) for r in rows] == [("gru", 3), ("lstmp", 2)]
    assert all(r["torch.nn"] > 0 and r["fastlstm.torch"] > 0 for r in rows)
    assert any("fastlstm.torch.convert()" in line for line in lines)
    assert sum(line.startswith(("GRU", "LSTMP")) and line.endswith("x") for line in lines) == 2


def test_a_weight_set_by_a_forward_pre_hook_is_read_where_the_hook_put_it():
    """torch.nn.utils.weight_norm (and WeightDrop-style regularisers) take a weight out of the
    module's parameters and set it as an attribute before each forward: the converted module
    reads it there, as torch.nn's forward does."""
    torch.manual_seed(0)
    with pytest.warns(FutureWarning):
        lstm = torch.nn.utils.weight_norm(torch.nn.LSTM(I, H).double(), "weight_hh_l0")
    x = torch.randn(T, B, I, dtype=torch.float64)
    expected = lstm(x)[0]
    ft.convert(lstm)
    assert_close(lstm(x)[0].detach().numpy(), expected.detach().numpy(), TOLS[torch.float64])
