"""A small workout of every native kernel, for valgrind's memcheck (tools/valgrind.sh runs it).

Every cell (Elman tanh and relu, GRU, LSTM, LSTM with projection, peepholes or both) in float32
and float64, as a 2-layer bidirectional layer: a forward and a backward on a padded batch with
sequences of different lengths (the kernels' packed path), and on one of equal lengths (their
plain path), on 2 OpenMP threads; then three steps of a stream. Each result is checked against
the NumPy reference, so that reads of uninitialised memory that happen to produce garbage
fail here too. Small sizes: valgrind runs it some 50 times slower than the processor would.
"""
import numpy as np

import fastlstm

KINDS = {  # name: constructor and keyword arguments
    "rnn_tanh": (fastlstm.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (fastlstm.RNN, {"nonlinearity": "relu"}),
    "gru": (fastlstm.GRU, {}),
    "lstm": (fastlstm.LSTM, {}),
    "lstmp": (fastlstm.LSTM, {"proj_size": 3}),
    "lstm_peephole": (fastlstm.LSTM, {"peephole": True}),
    "lstmp_peephole": (fastlstm.LSTM, {"proj_size": 3, "peephole": True}),
}
T, B, I, H = 5, 3, 4, 6


def run(layer, x, dy, lengths):
    """Forward and backward of ``layer``: y, dx and the parameter gradients, in a list."""
    layer.zero_grad()
    y, _ = layer(x, lengths=lengths)
    dx, _ = layer.backward(dy)
    return [y, dx] + [layer.grads[name] for name in sorted(layer.grads)]


def main():
    fastlstm.set_num_threads(2)
    rng = np.random.default_rng(0)
    for name, (cls, options) in KINDS.items():
        for dtype in (np.float32, np.float64):
            tol = 1e-4 if dtype == np.float32 else 1e-10
            layers = [cls(I, H, num_layers=2, bidirectional=True, dtype=dtype, backend=backend,
                          seed=1, **options) for backend in ("native", "reference")]
            x = rng.standard_normal((T, B, I)).astype(dtype)
            dy = rng.standard_normal((T, B, 2 * layers[0].output_size)).astype(dtype)
            for lengths in ([5, 2, 4], None):
                got, want = (run(layer, x, dy, lengths) for layer in layers)
                for a, b in zip(got, want):
                    np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=name)
            streams = [cls(I, H, num_layers=2, dtype=dtype, backend=backend, seed=1,
                           **options).stream(B) for backend in ("native", "reference")]
            for t in range(3):
                got, want = (s.step(x[t]) for s in streams)
                np.testing.assert_allclose(got, want, rtol=tol, atol=tol, err_msg=name)
            print(f"{name} {np.dtype(dtype).name}: ok", flush=True)


if __name__ == "__main__":
    main()
