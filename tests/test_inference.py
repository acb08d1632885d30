"""Inference forwards: ``training=False`` in the functional forwards, which the layers pass in eval
mode. Such a call keeps nothing for backward (the context is None, and the native kernels keep
the LSTM's and GRU's gate activations in scratch of one step instead of arrays of every step),
and must return exactly, bit for bit, what a training forward returns."""
import numpy as np
import pytest
from helpers import (BACKENDS, DTYPES, KINDS, f_backward, f_forward, layer_forward,
                     layer_problem, make_layer, random_problem)

import fastlstm

# (T, B, batch_sizes or None): padded, a batch of one, one step (which the kernels run without
# packing their weights), no steps, and packed batches whose sequences end at different steps,
# the last with two sequences of length 0 (their final states are their initial ones).
CASES = {"T20-B32": (20, 32, None), "T20-B1": (20, 1, None), "T1-B5": (1, 5, None),
         "T0-B3": (0, 3, None), "packed-T7-B5": (7, 5, [5, 5, 4, 2, 2, 1, 1]),
         "packed-T6-B9": (6, 9, [9, 7, 7, 4, 3, 1]), "packed-T3-B6": (3, 6, [4, 2, 1])}


def problem_of(rng, kind, case, dtype):
    T, B, batch_sizes = CASES[case]
    x, states, weights, _, _ = random_problem(rng, kind, T, B, 6, 24, dtype=dtype)
    if batch_sizes is None:
        return x, states, weights, None
    x = rng.standard_normal((sum(batch_sizes), 6)).astype(dtype)
    return x, states, weights, np.array(batch_sizes)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_inference_returns_the_training_outputs_and_no_context(backend, kind, dtype, case,
                                                              threads, rng, restore_threads):
    x, states, weights, batch_sizes = problem_of(rng, kind, case, dtype)
    fastlstm.set_num_threads(1)
    y, finals, ctx = f_forward(backend, kind, x, states, weights, batch_sizes)
    assert ctx is not None
    fastlstm.set_num_threads(threads)
    y_inf, finals_inf, ctx_inf = f_forward(backend, kind, x, states, weights, batch_sizes,
                                           training=False)
    assert ctx_inf is None
    with pytest.raises(TypeError, match=r"ctx must be the Context .* training=False returns none"):
        f_backward(backend, kind, ctx_inf, y, finals)
    for name, a, b in zip(("y", "h_n", "c_n"), (y, *finals), (y_inf, *finals_inf)):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert np.array_equal(a, b), f"{name} differs (max {np.abs(a - b).max():.3g})"


@pytest.mark.parametrize("bad", [1, 0, None, "False", np.float32(1)])
@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstm"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_training_must_be_a_bool(backend, kind, bad, rng):
    x, states, weights, _ = problem_of(rng, kind, "T1-B5", np.float64)
    with pytest.raises(TypeError, match=r"training must be True or False, got "):
        f_forward(backend, kind, x, states, weights, training=bad)


@pytest.mark.parametrize("kind", ["rnn_tanh", "gru", "lstmp_peephole"])
def test_an_eval_layer_returns_the_training_outputs(kind, rng):
    """Eval mode runs inference forwards; without dropout it changes nothing in the outputs."""
    layer = make_layer(kind, 6, 24, num_layers=2, bidirectional=True, seed=0)
    x, states = layer_problem(rng, layer, T=9, B=4)[:2]
    lengths = np.array([9, 3, 7, 1])
    y, finals = layer_forward(layer.train(), x, states, lengths)
    y_eval, finals_eval = layer_forward(layer.eval(), x, states, lengths)
    assert np.array_equal(y, y_eval)
    for a, b in zip(finals, finals_eval):
        assert np.array_equal(a, b)
    with pytest.raises(RuntimeError, match="training mode"):
        layer.backward(np.ones_like(y))
