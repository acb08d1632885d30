"""Running a layer step by step (or chunk by chunk), carrying the state, equals one call.

Only unidirectional layers: a bidirectional layer's reverse direction needs the whole sequence.
The step-by-step and whole-sequence runs do the same arithmetic except that the native backend
computes the input projection x W_ih^T for T*B rows at once instead of B rows per call, which
can change the BLAS blocking and hence the last bits: float64 is compared to 1e-12 and float32
to 1e-6 (16 units of float32 roundoff), relative to max(1, max |y|).
"""
import numpy as np
import pytest
from helpers import KINDS, assert_close, layer_forward, layer_state_sizes, make_layer

TOLS = {np.float32: 1e-6, np.float64: 1e-12}
T, B, I, H = 10, 3, 4, 5


def run_in_chunks(layer, x, states, bounds):
    """Run ``layer`` over x[bounds[k]:bounds[k + 1]] in turn, each call starting from the last
    call's final states. Returns the concatenated outputs and the final states."""
    ys = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        chunk = x[:, lo:hi] if layer.batch_first else x[lo:hi]
        y, states = layer_forward(layer, chunk, states)
        ys.append(y)
    return np.concatenate(ys, axis=1 if layer.batch_first else 0), states


CASES = [dict(num_layers=1), dict(num_layers=2), dict(num_layers=3, batch_first=True),
         dict(num_layers=2, bias=False)]


@pytest.mark.parametrize("split", ["steps", "chunks"])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("backend", ["reference", "native"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("kind", KINDS)
def test_stepwise_equals_whole_sequence(kind, case, backend, dtype, mode, split, rng):
    # In eval mode a dropout probability must be ignored, so stepping with it is still exact.
    dropout = 0.4 if mode == "eval" and case["num_layers"] > 1 else 0.0
    layer = make_layer(kind, I, H, dtype=dtype, backend=backend, seed=2, dropout=dropout, **case)
    layer.train(mode == "train")
    L = layer.num_layers
    x = rng.standard_normal((B, T, I) if layer.batch_first else (T, B, I)).astype(dtype)
    states = tuple(rng.standard_normal((L, B, n)).astype(dtype) for n in layer_state_sizes(layer))

    y_all, finals_all = layer_forward(layer, x, states)
    bounds = list(range(T + 1)) if split == "steps" else [0, 2, 7, T]
    y_parts, finals_parts = run_in_chunks(layer, x, states, bounds)

    tol = TOLS[dtype]
    assert y_parts.dtype == y_all.dtype
    assert_close(y_parts, y_all, tol, "y")
    for name, a, b in zip(("h_n", "c_n"), finals_parts, finals_all):
        assert_close(a, b, tol, name)
    # The state really is carried: starting every chunk from zeros gives something else.
    y_fresh = np.concatenate([layer_forward(layer, x[:, lo:hi] if layer.batch_first
                                            else x[lo:hi])[0]
                              for lo, hi in zip(bounds[:-1], bounds[1:])],
                             axis=1 if layer.batch_first else 0)
    assert not np.allclose(y_fresh, y_all, rtol=0, atol=1e-3)
