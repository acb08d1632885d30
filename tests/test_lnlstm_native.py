"""The layer-normalised LSTM of fastlstm.native (lnlstm_forward / lnlstm_backward, and the
"lnlstm" cell of stack_forward / stack_backward, which runs the C kernels' stack loop) against
fastlstm.reference, in every build of the time loops this CPU can run (native.set_isa), and
bitwise the same for every thread count.

Tolerances as test_native_vs_reference.py's: float64 to TOL64 relative to max(1, max |reference|);
float32 within a small factor of the float32 reference's own error against a float64 truth (the
reference in float64 on the same inputs), plus a floor, and below 1e-4 in any case.
"""
import numpy as np
import pytest
from helpers import TOL64, assert_close, assert_f32_like_reference

import fastlstm
from fastlstm import native, reference
from fastlstm.reference import lnlstm_backward, lnlstm_forward

BACKENDS = {"native": (native.lnlstm_forward, native.lnlstm_backward),
            "reference": (lnlstm_forward, lnlstm_backward)}
WEIGHTS = ("w_ih", "w_hh", "b_ih", "b_hh", "g_ih", "g_hh", "g_c", "b_c")


@pytest.fixture(params=native.available_isas())
def isa(request):
    """Each build this CPU can run, restoring the one that ran before."""
    before = native.get_isa()
    native.set_isa(request.param)
    yield request.param
    native.set_isa(before)


def lengths_of(rng, T, B):
    """Random sequence lengths 0..T, longest first, the first of T."""
    lengths = np.sort(rng.integers(0, T + 1, B))[::-1].copy()
    lengths[:1] = T
    return lengths


def ln_problem(rng, T, B, I, H, dtype=np.float64, bias=True, packed=False, scale=0.5,
               gain=0.5):
    """The arguments of one forward by name (x padded, or packed rows with batch_sizes), and
    output gradients dy, dh_n, dc_n.

    LN(h w_hh^T) does not see the scale of w_hh: the recurrent gain g_hh (``gain`` times 1 +- 0.3)
    is what keeps the steps contracting, as a small ``scale`` does for the other cells, so that
    float32 stays well conditioned (at gain 1, one float32 problem in a hundred or so of
    test_functional_matches_the_reference's sizes leaves the float32 policy's factor of 8)."""
    batch_sizes = None
    if packed:
        lengths = lengths_of(rng, T, B)
        batch_sizes = np.array([(lengths > t).sum() for t in range(T)], np.int64)
        x = rng.standard_normal((int(batch_sizes.sum()), I))
    else:
        x = rng.standard_normal((T, B, I))
    p = dict(x=x, h0=rng.standard_normal((B, H)), c0=rng.standard_normal((B, H)),
             w_ih=scale * rng.standard_normal((4 * H, I)),
             w_hh=scale * rng.standard_normal((4 * H, H)),
             b_ih=scale * rng.standard_normal(4 * H) if bias else None,
             b_hh=scale * rng.standard_normal(4 * H) if bias else None,
             g_ih=1 + 0.3 * rng.standard_normal(4 * H),
             g_hh=gain * (1 + 0.3 * rng.standard_normal(4 * H)),
             g_c=1 + 0.3 * rng.standard_normal(H), b_c=0.3 * rng.standard_normal(H))
    p = {k: None if a is None else a.astype(dtype) for k, a in p.items()}
    p["batch_sizes"] = batch_sizes
    grads = (rng.standard_normal(x.shape[:-1] + (H,)).astype(dtype),
             rng.standard_normal((B, H)).astype(dtype), rng.standard_normal((B, H)).astype(dtype))
    return p, grads


def as64(problem):
    p, grads = problem
    return ({k: a if a is None or k == "batch_sizes" else a.astype(np.float64)
             for k, a in p.items()}, tuple(g.astype(np.float64) for g in grads))


def run(backend, problem, training=True, **options):
    """Forward (and, training, backward) of one backend: every output and gradient by name."""
    forward, backward = BACKENDS[backend]
    p, grads = problem
    y, h_n, c_n, ctx = forward(**p, training=training)
    out = {"y": y, "h_n": h_n, "c_n": c_n}
    if training:
        out.update({"d" + k: g for k, g in backward(ctx, *grads, **options).items()})
    else:
        assert ctx is None
    return out


def assert_matches(nat, ref, truth=None):
    """Native against reference by name; float32 (with ``truth``) by the float32 policy."""
    assert list(nat) == list(ref)
    for name, r in ref.items():
        if r is None:
            assert nat[name] is None, name
        elif truth is None:
            assert nat[name].dtype == r.dtype and nat[name].shape == r.shape, name
            assert_close(nat[name], r, TOL64, name)
        else:
            assert_f32_like_reference(name, nat[name], r, truth[name])


def check_against_reference(problem, training=True, **options):
    nat = run("native", problem, training, **options)
    ref = run("reference", problem, training, **options)
    truth = None
    if problem[0]["x"].dtype == np.float32:
        truth = run("reference", as64(problem), training, **options)
    assert_matches(nat, ref, truth)
    return nat


# (T, B, I, H): sizes 1 in every place; H no multiple of any build's vector (17, 33); batches
# of at least FUSE_ROWS (4) rows a part on two parts, whose steps form their input product
# (and normalise it) in the packed tiles; B = 1 at H = 128, where the other cells split a step
# by units.
SHAPES = [(1, 1, 1, 1), (5, 3, 4, 6), (6, 1, 4, 17), (4, 9, 3, 33), (7, 8, 5, 16),
          (3, 2, 7, 1), (10, 16, 20, 40), (9, 1, 5, 128)]


def shape_id(shape):
    return "T{}-B{}-I{}-H{}".format(*shape)


@pytest.mark.parametrize("form", ["padded", "packed"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_functional_matches_the_reference(dtype, shape, bias, form, isa, rng):
    problem = ln_problem(rng, *shape, dtype=dtype, bias=bias, packed=form == "packed")
    check_against_reference(problem)


@pytest.mark.parametrize("form", ["padded", "packed"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_inference_matches_the_reference_and_training(dtype, shape, form, isa, rng):
    """training=False keeps nothing (no context) and gives the training forward's outputs."""
    problem = ln_problem(rng, *shape, dtype=dtype, packed=form == "packed")
    inference = check_against_reference(problem, training=False)
    trained = run("native", problem)
    for name in ("y", "h_n", "c_n"):
        assert_close(inference[name], trained[name], 1e-5 if dtype == np.float32 else 1e-13,
                     name)


# More rows than gemm_tn's blocks (512) and than 4 H (backward packs w_ih for dx): at a smaller
# scale of the weights, so that 40-53 steps stay well conditioned in float32.
@pytest.mark.parametrize("shape", [(53, 11, 19, 37), (40, 16, 33, 24)], ids=shape_id)
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_many_rows(dtype, shape, isa, rng):
    check_against_reference(ln_problem(rng, *shape, dtype=dtype, packed=True, scale=0.2))


@pytest.mark.parametrize("backend", ["native", "reference"])
def test_zero_steps(backend, rng):
    p, grads = ln_problem(rng, 0, 3, 2, 4)
    out = run(backend, (p, grads))
    assert out["y"].shape == (0, 3, 4) and out["dx"].shape == (0, 3, 2)
    for name, state, grad in (("h", "h0", 1), ("c", "c0", 2)):
        assert np.array_equal(out[f"{name}_n"], p[state])
        assert np.array_equal(out["d" + state], grads[grad])
    for name in WEIGHTS:
        assert out["d" + name].shape == p[name].shape and not out["d" + name].any()


def test_the_gradients_are_the_spec_dict(rng):
    """Keyed by the forward's argument names; b_ih and b_hh only with biases; x None without
    input_grad, every other gradient the same."""
    with_bias = run("native", ln_problem(rng, 4, 3, 2, 5))
    assert list(with_bias) == ["y", "h_n", "c_n", "dx", "dh0", "dc0"] + ["d" + k for k in WEIGHTS]
    problem = ln_problem(rng, 4, 3, 2, 5, bias=False)
    full = run("native", problem)
    assert "db_ih" not in full and "db_hh" not in full
    no_dx = run("native", problem, input_grad=False)
    assert no_dx.pop("dx") is None and full.pop("dx") is not None
    for name, a in full.items():
        assert np.array_equal(no_dx[name], a), name


def test_no_bias_is_zero_bias(rng):
    p, grads = ln_problem(rng, 4, 3, 2, 5, bias=False)
    zero = dict(p, b_ih=np.zeros(20), b_hh=np.zeros(20))
    a, b = run("native", (p, grads)), run("native", (zero, grads))
    for name in a:
        assert_close(a[name], b[name], 1e-14, name)


def test_missing_states_and_gradients_mean_zeros(rng):
    p, grads = ln_problem(rng, 4, 3, 2, 5)
    zeros = dict(p, h0=np.zeros_like(p["h0"]), c0=np.zeros_like(p["c0"]))
    y0, h0, c0, ctx0 = native.lnlstm_forward(**dict(p, h0=None, c0=None))
    y1, h1, c1, ctx1 = native.lnlstm_forward(**zeros)
    for a, b in ((y0, y1), (h0, h1), (c0, c1)):
        assert np.array_equal(a, b)
    g0 = native.lnlstm_backward(ctx0, None, None, None)
    g1 = native.lnlstm_backward(ctx1, *(np.zeros_like(g) for g in grads))
    for name in g1:
        assert np.array_equal(g0[name], g1[name]), name


@pytest.mark.parametrize("forward_backend, backward_backend",
                         [("native", "reference"), ("reference", "native")])
def test_the_context_crosses_backends(forward_backend, backward_backend, rng):
    """Both backends save the same arrays (normed, rstd and the rest), so either one's backward
    takes the other's context."""
    p, grads = ln_problem(rng, 5, 3, 4, 6, packed=True)
    ctx_a = BACKENDS[forward_backend][0](**p)[3]
    ctx_b = BACKENDS[backward_backend][0](**p)[3]
    for field in ("x", "hs", "cs", "gates", "normed", "rstd", "w_ih", "w_hh") + WEIGHTS[4:]:
        a, b = getattr(ctx_a, field), getattr(ctx_b, field)
        assert a.shape == b.shape and a.dtype == b.dtype and a.flags.c_contiguous, field
        assert_close(a, b, TOL64, field)
    for field in ("hn", "w_hr", "w_peephole"):
        assert getattr(ctx_a, field) is None, field
    assert (ctx_a.cell, ctx_a.has_bias) == (ctx_b.cell, ctx_b.has_bias) == ("lnlstm", True)
    crossed = BACKENDS[backward_backend][1](ctx_a, *grads)
    same = BACKENDS[backward_backend][1](ctx_b, *grads)
    for name in same:
        assert_close(crossed[name], same[name], TOL64, name)


def test_a_changed_context_is_refused(rng):
    p, grads = ln_problem(rng, 4, 3, 2, 5)
    ctx = native.lnlstm_forward(**p)[3]
    ctx.normed = ctx.normed[:, :-1].copy()
    with pytest.raises(ValueError, match="ctx.normed must be"):
        native.lnlstm_backward(ctx, *grads)
    with pytest.raises(ValueError, match="ctx comes from lnlstm_forward"):
        native.lstm_backward(native.lnlstm_forward(**p)[3], *grads)


def test_wrong_layer_norm_weights_are_refused(rng):
    p, _ = ln_problem(rng, 4, 3, 2, 5)
    with pytest.raises(ValueError, match=r"g_c must have shape \(5,\)"):
        native.lnlstm_forward(**dict(p, g_c=p["g_ih"]))
    with pytest.raises(TypeError, match="b_c must be an array"):
        native.lnlstm_forward(**dict(p, b_c=None))
    with pytest.raises(TypeError, match="g_hh must have dtype float64"):
        native.lnlstm_forward(**dict(p, g_hh=p["g_hh"].astype(np.float32)))


# ---------------------------------------------------------------- stacks (the C stack loop)


def stack_problem(rng, L, T, B, I, H, dtype, packed, masks, bias=True):
    """The arguments of an "lnlstm" stack_forward without feedback, and its output gradients."""
    first, grads = ln_problem(rng, T, B, I, H, dtype, bias, packed)
    layers = [first] + [ln_problem(rng, T, B, H, H, dtype, bias)[0] for _ in range(1, L)]
    N = first["x"].shape[0] if packed else T * B
    keep = 0.7
    stack = dict(x=first["x"], batch_sizes=first["batch_sizes"],
                 states=[(q["h0"], q["c0"]) for q in layers],
                 weights=[{k: q[k] for k in WEIGHTS if q[k] is not None} for q in layers],
                 masks=[None] + [((rng.random((N, H)) < keep) / keep).astype(dtype) if masks
                                 else None for _ in range(1, L)])
    dfinals = [(rng.standard_normal((B, H)).astype(dtype),
                rng.standard_normal((B, H)).astype(dtype)) for _ in range(L)]
    return stack, grads[0], dfinals


def chained_reference(stack, dy, dfinals):
    """The reference's layers run one after another over the whole sequence, each one's output
    (times the mask) the next one's input: outputs and gradients by name, as stack_run's."""
    batch_sizes, ctxs, out, inp = stack["batch_sizes"], [], {}, stack["x"]
    for k, (w, (h0, c0), mask) in enumerate(zip(stack["weights"], stack["states"],
                                                stack["masks"])):
        if mask is not None:
            inp = (inp.reshape(mask.shape) * mask).reshape(inp.shape)
        inp, out[f"h_n{k}"], out[f"c_n{k}"], ctx = lnlstm_forward(
            inp, h0, c0, **{n: w.get(n) for n in WEIGHTS}, batch_sizes=batch_sizes)
        ctxs.append(ctx)
    out["y"] = inp
    for k in reversed(range(len(ctxs))):
        grads = lnlstm_backward(ctxs[k], dy, *dfinals[k])
        dy, mask = grads.pop("x"), stack["masks"][k]
        if mask is not None:
            dy = (dy.reshape(mask.shape) * mask).reshape(dy.shape)
        out.update({f"d{name}{k}": g for name, g in grads.items()})
    out["dx"] = dy
    return out


def stack_run(stack, dy, dfinals):
    y, finals, ctx = native.stack_forward("lnlstm", **stack)
    dx, dinits, grads = native.stack_backward(ctx, dy, dfinals)
    out = {"y": y, "dx": dx}
    for k, ((h_n, c_n), (dh0, dc0), g) in enumerate(zip(finals, dinits, grads)):
        out.update({f"h_n{k}": h_n, f"c_n{k}": c_n, f"dh0{k}": dh0, f"dc0{k}": dc0})
        out.update({f"d{name}{k}": a for name, a in g.items()})
    return out


@pytest.mark.parametrize("masks", [False, True], ids=["plain", "dropout"])
@pytest.mark.parametrize("form", ["padded", "packed"])
@pytest.mark.parametrize("shape", [(2, 5, 3, 4, 6), (3, 9, 4, 3, 17), (2, 6, 1, 2, 1),
                                   (2, 4, 33, 5, 8)],
                         ids=lambda s: "L{}-T{}-B{}-I{}-H{}".format(*s))
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
def test_a_stack_is_its_layers_one_after_another(dtype, shape, form, masks, isa, rng):
    """Above its first layer a stack's steps form and normalise their input product themselves
    (step_pre), a step at a time, and form dx_t of the layer below a step at a time."""
    stack, dy, dfinals = stack_problem(rng, *shape, dtype, form == "packed", masks,
                                       bias=shape[0] != 3)
    nat = stack_run(stack, dy, dfinals)
    ref = chained_reference(stack, dy, dfinals)
    truth = None
    if dtype == np.float32:
        def f64(a):
            return None if a is None else a.astype(np.float64)
        stack64 = dict(stack, x=f64(stack["x"]), masks=[f64(m) for m in stack["masks"]],
                       states=[tuple(map(f64, s)) for s in stack["states"]],
                       weights=[{k: f64(a) for k, a in w.items()} for w in stack["weights"]])
        truth = chained_reference(stack64, f64(dy), [tuple(map(f64, d)) for d in dfinals])
    assert sorted(nat) == sorted(ref)
    assert_matches({k: nat[k] for k in ref}, ref, truth)


@pytest.mark.parametrize("form", ["padded", "packed"])
def test_a_stack_infers_what_it_trains(form, isa, rng):
    """training=False: each stacked step normalises its input product in scratch rows it
    reuses, and keeps no normed or rstd."""
    stack, _, _ = stack_problem(rng, 3, 7, 9, 4, 12, np.float64, form == "packed", False)
    y, finals, ctx = native.stack_forward("lnlstm", **stack)
    y_inf, finals_inf, ctx_inf = native.stack_forward("lnlstm", **stack, training=False)
    assert ctx_inf is None
    assert_close(y_inf, y, 1e-13, "y")
    for (h, c), (h_inf, c_inf) in zip(finals, finals_inf):
        assert_close(h_inf, h, 1e-13, "h_n")
        assert_close(c_inf, c, 1e-13, "c_n")


def test_the_stepper_checks_the_layer_norm_weights():
    """The stepper of a layer-normalised LSTM needs its four layer-norm weights, checked as the
    functional forward checks them; another cell's stepper refuses them. (Its steps against the
    whole sequence: tests/test_lnlstm_layers.py, test_stream_steps_equal_the_whole_sequence.)"""
    H, I = 3, 2
    w = {"w_ih": np.ones((4 * H, I), np.float32), "w_hh": np.ones((4 * H, H), np.float32)}
    with pytest.raises(TypeError, match=r"weights\[0\]: g_ih must be an array of shape \(12,\)"):
        native.Stepper("lnlstm", None, [w], 1, np.float32)
    ln = {k: np.ones(n, np.float32) for k, n in (("g_ih", 4 * H), ("g_hh", 4 * H), ("g_c", H),
                                                 ("b_c", 2))}
    with pytest.raises(ValueError, match=r"weights\[0\]: b_c must have shape \(3,\)"):
        native.Stepper("lnlstm", None, [w | ln], 1, np.float32)
    with pytest.raises(ValueError, match=r"weights\[0\] has g_ih, g_hh, g_c, b_c, which a lstm "
                                         r"layer does not have"):
        native.Stepper("lstm", None, [w | ln], 1, np.float32)


# ---------------------------------------------------------------- threads

THREADS = (1, 2, 3)


def assert_bitwise_equal(results, what):
    base = results[THREADS[0]]
    for n in THREADS[1:]:
        assert list(results[n]) == list(base)
        for name, a in base.items():
            b = results[n][name]
            assert (a is None and b is None) or (a.dtype == b.dtype and np.array_equal(a, b)), (
                f"{what} {name} differs between {THREADS[0]} and {n} threads")


@pytest.mark.parametrize("shape", [(20, 1, 8, 64), (20, 1, 8, 128), (20, 5, 8, 64),
                                   (20, 32, 8, 64), (15, 9, 5, 33)], ids=shape_id)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_results_do_not_depend_on_threads(dtype, shape, rng, restore_threads):
    problem = ln_problem(rng, *shape, dtype=dtype, packed=shape[1] == 9)
    results = {}
    for n in THREADS:
        fastlstm.set_num_threads(n)
        results[n] = run("native", problem)
        results[n].update({"inference " + k: a for k, a in
                           run("native", problem, training=False).items()})
    assert_bitwise_equal(results, "lnlstm")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_stack_results_do_not_depend_on_threads(dtype, rng, restore_threads):
    stack, dy, dfinals = stack_problem(rng, 2, 12, 9, 6, 24, dtype, True, True)
    results = {}
    for n in THREADS:
        fastlstm.set_num_threads(n)
        results[n] = stack_run(stack, dy, dfinals)
    assert_bitwise_equal(results, "lnlstm stack")


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_the_stack_functions_agree_across_backends(packed):
    """reference.stack_forward/backward of "lnlstm" (its layers one after another) against the
    native stack's time loop, each backend's context through the other's backward too; and
    feedback refused by both stack functions and the stepper."""
    rng = np.random.default_rng(11)
    T, B, I, H = 4, 3, 2, 5
    sizes = np.array([3, 3, 2, 1]) if packed else None
    N = int(sizes.sum()) if packed else T * B
    x = rng.standard_normal((N, I) if packed else (T, B, I))

    def layer(n_in):
        return {"w_ih": 0.5 * rng.standard_normal((4 * H, n_in)),
                "w_hh": 0.5 * rng.standard_normal((4 * H, H)),
                "b_ih": rng.standard_normal(4 * H), "b_hh": rng.standard_normal(4 * H),
                "g_ih": 1 + 0.3 * rng.standard_normal(4 * H),
                "g_hh": 0.5 + 0.3 * rng.standard_normal(4 * H),
                "g_c": 1 + 0.3 * rng.standard_normal(H), "b_c": rng.standard_normal(H)}
    weights = [layer(I), layer(H)]
    masks = [None, (rng.random((N, H)) < 0.7) / 0.7]
    dy = rng.standard_normal((N, H) if packed else (T, B, H))
    runs = {}
    for name, mod in (("reference", reference), ("native", native)):
        y, finals, ctx = mod.stack_forward("lnlstm", x, None, weights, batch_sizes=sizes,
                                           masks=masks)
        runs[name] = (y, finals, ctx)
    assert_close(runs["native"][0], runs["reference"][0], 1e-12, "y")
    for k in range(2):
        for a, b in zip(runs["native"][1][k], runs["reference"][1][k]):
            assert_close(a, b, 1e-12, f"finals of layer {k}")
    backward = {}
    for ctx_of in ("reference", "native"):
        for mod in (reference, native):
            backward[ctx_of, mod.__name__] = mod.stack_backward(runs[ctx_of][2], dy, None)
    expected = backward["reference", "fastlstm.reference"]
    for key, (dx, dinits, grads) in backward.items():
        assert_close(dx, expected[0], 1e-11, f"dx {key}")
        for k in range(2):
            for a, b in zip(dinits[k], expected[1][k]):
                assert_close(a, b, 1e-11, f"dinits {key}")
            assert grads[k].keys() == expected[2][k].keys()
            for name in grads[k]:
                assert_close(grads[k][name], expected[2][k][name], 1e-11, f"{name} {key}")
    for mod in (reference, native):
        with pytest.raises(ValueError, match="feedback must be empty for the lnlstm cell"):
            mod.stack_forward("lnlstm", x, None, weights, [(1, 0)], batch_sizes=sizes)
    with pytest.raises(ValueError, match="feedback must be empty for the lnlstm cell"):
        native.Stepper("lnlstm", None, weights, B, np.float64, feedback=[(1, 0)])
