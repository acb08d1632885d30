"""Writes the cases of the C harness (harness.c): for every cell and option, in float32 and
float64, the inputs of one forward and backward call and the NumPy reference's outputs, each case
one binary file. The harness runs the same calls through every build of the kernels it has (the
NEON build under qemu, say) and compares.

Usage: python tools/harness/write_cases.py DIR

A case file: 8 int64 (cell: 0 rnn tanh, 1 rnn relu, 2 lstm, 3 gru; T, B, I, H, P; peephole;
1 for float64), then arrays of that dtype, C order, in the order of ARRAYS below (each absent
one, for the cells without it, written as nothing); inputs first, then the reference's results.
"""
import os
import sys

import numpy as np

from fastlstm import reference

# The harness reads them in this order (harness.c, struct case).
ARRAYS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr", "w_peephole", "dy", "dh_n",
          "dc_n", "y", "h_n", "c_n", "dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh",
          "dw_hr", "dw_peephole")
KINDS = {"rnn_tanh": (0, False, False), "rnn_relu": (1, False, False), "lstm": (2, False, False),
         "lstmp": (2, True, False), "lstm_peephole": (2, False, True),
         "lstmp_peephole": (2, True, True), "gru": (3, False, False)}
# Steps of 5 rows (a part's rows leave remainders of every build's tiles), hidden sizes that
# fill no panel exactly.
T, B, I, H = 9, 5, 13, 21


def case(kind, dtype, rng):
    code, projects, peephole = KINDS[kind]
    G = {0: 1, 1: 1, 2: 4, 3: 3}[code]
    P = H // 2 if projects else H
    draw = lambda *shape: (0.3 * rng.standard_normal(shape)).astype(dtype)  # noqa: E731
    a = dict(x=draw(T, B, I), h0=draw(B, P), w_ih=draw(G * H, I), w_hh=draw(G * H, P),
             b_ih=draw(G * H), b_hh=draw(G * H), dy=draw(T, B, P), dh_n=draw(B, P))
    if code == 2:
        a.update(c0=draw(B, H), dc_n=draw(B, H))
        a.update(w_hr=draw(P, H) if projects else None, w_peephole=draw(3 * H) if peephole
                 else None)
        y, a["h_n"], a["c_n"], ctx = reference.lstm_forward(
            a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"],
            w_hr=a["w_hr"], w_peephole=a["w_peephole"])
        grads = reference.lstm_backward(ctx, a["dy"], a["dh_n"], a["dc_n"])
    else:
        if code == 3:
            y, a["h_n"], ctx = reference.gru_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"],
                                                     a["b_ih"], a["b_hh"])
            grads = reference.gru_backward(ctx, a["dy"], a["dh_n"])
        else:
            y, a["h_n"], ctx = reference.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"],
                                                     a["b_ih"], a["b_hh"],
                                                     "relu" if code == 1 else "tanh")
            grads = reference.rnn_backward(ctx, a["dy"], a["dh_n"])
    a["y"] = y
    a.update({f"d{name}": g for name, g in grads.items()})
    header = np.array([code, T, B, I, H, P, peephole, dtype == np.float64], np.int64)
    return header.tobytes() + b"".join(np.ascontiguousarray(a[n], dtype).tobytes()
                                       for n in ARRAYS if a.get(n) is not None)


def main(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(2026)
    for kind in KINDS:
        for dtype in (np.float32, np.float64):
            name = f"{kind}_{np.dtype(dtype).name}.case"
            with open(os.path.join(out, name), "wb") as f:
                f.write(case(kind, dtype, rng))


if __name__ == "__main__":
    main(sys.argv[1])
