"""fastlstm.torch as a drop-in for torch.nn.RNN, LSTM and GRU: our own compatibility suite.

Written from torch.nn's documented behaviour, with torch.nn itself as the oracle: each test runs
a torch.nn module and its fastlstm.torch twin (same class, same weights) side by side and
compares what a caller can see. Outputs and gradients agree to test_torch.py's tolerances (1e-5
in float32, 1e-10 in float64, relative to max(1, |value|)); bad input raises an exception that is
an instance of the type torch.nn raises, so that a caller's ``except`` catches it either way.

Where fastlstm.torch differs on purpose, the test says so and checks fastlstm's side: a sequence
of length 0 (torch refuses it, fastlstm returns the initial states), dtypes other than float32
and float64, double backward (refused), and arguments that torch.nn does not check at all (its
error is then whatever its internals happen to raise).
"""
import pytest

torch = pytest.importorskip("torch")
ft = pytest.importorskip("fastlstm.torch")
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN"),
    pytest.mark.usefixtures("torch_and_fastlstm_on_one_thread"),
]

KINDS = ("rnn_tanh", "rnn_relu", "gru", "lstm", "lstmp")
I, H, T, B = 3, 4, 5, 3


def twins(kind, dtype=torch.float32, **options):
    """A torch.nn module of ``kind`` ("lstmp": projected to H // 2) and its fastlstm.torch
    twin holding the same weights."""
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[kind[:4].rstrip("p_")]
    if kind.startswith("rnn_"):
        options["nonlinearity"] = kind[4:]
    if kind == "lstmp":
        options["proj_size"] = H // 2
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
