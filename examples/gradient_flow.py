"""The vanishing gradient, measured: the error signal through a tanh RNN and through an LSTM.

Backpropagates from the last output of a sequence of T steps and prints, and plots, how much of
the error signal reaches each earlier step (fastlstm.diagnostics.gradient_flow). The RNN's
recurrent map is contractive under torch's default initialisation, so the signal shrinks by a
constant factor per step; the LSTM's forget gate is opened (its bias set to 5, so f is about
0.993) and its cell carries the signal back almost undiminished.

    python examples/gradient_flow.py --steps 100 --plot gradient_flow.png
"""
import argparse

import numpy as np

import fastlstm
from fastlstm.diagnostics import gradient_flow, plot_gradient_flow


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="sequence length T")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--forget-bias", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="gradient_flow.png", help="PNG path ('' for none)")
    args = parser.parse_args(argv)
    x = np.random.default_rng(args.seed).standard_normal((args.steps, 16, 4))
    H = args.hidden
    rnn = fastlstm.RNN(4, H, dtype=np.float64, seed=args.seed)
    lstm = fastlstm.LSTM(4, H, dtype=np.float64, seed=args.seed)
    lstm.load_state_dict({**lstm.state_dict(), "bias_ih_l0": np.concatenate(
        [lstm.state_dict()["bias_ih_l0"][:H], np.full(H, args.forget_bias),
         lstm.state_dict()["bias_ih_l0"][2 * H:]])})       # gate order i, f, g, o
    flows = {"tanh RNN": gradient_flow(rnn, x), "LSTM": gradient_flow(lstm, x)}
    ratios = {"tanh RNN |dL/dh|": flows["tanh RNN"]["h"][0] / flows["tanh RNN"]["h"][-1],
              "LSTM |dL/dh|": flows["LSTM"]["h"][0] / flows["LSTM"]["h"][-1],
              # dL/dc is zero at the last step (L reads h): the cell's signal from the step before
              "LSTM |dL/dc|": flows["LSTM"]["c"][0] / flows["LSTM"]["c"][-2]}
    print(f"Error signal at the first of {args.steps} steps, relative to the last:")
    for name, ratio in ratios.items():
        print(f"  {name:<18} {ratio:.3g}")
    if args.plot:
        try:
            plot_gradient_flow(flows, args.plot)
            print(f"plot saved to {args.plot}")
        except ImportError as exc:
            print(f"{exc}: no plot")
    return ratios


if __name__ == "__main__":
    main()
