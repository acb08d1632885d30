"""fastlstm.torch as a drop-in for torch.nn.RNN, LSTM and GRU: our own compatibility suite.

Written from torch.nn's documented behaviour, with torch.nn itself as the oracle: each test runs
a torch.nn module and its fastlstm.torch twin (same class, same weights) side by side and
compares what a caller can see. Outputs and gradients agree to test_torch.py's tolerances (1e-5
in float32, 1e-10 in float64, relative to max(1, |value|)); bad input raises an exception that is
an instance of the type torch.nn raises, so that a caller's ``except`` catches it either way.

Where fastlstm.torch differs on purpose, the test says so and checks fastlstm's side: a sequence
of length 0 (torch refuses it, fastlstm returns the initial states), dtypes other than float32
and float64, and arguments that torch.nn does not check at all (its error is then whatever its
internals happen to raise). Double backward, which fastlstm.torch refuses, is tested in
test_torch_bridge.py, with the bridge's own workings (zero-copy, saved tensors, threads).
"""
import copy
import io
import itertools
import pickle

import pytest
from helpers import assert_close

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastlstm.torch")
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN"),
    pytest.mark.usefixtures("torch_and_fastlstm_on_one_thread"),
]

KINDS = ("rnn_tanh", "rnn_relu", "gru", "lstm", "lstmp")
I, H, T, B = 3, 4, 5, 3


def constructor(kind, **options):
    """The torch.nn class of ``kind``, its fastlstm.torch twin, and the keyword arguments that
    build it ("rnn_relu": nonlinearity="relu"; "lstmp": an LSTM projected to H // 2)."""
    base = kind.split("_")[0].rstrip("p")
    theirs, ours = {"rnn": (torch.nn.RNN, ft.RNN), "gru": (torch.nn.GRU, ft.GRU),
                    "lstm": (torch.nn.LSTM, ft.LSTM)}[base]
    if base == "rnn":
        options["nonlinearity"] = kind.split("_")[1]
    if kind == "lstmp":
        options["proj_size"] = H // 2
    return theirs, ours, options


def twins(kind, dtype=torch.float32, **options):
    """A torch.nn module of ``kind`` and a converted copy (fastlstm.torch.convert) holding the
    same weights."""
    cls, _, options = constructor(kind, **options)
    theirs = cls(I, H, dtype=dtype, **options)
    ours = ft.convert(cls(I, H, dtype=dtype, **options))
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def states(module, batch, dtype=None, rows=None, width=None, layers=None):
    """hx for ``module``: zeros of the right shapes for ``batch`` sequences (None: unbatched),
    or with one thing changed (rows of the batch, width of h, number of layer-directions)."""
    D = 2 if module.bidirectional else 1
    LD = layers if layers is not None else module.num_layers * D
    dtype = dtype or module.weight_hh_l0.dtype
    h_size = width if width is not None else module.proj_size or module.hidden_size
    lead = (LD,) if batch is None else (LD, rows if rows is not None else batch)
    h = torch.zeros(*lead, h_size, dtype=dtype)
    if isinstance(module, torch.nn.LSTM):
        return h, torch.zeros(*lead, module.hidden_size, dtype=dtype)
    return h


# ---------------------------------------------------------------- exceptions on bad input

def bad_c(module):
    """LSTM hx whose c has the wrong hidden size."""
    h, c = states(module, B)
    return h, torch.zeros(*c.shape[:-1], c.shape[-1] + 1)


def packed(x, lengths=(T, T - 1, 2)):
    return pack_padded_sequence(x, torch.tensor(lengths))


# (name, kinds it applies to, the call's arguments for a float32 module of input_size I)
BAD_CALLS = [
    ("input of the wrong input_size", KINDS, lambda m: (torch.randn(T, B, I + 1),)),
    ("4-D input", KINDS, lambda m: (torch.randn(1, T, B, I),)),
    ("1-D input", KINDS, lambda m: (torch.randn(I),)),
    ("0-D input", KINDS, lambda m: (torch.tensor(1.0),)),
    ("float64 input", KINDS, lambda m: (torch.randn(T, B, I, dtype=torch.float64),)),
    ("int64 input", KINDS, lambda m: (torch.ones(T, B, I, dtype=torch.int64),)),
    ("hx of the wrong batch", KINDS, lambda m: (torch.randn(T, B, I), states(m, B, rows=B + 1))),
    ("hx of the wrong layers", KINDS, lambda m: (torch.randn(T, B, I), states(m, B, layers=2))),
    ("hx of the wrong width", KINDS, lambda m: (torch.randn(T, B, I), states(m, B, width=H + 1))),
    ("2-D hx, batched input", KINDS, lambda m: (torch.randn(T, B, I), states(m, None))),
    ("3-D hx, unbatched input", KINDS, lambda m: (torch.randn(T, I), states(m, 1))),
    ("float64 hx", KINDS, lambda m: (torch.randn(T, B, I), states(m, B, torch.float64))),
    ("c of the wrong width", ("lstm", "lstmp"), lambda m: (torch.randn(T, B, I), bad_c(m))),
    ("float64 c", ("lstm", "lstmp"),
     lambda m: (torch.randn(T, B, I), (states(m, B)[0], states(m, B, torch.float64)[1]))),
    ("hx of three states", ("lstm", "lstmp"),
     lambda m: (torch.randn(T, B, I), states(m, B) + states(m, B)[:1])),
    ("packed input of the wrong input_size", KINDS, lambda m: (packed(torch.randn(T, B, I + 1)),)),
    ("packed float64 input", KINDS, lambda m: (packed(torch.randn(T, B, I, dtype=torch.float64)),)),
    ("packed input, hx of the wrong batch", KINDS,
     lambda m: (packed(torch.randn(T, B, I)), states(m, B, rows=B + 1))),
    ("input on another device", KINDS, lambda m: (torch.empty(T, B, I, device="meta"),)),
    ("sparse input", KINDS, lambda m: (torch.randn(T, B, I).to_sparse(),)),
]


def raised(module, args):
    with pytest.raises(Exception) as info:
        module(*args)
    return info.value


@pytest.mark.parametrize("name, kind, call", [
    pytest.param(name, kind, call, id=f"{name}-{kind}")
    for name, kinds, call in BAD_CALLS for kind in kinds])
def test_bad_input_raises_torchs_exception_type(name, kind, call):
    """Whatever torch.nn raises for the mistake, fastlstm.torch's exception is an instance of
    it, and still the ValueError (shapes, devices) or TypeError (dtypes, kinds of argument) of
    fastlstm's own contract, with a message naming the argument."""
    theirs, ours = twins(kind)
    torch.manual_seed(0)
    args = call(theirs)
    expected = raised(theirs, args)
    got = raised(ours, args)
    assert isinstance(got, type(expected)), (
        f"{name}: torch.nn raises {type(expected).__name__}: {expected}; fastlstm.torch "
        f"raises {type(got).__name__}: {got}")
    assert isinstance(got, (ValueError, TypeError))
    assert any(arg in str(got) for arg in ("input", "hx")), got


@pytest.mark.parametrize("kind", KINDS)
def test_arguments_torch_does_not_check_get_fastlstms_errors(kind):
    """torch.nn does not check these; what it raises is an accident of its internals (an
    AttributeError or IndexError), which no caller catches on purpose. fastlstm.torch raises its
    documented TypeError naming the argument."""
    theirs, ours = twins(kind)
    x = torch.randn(T, B, I)
    cases = [((x.numpy(),), "input must be a torch.Tensor")]
    if kind.startswith("lstm"):
        cases.append(((x, states(theirs, B)[0]), r"hx must be a tuple \(h_0, c_0\)"))
    else:
        cases.append(((x, (states(theirs, B),)), "hx must be a torch.Tensor"))
    for args, match in cases:
        assert isinstance(raised(theirs, args), (AttributeError, IndexError))
        with pytest.raises(TypeError, match=match):
            ours(*args)


@pytest.mark.parametrize("kind", KINDS)
def test_a_sequence_of_no_steps_returns_the_initial_states(kind):
    """The documented difference: torch.nn refuses T=0 (RuntimeError); fastlstm.torch returns
    an empty output and the initial states as the final ones, batched or not."""
    theirs, ours = twins(kind)
    for x, hx in ((torch.zeros(0, B, I), states(theirs, B)), (torch.zeros(0, I),
                                                              states(theirs, None))):
        hx = tuple(torch.randn_like(s) for s in as_tuple(hx))
        with pytest.raises(RuntimeError, match="sequence length"):
            theirs(x, unpack(hx))
        y, finals = ours(x, unpack(hx))
        assert y.shape == (0, *x.shape[1:-1], theirs.proj_size or H)
        for got, h0 in zip(as_tuple(finals), hx, strict=True):
            assert torch.equal(got, h0)


def as_tuple(states):
    return states if isinstance(states, tuple) else (states,)


def unpack(states):
    """A tuple of states as a module takes them: the pair for the LSTM, else its one tensor."""
    return states if len(states) == 2 else states[0]


# ---------------------------------------------------------------- outputs and gradients

def covering(factors, strength):
    """Rows (dicts) in which every combination of values of every ``strength`` factors occurs
    at least once: a greedy covering array. Deterministic: each row starts from the first
    combination not yet covered (in the factors' order) and takes for every other factor, in
    order, the value completing the most uncovered combinations (the first such on a tie)."""
    names = list(factors)
    uncovered = [tuple(zip(group, values)) for group in itertools.combinations(names, strength)
                 for values in itertools.product(*(factors[n] for n in group))]
    rows = []
    while uncovered:
        row = dict(uncovered[0])
        for name in names:
            if name not in row:
                def completes(value):
                    trial = {**row, name: value}
                    return sum(any(n == name for n, _ in combo) and
                               all(n in trial and trial[n] == v for n, v in combo)
                               for combo in uncovered)
                row[name] = max(factors[name], key=completes)
        rows.append({name: row[name] for name in names})
        uncovered = [c for c in uncovered if not all(row[n] == v for n, v in c)]
    return rows


# Every option of torch.nn's recurrent modules and every form of their input, every three of
# them in every combination of their values (70 cases, where the full product has 15,360): a bug
# that needs one option, or the meeting of two or three, shows in one of them. "layers": one,
# two, or two with dropout between them; "form": padded, packed (lengths sorted, or not: torch
# then permutes the states), or one unbatched sequence; "hx": initial states given (requiring
# grad) or zeros; "autograd": a forward and backward, or a forward under no_grad (the kernels'
# inference forward).
GRID_FACTORS = {
    "kind": KINDS,
    "form": ("padded", "packed", "packed-unsorted", "unbatched"),
    "layers": ("1", "2", "2+dropout"),
    "bidirectional": (False, True),
    "batch_first": (False, True),
    "bias": (True, False),
    "hx": (False, True),
    "dtype": (torch.float32, torch.float64),
    "mode": ("train", "eval"),
    "autograd": ("backward", "no_grad"),
}
GRID = covering(GRID_FACTORS, strength=3)
LENGTHS = {"packed": [T, T - 1, 2], "packed-unsorted": [2, T, T - 2]}
TOLS = {torch.float32: 1e-5, torch.float64: 1e-10}     # test_torch.py's, for its reasons


def case_id(case):
    return "-".join(str(v).replace("torch.", "") if not isinstance(v, bool) else
                    (k if v else f"no_{k}") for k, v in case.items())


def test_the_grid_covers_every_three_options():
    for group in itertools.combinations(GRID_FACTORS, 3):
        seen = {tuple(row[n] for n in group) for row in GRID}
        assert seen == set(itertools.product(*(GRID_FACTORS[n] for n in group))), group


def forward(module, case, x, hx):
    """Run ``module`` on the case's input; returns its outputs (the packed output's fields
    apart) and, after a backward of a loss reading all of them, its gradients by name."""
    module.zero_grad()
    x = x.clone().requires_grad_()
    hx = None if hx is None else tuple(s.clone().requires_grad_() for s in hx)
    inp = x
    if case["form"] in LENGTHS:
        lengths = LENGTHS[case["form"]]
        inp = pack_padded_sequence(x, torch.tensor(lengths), batch_first=case["batch_first"],
                                   enforce_sorted=lengths == sorted(lengths, reverse=True))
    torch.manual_seed(2)                 # the dropout masks: drawn alike by both modules
    with torch.set_grad_enabled(case["autograd"] == "backward"):
        out, finals = module(inp, None if hx is None else unpack(hx))
    if isinstance(out, PackedSequence):
        outputs = {"output.data": out.data, "output.batch_sizes": out.batch_sizes,
                   "output.sorted_indices": out.sorted_indices,
                   "output.unsorted_indices": out.unsorted_indices}
    else:
        outputs = {"output": out}
    outputs.update(zip(("h_n", "c_n"), as_tuple(finals)))
    grads = {}
    if case["autograd"] == "backward":
        gen = torch.Generator().manual_seed(3)
        loss = sum((t * torch.randn(t.shape, dtype=t.dtype, generator=gen)).sum()
                   for t in outputs.values() if t is not None and t.is_floating_point())
        loss.backward()
        grads = {name: p.grad for name, p in module.named_parameters()}
        grads["input"] = x.grad
        grads.update((f"hx[{k}]", s.grad) for k, s in enumerate(hx or ()))
    return outputs, grads


@pytest.mark.parametrize("case", GRID, ids=case_id)
def test_outputs_and_gradients_match_torch(case):
    layers = {"1": dict(num_layers=1), "2": dict(num_layers=2),
              "2+dropout": dict(num_layers=2, dropout=0.5)}[case["layers"]]
    dtype = case["dtype"]
    torch.manual_seed(len(case_id(case)))
    theirs, ours = twins(case["kind"], dtype, bidirectional=case["bidirectional"],
                         batch_first=case["batch_first"], bias=case["bias"], **layers)
    for module in (theirs, ours):
        module.train(case["mode"] == "train")
    gen = torch.Generator().manual_seed(1)
    unbatched = case["form"] == "unbatched"
    shape = (T, I) if unbatched else (B, T, I) if case["batch_first"] else (T, B, I)
    x = torch.randn(*shape, dtype=dtype, generator=gen)
    hx = None
    if case["hx"]:
        hx = tuple(torch.randn(s.shape, dtype=dtype, generator=gen)
                   for s in as_tuple(states(theirs, None if unbatched else B)))
    expected, expected_grads = forward(theirs, case, x, hx)
    got, grads = forward(ours, case, x, hx)
    tol = TOLS[dtype]
    assert got.keys() == expected.keys()
    for name, e in expected.items():
        a = got[name]
        if e is None or not e.is_floating_point():       # the packed output's orderings
            assert (a is None and e is None) or torch.equal(a, e), name
            continue
        assert (a.shape, a.dtype, a.requires_grad) == (e.shape, e.dtype, e.requires_grad), name
        assert_close(a.detach().numpy(), e.detach().numpy(), tol, name)
    assert grads.keys() == expected_grads.keys()
    for name, e in expected_grads.items():
        assert grads[name] is not None and grads[name].dtype == e.dtype, name
        assert_close(grads[name].numpy(), e.numpy(), tol, name)


# ---------------------------------------------------------------- the module around the forward

# Constructor options of every kind, for the tests of the module's API.
MODULE_OPTIONS = [dict(), dict(num_layers=2, bidirectional=True, batch_first=True),
                  dict(bias=False, num_layers=2, dropout=0.25)]


def module_cases():
    return [pytest.param(kind, options, id=f"{kind}-{k}") for kind in KINDS
            for k, options in enumerate(MODULE_OPTIONS)]


def built_alike(kind, **options):
    """The torch.nn module of ``kind`` and its fastlstm.torch class, built from the same seed:
    the constructor, torch's own, draws the same initial weights for both."""
    theirs_cls, ours_cls, options = constructor(kind, **options)
    torch.manual_seed(5)
    theirs = theirs_cls(I, H, **options)
    torch.manual_seed(5)
    return theirs, ours_cls(I, H, **options)


def assert_same_forward(ours, theirs, dtype=torch.float32):
    """The two modules in eval mode on one input: the same outputs (to the dtype's tolerance)."""
    x = torch.randn(B, T, I) if theirs.batch_first else torch.randn(T, B, I)
    x = x.to(dtype)
    with torch.no_grad():
        a, b = ours.eval()(x), theirs.eval()(x)
    for got, expected in zip((a[0], *as_tuple(a[1])), (b[0], *as_tuple(b[1])), strict=True):
        assert got.dtype == expected.dtype == dtype
        assert_close(got.numpy(), expected.numpy(), TOLS[dtype])


@pytest.mark.parametrize("kind, options", module_cases())
def test_construction_and_state_dict_are_torchs(kind, options):
    """The same constructor draws the same initial weights; state_dict has torch's names,
    shapes, dtypes and values, and each module loads the other's (strict)."""
    theirs, ours = built_alike(kind, **options)
    expected, got = theirs.state_dict(), ours.state_dict()
    assert list(got) == list(expected)
    for name, value in expected.items():
        assert got[name].dtype == value.dtype and torch.equal(got[name], value), name
    assert [type(p) for p in ours.parameters()] == [torch.nn.Parameter] * len(expected)
    gen = torch.Generator().manual_seed(6)
    other = {name: torch.randn(v.shape, generator=gen) for name, v in expected.items()}
    assert not ours.load_state_dict(other).missing_keys
    theirs.load_state_dict(other)
    assert_same_forward(ours, theirs)
    theirs.load_state_dict({name: -v for name, v in other.items()})
    ours.load_state_dict(theirs.state_dict())
    assert_same_forward(ours, theirs)


@pytest.mark.parametrize("kind, options", module_cases())
def test_repr_is_torchs(kind, options):
    theirs, ours = built_alike(kind, **options)
    assert repr(ours) == repr(theirs)
    assert str(ours) == str(theirs) and ours.extra_repr() == theirs.extra_repr()


@pytest.mark.parametrize("kind, options", module_cases())
def test_pickling_and_copying_keep_the_class_and_the_weights(kind, options):
    """pickle, copy.deepcopy and torch.save / torch.load (a whole module needs
    weights_only=False) give a fastlstm.torch module of the same class and weights."""
    theirs, ours = built_alike(kind, **options)
    buffer = io.BytesIO()
    torch.save(ours, buffer)
    buffer.seek(0)
    copies = [pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours),
              torch.load(buffer, weights_only=False)]
    for clone in copies:
        assert type(clone) is type(ours) and clone is not ours
        for name, value in ours.state_dict().items():
            assert torch.equal(clone.state_dict()[name], value), name
        assert_same_forward(clone, theirs)


@pytest.mark.parametrize("kind, options", module_cases())
def test_to_dtype_as_torch(kind, options):
    """.to(torch.float64), .double() and .float() convert the parameters in place, as torch.nn
    does (the same Parameter objects), and the module then runs in that dtype."""
    theirs, ours = built_alike(kind, **options)
    first = [p for p in ours.parameters()]
    for convert, dtype in ((lambda m: m.to(torch.float64), torch.float64),
                           (lambda m: m.float(), torch.float32),
                           (lambda m: m.double(), torch.float64),
                           (lambda m: m.to(dtype=torch.float32), torch.float32)):
        assert convert(ours) is ours
        convert(theirs)
        assert all(p.dtype == dtype for p in ours.parameters())
        assert [p for p in ours.parameters()] == first
        assert_same_forward(ours, theirs, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_other_dtypes_are_refused_where_torch_runs_them(dtype):
    """The documented limit: torch.nn runs float16 and bfloat16 on the CPU; fastlstm.torch
    refuses them with a TypeError naming the dtype and the way out."""
    theirs, ours = twins("lstm")
    x = torch.randn(T, B, I, dtype=dtype)
    theirs.to(dtype)(x)
    with pytest.raises(TypeError, match=f"runs float32 and float64, but this LSTM's parameters "
                                        f"are {dtype}; convert the model with .float"):
        ours.to(dtype)(x)
