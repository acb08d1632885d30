"""Property-based tests (hypothesis): the native backend against the reference on drawn problems.

Hypothesis draws the structure of each problem: the cell (Elman tanh or relu, LSTM with or without
projection and peepholes, GRU), the layer's options (num_layers 1 or 2, bidirectional, bias,
batch_first), the sizes (T from 0, B, I and H from 1), float32 or float64, per-sequence lengths or
none, states and output gradients given or left out, and the memory layout of every array handed
in: C order, Fortran order, a view of every other element, or negative strides. The values come
from a NumPy generator seeded with a drawn seed (standard normal, weights scaled by 0.5), as in
test_native_vs_reference.py, whose tolerances apply unchanged (tests/helpers.py): float64 to 1e-10
relative, float32 within 8x the float32 reference's own error against a float64 run plus 1e-6,
and at most 1e-4. Strided views are cut out of arrays filled with NaN, so a backend that read the
gaps instead of the elements would return NaN.

Bad input is fuzzed in a child process (tests/fuzz_bad_inputs.py, whose docstring says what it
checks), so that a crash would end the child, not the test run: the test asserts that it exited
normally and that every property ran.

The examples are the same on every run (derandomize, no example database), so CI is
deterministic; ``pytest --hypothesis-show-statistics tests/test_fuzz.py`` counts them, and the
child prints its own counts.
"""
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import (DTYPES, KINDS, TOL64, as64_tree, assert_close, assert_f32_like_reference,
                     assert_functional_matches, compare_layer_runs, layer_problem, make_layer,
                     projects, random_weights, run_functional, run_layer, run_python,
                     state_sizes)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow])

LAYOUTS = ("C", "F", "every other", "reversed")


def relayout(a, layout, axis):
    """``a``'s values in another memory layout: C order (``a`` itself), Fortran order, a view of
    every other element along ``axis`` (the gaps NaN), or a view with negative strides along
    ``axis``. None stays None."""
    if a is None or layout == "C":
        return a
    if layout == "F":
        return np.asfortranarray(a)
    axis %= a.ndim
    if layout == "every other":
        shape = list(a.shape)
        shape[axis] *= 2
        view = np.full(shape, np.nan, a.dtype)[(slice(None),) * axis + (slice(1, None, 2),)]
        view[...] = a
        return view
    return np.flip(np.flip(a, axis).copy(), axis)


layouts = st.tuples(st.sampled_from(LAYOUTS), st.integers(0, 2))


@st.composite
def layer_cases(draw, kind):
    """A layer's constructor arguments and a problem for it: everything but the values."""
    T, B, I = draw(st.integers(0, 5)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    H = draw(st.integers(2 if projects(kind) else 1, 5))   # proj_size < hidden_size
    options = dict(num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                   bias=draw(st.booleans()), batch_first=draw(st.booleans()),
                   dtype=draw(st.sampled_from(DTYPES)))
    lengths = draw(st.none() | st.lists(st.integers(0, T), min_size=B, max_size=B))
    given = dict(states=draw(st.booleans()), dstates=draw(st.booleans()))
    lays = draw(st.lists(layouts, min_size=6, max_size=6))
    return T, B, I, H, options, lengths, given, lays, draw(st.integers(0, 2**32 - 1))


@pytest.mark.parametrize("kind", KINDS)
@settings(FUZZ, max_examples=40)
@given(data=st.data())
def test_layer_native_matches_reference(kind, data):
    T, B, I, H, options, lengths, given, lays, seed = data.draw(layer_cases(kind))
    event(f"{'no lengths' if lengths is None else 'lengths'}, x in {lays[0][0]} layout")
    nat, ref = (make_layer(kind, I, H, backend=backend, seed=seed, **options)
                for backend in ("native", "reference"))
    x, states, dy, dstates = layer_problem(np.random.default_rng(seed), nat, T, B)
    x, dy = relayout(x, *lays[0]), relayout(dy, *lays[1])
    states = tuple(relayout(s, *lay) for s, lay in zip(states, lays[2:4])) \
        if given["states"] else None
    dstates = tuple(relayout(s, *lay) for s, lay in zip(dstates, lays[4:6])) \
        if given["dstates"] else None
    problem = (x, states, dy, dstates, lengths)
    runs = [run_layer(nat, *problem), run_layer(ref, *problem)]
    if nat.dtype == np.float64:
        compare_layer_runs(*runs, check=lambda name, a, b: assert_close(a, b, TOL64, name))
    else:
        truth = make_layer(kind, I, H, backend="reference", **{**options, "dtype": np.float64})
        truth.load_state_dict(nat.state_dict())
        runs.append(run_layer(truth, *as64_tree((x, states, dy, dstates)), lengths))
        compare_layer_runs(*runs, check=assert_f32_like_reference)


@st.composite
def functional_cases(draw):
    """A call of one backend function: padded, or packed (sequences of drawn lengths, sorted
    longest first, sometimes followed by a step that runs none of them); each state and state
    gradient given or None, dy given or None."""
    T, B, I = draw(st.integers(0, 5)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    H = draw(st.integers(1, 5))
    lengths = draw(st.none() | st.lists(st.integers(0, T), min_size=B, max_size=B))
    if lengths is not None:
        lengths = sorted(lengths, reverse=True)
        steps = [sum(n > t for n in lengths) for t in range(max(lengths))]
        lengths = np.array(steps + [0] * draw(st.integers(0, 1)), np.int64)
    given = draw(st.lists(st.booleans(), min_size=5, max_size=5))
    return (T, B, I, H, draw(st.sampled_from(DTYPES)), draw(st.booleans()), lengths, given,
            draw(st.lists(layouts, min_size=13, max_size=13)), draw(st.integers(0, 2**32 - 1)))


@pytest.mark.parametrize("kind", KINDS)
@settings(FUZZ, max_examples=40)
@given(case=functional_cases())
def test_functional_native_matches_reference(kind, case):
    T, B, I, H, dtype, bias, batch_sizes, given, lays, seed = case
    event(f"{'padded' if batch_sizes is None else 'packed'}, x in {lays[0][0]} layout")
    rng = np.random.default_rng(seed)
    sizes = state_sizes(kind, H)
    given_states, given_dstates, given_dy = given[:len(sizes)], given[2:2 + len(sizes)], given[4]
    if batch_sizes is None:
        rows = (T, B)
    else:
        rows = (int(batch_sizes.sum()),)
        if not any(given_states):   # B is then the sequences that run: batch_sizes[0]
            B = int(batch_sizes[0]) if len(batch_sizes) else 0

    def draw_array(shape, lay, given=True):
        return relayout(rng.standard_normal(shape).astype(dtype), *lay) if given else None

    x = draw_array(rows + (I,), lays[0])
    states = [draw_array((B, n), lay, g) for n, lay, g in zip(sizes, lays[1:3], given_states)]
    weights = [w if w is None else relayout(w, *lay)
               for w, lay in zip(random_weights(rng, kind, I, H, dtype, bias), lays[3:9])]
    dy = draw_array(rows + (sizes[0],), lays[9], given_dy)
    dstates = [draw_array((B, n), lay, g) for n, lay, g in zip(sizes, lays[10:12], given_dstates)]
    problem = (x, states, weights, dy, dstates)
    names, nat = run_functional("native", kind, problem, batch_sizes)
    _, ref = run_functional("reference", kind, problem, batch_sizes)
    truth = None if dtype == np.float64 else \
        run_functional("reference", kind, as64_tree(problem), batch_sizes)[1]
    assert_functional_matches(names, nat, ref, truth)


CHILD = Path(__file__).with_name("fuzz_bad_inputs.py")
CHILD_PROPERTIES = {"layer_forward_refuses", "layer_backward_refuses", "load_state_dict_refuses",
                    "constructors_refuse", "functional_refuses", "stacks_refuse",
                    "streams_refuse", "toolkit_refuses"}


def test_bad_inputs_are_refused_and_never_kill_the_process(tmp_path):
    """The child runs in a temporary directory, where hypothesis keeps its caches."""
    result = run_python([str(CHILD)], capture_output=True, text=True, timeout=600,
                        cwd=tmp_path)
    how = f"killed by signal {-result.returncode}" if result.returncode < 0 else \
        f"exit status {result.returncode}"
    assert result.returncode == 0, (f"{CHILD.name}: {how}\n{result.stdout[-3000:]}\n"
                                    f"{result.stderr[-6000:]}")
    counts = json.loads(result.stdout.splitlines()[-1])
    expected = CHILD_PROPERTIES | ({"torch_bridge_refuses"} if importlib.util.find_spec("torch")
                                   else set())
    assert set(counts) == expected
    assert min(counts.values()) >= 100, counts     # every property ran its examples
