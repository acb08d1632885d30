"""fastlstm.native against fastlstm.reference: every output and every gradient.

float64: the two backends compute the same formulas and differ only in summation order, so they
agree to a few units of roundoff; 1e-10 relative to max(1, max |reference|) leaves a wide margin.

float32: the unit roundoff is u = 6e-8. The backends sum in different orders (OpenBLAS blocking
and FMA against NumPy's), so each dot product of K terms differs by ~sqrt(K) u, and these
differences are carried through every step of the recurrence. Rather than guess a bound, each
float32 result is compared with a float64 computation on the same (float32-representable) inputs:
the native float32 error must be within a small factor of the reference float32 error, plus a
floor of 1e-6 (about 16 u) for arrays where the reference happens to be almost exact; and it
must stay below 1e-4 in any case, far below the O(1) error of any wrong term.
"""
import numpy as np
import pytest
from helpers import (KINDS, TOL64, as64_tree, assert_all_close, assert_close,
                     assert_f32_like_reference, assert_functional_matches, compare_layer_runs,
                     f_backward, f_forward, layer_backward, layer_forward, layer_problem,
                     make_layer, n_states, random_problem, run_functional, run_layer)

# (T, B, I, H): the edge sizes 1 in every position, then shapes drawn from a seeded generator.
_shape_rng = np.random.default_rng(20240601)
SHAPES = [(1, 1, 1, 1), (1, 3, 2, 5), (6, 1, 4, 1), (5, 4, 1, 3), (3, 2, 7, 1)] + [
    tuple(int(_shape_rng.integers(1, hi)) for hi in (13, 10, 11, 17)) for _ in range(6)]


def shape_id(shape):
    return "T{}-B{}-I{}-H{}".format(*shape)


# ---------------------------------------------------------------- functional level


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("kind", KINDS)
def test_functional_float64(kind, shape, bias, rng):
    problem = random_problem(rng, kind, *shape, dtype=np.float64, bias=bias)
    names, ref = run_functional("reference", kind, problem)
    _, nat = run_functional("native", kind, problem)
    assert_functional_matches(names, nat, ref)


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("kind", KINDS)
def test_functional_float32_error_is_like_the_reference(kind, shape, rng):
    problem = random_problem(rng, kind, *shape, dtype=np.float32)
    names, nat = run_functional("native", kind, problem)
    _, ref = run_functional("reference", kind, problem)
    _, truth = run_functional("reference", kind, as64_tree(problem))
    assert_functional_matches(names, nat, ref, truth)


# More rows (T * B) than the kernels take at a time in their blocked products: the weight
# gradients' blocks of rows (GEMM_TN_ROWS, 512, in csrc/kernels.c), and at least G * H rows, where
# backward packs w_ih for dx; sizes that are no multiple of a tile's 8 rows or a panel's width.
# Weights of a smaller scale keep 40-53 steps contracting, so that float32 stays well
# conditioned (at the default scale an Elman layer's float32 outputs drift by 1e-2).
MANY_ROWS = [(53, 11, 19, 37), (40, 16, 33, 24)]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("shape", MANY_ROWS, ids=shape_id)
@pytest.mark.parametrize("kind", KINDS)
def test_functional_many_rows(kind, shape, dtype, rng):
    problem = random_problem(rng, kind, *shape, dtype=dtype, scale=0.2)
    names, nat = run_functional("native", kind, problem)
    _, ref = run_functional("reference", kind, problem)
    truth = None
    if dtype == np.float32:
        _, truth = run_functional("reference", kind, as64_tree(problem))
    assert_functional_matches(names, nat, ref, truth)


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("kind", KINDS)
def test_functional_zero_steps(backend, kind, rng):
    B, I, H = 3, 2, 4
    x, states, weights, dy, dstates = random_problem(rng, kind, 0, B, I, H)
    y, finals, ctx = f_forward(backend, kind, x, states, weights)
    assert y.shape == (0, B, states[0].shape[1])
    for s, f in zip(states, finals):
        assert np.array_equal(f, s)
    dx, dinits, dweights = f_backward(backend, kind, ctx, dy, dstates)
    assert dx.shape == (0, B, I)
    for ds, di in zip(dstates, dinits):
        assert np.array_equal(di, ds)
    for w, dw in zip(weights, dweights):
        assert dw.shape == w.shape and not dw.any()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("forward_backend, backward_backend",
                         [("native", "reference"), ("reference", "native")])
def test_context_crosses_backends(kind, forward_backend, backward_backend, rng):
    x, states, weights, dy, dstates = random_problem(rng, kind, 5, 3, 4, 6)
    ctx_a = f_forward(forward_backend, kind, x, states, weights)[2]
    ctx_b = f_forward(backward_backend, kind, x, states, weights)[2]
    for field in ("x", "hs", "cs", "gates", "hn", "w_ih", "w_hh", "w_hr", "w_peephole"):
        a, b = getattr(ctx_a, field), getattr(ctx_b, field)
        if b is None:
            assert a is None, field
        else:
            assert a.shape == b.shape and a.dtype == b.dtype and a.flags.c_contiguous, field
            assert_close(a, b, TOL64, field)
    assert (ctx_a.cell, ctx_a.nonlinearity, ctx_a.has_bias) == \
        (ctx_b.cell, ctx_b.nonlinearity, ctx_b.has_bias)
    crossed = f_backward(backward_backend, kind, ctx_a, dy, dstates)
    same = f_backward(backward_backend, kind, ctx_b, dy, dstates)
    assert_close(crossed[0], same[0], TOL64, "dx")
    assert_all_close(crossed[1], same[1], TOL64, "dinits")
    assert_all_close(crossed[2], same[2], TOL64, "dweights")


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("kind", KINDS)
def test_no_bias_is_zero_bias_and_gives_none_bias_grads(backend, kind, rng):
    x, states, weights, dy, dstates = random_problem(rng, kind, 4, 3, 2, 5)
    no_bias = weights[:2] + (None, None) + weights[4:]
    zero_bias = weights[:2] + (np.zeros_like(weights[2]), np.zeros_like(weights[3])) + weights[4:]
    y0, f0, ctx0 = f_forward(backend, kind, x, states, no_bias)
    y1, f1, ctx1 = f_forward(backend, kind, x, states, zero_bias)
    assert_close(y0, y1, 1e-14, "y")
    assert_all_close(f0, f1, 1e-14, "finals")
    dx0, di0, dw0 = f_backward(backend, kind, ctx0, dy, dstates)
    dx1, di1, dw1 = f_backward(backend, kind, ctx1, dy, dstates)
    assert dw0[2] is None and dw0[3] is None
    assert dw1[2] is not None and dw1[3] is not None
    assert_close(dx0, dx1, 1e-14, "dx")
    assert_all_close(di0, di1, 1e-14, "dinits")
    assert_all_close(dw0[:2] + dw0[4:], dw1[:2] + dw1[4:], 1e-14, "dweights")


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("kind", KINDS)
def test_missing_states_and_gradients_mean_zeros(backend, kind, rng):
    x, states, weights, dy, dstates = random_problem(rng, kind, 4, 3, 2, 5)
    zeros = tuple(np.zeros_like(s) for s in states)
    y0, f0, ctx0 = f_forward(backend, kind, x, (None,) * len(states), weights)
    y1, f1, ctx1 = f_forward(backend, kind, x, zeros, weights)
    assert np.array_equal(y0, y1)
    for a, b in zip(f0, f1):
        assert np.array_equal(a, b)
    if n_states(kind) == 2:  # one of the two states missing
        y2, _, _ = f_forward(backend, kind, x, (states[0], None), weights)
        y3, _, _ = f_forward(backend, kind, x, (states[0], zeros[1]), weights)
        assert np.array_equal(y2, y3)
    g0 = f_backward(backend, kind, ctx0, None, (None,) * len(states))
    g1 = f_backward(backend, kind, ctx1, np.zeros_like(dy), zeros)
    for a, b in zip([g0[0], *g0[1], *g0[2]], [g1[0], *g1[1], *g1[2]]):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("kind", KINDS)
def test_inputs_are_not_modified_and_strided_inputs_work(backend, kind, rng):
    x, states, weights, dy, dstates = random_problem(rng, kind, 5, 3, 4, 3)
    originals = [a.copy() for a in (x, *states, *weights, dy, *dstates)]
    names, expected = run_functional(backend, kind, (x, states, weights, dy, dstates))
    for before, after in zip(originals, (x, *states, *weights, dy, *dstates)):
        assert np.array_equal(before, after), "a functional call modified one of its inputs"

    # The same values as non-contiguous views: every argument strided or transposed.
    def strided(a):
        big = np.zeros(a.shape + (2,), a.dtype)
        big[..., 1] = a
        return big[..., 1]

    wt = [np.asfortranarray(w) if w.ndim == 2 else strided(w) for w in weights]
    _, got = run_functional(backend, kind, (strided(x), [strided(s) for s in states], wt,
                                            strided(dy), [strided(s) for s in dstates]))
    for name, a, b in zip(names, got, expected, strict=True):
        assert_close(a, b, 1e-14, name)


# ---------------------------------------------------------------- layer level

LAYER_CASES = [
    dict(num_layers=1),
    dict(num_layers=2),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, bidirectional=True, batch_first=True),
    dict(num_layers=2, bidirectional=True, bias=False),
]


def case_id(case):
    return "-".join(f"{k}={v}" for k, v in case.items())


@pytest.mark.parametrize("case", LAYER_CASES, ids=case_id)
@pytest.mark.parametrize("kind", KINDS)
def test_layer_float64(kind, case, rng):
    ref = make_layer(kind, 3, 5, dtype=np.float64, backend="reference", seed=9, **case)
    nat = make_layer(kind, 3, 5, dtype=np.float64, backend="native", seed=9, **case)
    sd_ref, sd_nat = ref.state_dict(), nat.state_dict()
    assert all(np.array_equal(sd_ref[k], sd_nat[k]) for k in sd_ref), "same seed, same weights"
    problem = layer_problem(rng, ref, T=6, B=4)

    def check(name, a, b):
        assert a.dtype == np.float64
        assert_close(a, b, TOL64, name)

    compare_layer_runs(run_layer(nat, *problem), run_layer(ref, *problem), check=check)


@pytest.mark.parametrize("case", LAYER_CASES, ids=case_id)
@pytest.mark.parametrize("kind", KINDS)
def test_layer_float32(kind, case, rng):
    nat = make_layer(kind, 3, 5, dtype=np.float32, backend="native", seed=9, **case)
    ref = make_layer(kind, 3, 5, dtype=np.float32, backend="reference", seed=9, **case)
    truth = make_layer(kind, 3, 5, dtype=np.float64, backend="reference", **case)
    truth.load_state_dict(nat.state_dict())
    problem = layer_problem(rng, nat, T=6, B=4)
    compare_layer_runs(run_layer(nat, *problem), run_layer(ref, *problem),
                       run_layer(truth, *as64_tree(problem)), check=assert_f32_like_reference)


@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("kind", KINDS)
def test_layer_zero_steps(backend, kind, rng):
    layer = make_layer(kind, 3, 4, num_layers=2, bidirectional=True, dtype=np.float64,
                       backend=backend, seed=1)
    x, states, dy, dstates = layer_problem(rng, layer, T=0, B=2)
    y, finals = layer_forward(layer, x, states)
    assert y.shape == (0, 2, 2 * layer.output_size)
    for s, f in zip(states, finals):
        assert np.array_equal(f, s)
    dx, dinits = layer_backward(layer, dy, dstates)
    assert dx.shape == (0, 2, 3)
    for ds, di in zip(dstates, dinits):
        assert np.array_equal(di, ds)
    assert not any(g.any() for g in layer.grads.values())


@pytest.mark.parametrize("kind", KINDS)
def test_layer_dropout_masks_are_the_same_on_both_backends(kind, rng):
    layers = [make_layer(kind, 3, 5, num_layers=3, dropout=0.5, dtype=np.float64, backend=b,
                         seed=4) for b in ("reference", "native")]
    problem = layer_problem(rng, layers[0], T=5, B=3)
    eval_y = layer_forward(layers[0].eval(), *problem[:2])[0]
    layers[0].train()
    runs = [run_layer(layer, *problem) for layer in layers]
    assert not np.allclose(runs[0][0], eval_y), "dropout should act in training mode"
    compare_layer_runs(runs[1], runs[0],
                       check=lambda name, a, b: assert_close(a, b, TOL64, name))



@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("kind", KINDS)
def test_read_only_inputs_work(backend, kind, rng):
    """Arrays that cannot be written (memory maps, np.broadcast_to, some torch exports)."""
    problem = random_problem(rng, kind, 5, 3, 4, 3)
    names, expected = run_functional(backend, kind, problem)
    x, states, weights, dy, dstates = (a.copy() if isinstance(a, np.ndarray)
                                       else tuple(None if b is None else b.copy() for b in a)
                                       for a in problem)
    for a in (x, *states, *weights, dy, *dstates):
        a.flags.writeable = False
    _, got = run_functional(backend, kind, (x, states, weights, dy, dstates))
    for name, a, b in zip(names, got, expected, strict=True):
        assert np.array_equal(a, b), name
