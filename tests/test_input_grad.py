"""``input_grad=False`` in the functional backwards: the gradient with respect to x is not
formed (None), as for a layer whose input needs none (fastlstm.torch asks so for a model's first
layer); every other gradient is exactly, bit for bit, that of a backward that forms it."""
import numpy as np
import pytest
from helpers import BACKENDS, DTYPES, KINDS, f_backward, f_forward, random_problem

import fastlstm

# (T, B, batch_sizes or None): padded, a batch of one, one step, a packed batch, and one with
# G * H = 4 * 24 rows or more, where the native backward packs w_ih for dx.
CASES = {"T7-B4": (7, 4, None), "T5-B1": (5, 1, None), "T1-B3": (1, 3, None),
         "packed-T6-B5": (6, 5, [5, 5, 4, 2, 2, 1]), "T30-B4": (30, 4, None)}


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_without_input_grad_the_other_gradients_are_unchanged(backend, kind, dtype, case,
                                                              threads, rng, restore_threads):
    T, B, batch_sizes = CASES[case]
    x, states, weights, _, _ = random_problem(rng, kind, T, B, 6, 24, dtype=dtype)
    if batch_sizes is not None:
        x = rng.standard_normal((sum(batch_sizes), 6)).astype(dtype)
        batch_sizes = np.array(batch_sizes)
    fastlstm.set_num_threads(threads)
    y, finals, ctx = f_forward(backend, kind, x, states, weights, batch_sizes)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dfinals = [rng.standard_normal(f.shape).astype(dtype) for f in finals]
    dx, dinits, dweights = f_backward(backend, kind, ctx, dy, dfinals)
    none, dinits_, dweights_ = f_backward(backend, kind, ctx, dy, dfinals, input_grad=False)
    assert dx is not None and dx.shape == x.shape and none is None
    for a, b in zip(dinits + dweights, dinits_ + dweights_):
        assert (a is None and b is None) or np.array_equal(a, b)


@pytest.mark.parametrize("bad", [1, None, "no"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_input_grad_must_be_a_bool(backend, bad, rng):
    x, states, weights, _, _ = random_problem(rng, "gru", 3, 2, 4, 5, dtype=np.float64)
    _, finals, ctx = f_forward(backend, "gru", x, states, weights)
    with pytest.raises(TypeError, match=r"input_grad must be True or False, got "):
        f_backward(backend, "gru", ctx, None, [None], input_grad=bad)
