"""Does top-down feedback help a character language model? A stacked LSTM against a feedback LSTM
of the same parameter count, trained side by side.

Both models are char_lm.py's (one-hot characters, a two-layer LSTM, a linear read-out), on its
text (Python's pydoc topics, the last 5% held out), with its truncated BPTT, Adam and cosine
schedule, the same seed, data order and number of steps. The second model's LSTM has
``feedback="top"``: at every step its first layer also reads the top layer's output of the
step before, through one more weight matrix, ``weight_fb_l0`` (4H x H). To pay for that matrix
its hidden size is smaller, chosen so that the two parameter counts (LSTM and read-out) are as
close as hidden sizes allow; both counts are printed.

The result is reported as it comes, whichever model wins: held-out bits per character of both,
and their difference. The default run is short (about a minute on 2 cores) and says little;
``--long`` trains for longer, which is what a conclusion needs (the gated-feedback RNN paper,
Chung et al. 2015, reports its gains after days of training, with gates on the feedback).

    python examples/feedback_lm.py               # short
    python examples/feedback_lm.py --long        # 2000 steps of 100 x 32 characters, H=256
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np

import fastlstm
from fastlstm import optim

sys.path.insert(0, str(Path(__file__).resolve().parent))
import char_lm  # noqa: E402  (examples/ is not a package: char_lm.py is its neighbour)


class Model(char_lm.CharLM):
    """char_lm's model with the LSTM's ``feedback`` and ``backend`` chosen."""

    def __init__(self, vocab_size, hidden, num_layers, seed, feedback=None, backend="native"):
        self.lstm = fastlstm.LSTM(vocab_size, hidden, num_layers, seed=seed, feedback=feedback,
                                  backend=backend)
        self.head = fastlstm.Linear(hidden, vocab_size, seed=seed)
        self.modules = [self.lstm, self.head]
        self.onehot = np.eye(vocab_size, dtype=np.float32)

    def parameter_count(self):
        return sum(p.size for m in self.modules for p in m.parameters())


def count(vocab_size, hidden, num_layers, feedback):
    """The parameters of a Model, without building one."""
    return Model(vocab_size, hidden, num_layers, 0, feedback, "reference").parameter_count()


def matching_hidden(vocab_size, hidden, num_layers):
    """The feedback model's hidden size whose parameter count is nearest the stacked model's."""
    target = count(vocab_size, hidden, num_layers, None)
    return min(range(1, hidden + 1),
               key=lambda h: abs(count(vocab_size, h, num_layers, "top") - target))


def train(model, args, streams, length, heldout_ids, label):
    optimizer = optim.Adam(model.modules, lr=args.lr)
    hx, lo, window, start = None, 0, [], time.perf_counter()
    for step in range(1, args.steps + 1):
        if lo + args.seq_len + 1 > length:          # the end of the streams: start them again
            hx, lo = None, 0
        chunk = streams[lo:lo + args.seq_len + 1]
        optimizer.lr = args.lr * 0.5 * (1 + np.cos(np.pi * (step - 1) / args.steps))
        bits, hx = char_lm.train_chunk(model, optimizer, chunk[:-1], chunk[1:], hx, args.clip)
        window.append(bits)
        lo += args.seq_len
        if step % args.report_every == 0 or step == args.steps:
            print(f"  {label:<9} step {step:>5}  training {np.mean(window):.3f} bits/char  "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
            window = []
    heldout = char_lm.evaluate(model, heldout_ids)
    return heldout, time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--long", action="store_true",
                        help="a longer run: 2000 steps, chunks of 100 x 32, hidden 256")
    parser.add_argument("--steps", type=int, default=200, help="training chunks")
    parser.add_argument("--hidden", type=int, default=64, help="the stacked LSTM's units")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=50, help="characters per chunk")
    parser.add_argument("--batch", type=int, default=16, help="parallel streams of the text")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--heldout-chars", type=int, default=20000,
                        help="characters of the held-out text evaluated (0 for all)")
    parser.add_argument("--report-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="native", choices=("native", "reference"))
    args = parser.parse_args(argv)
    if args.long:
        args.steps, args.hidden, args.seq_len, args.batch = 2000, 256, 100, 32
        args.heldout_chars, args.report_every = 0, 200
    if args.layers < 2:
        parser.error("feedback from the top layer needs --layers 2 or more")

    vocab, ids = char_lm.encode(char_lm.load_text())
    split = len(ids) - int(len(ids) * char_lm.HELD_OUT)
    train_ids, heldout_ids = ids[:split], ids[split:]
    if args.heldout_chars:
        heldout_ids = heldout_ids[:args.heldout_chars]
    length = len(train_ids) // args.batch
    streams = train_ids[:args.batch * length].reshape(args.batch, length).T
    V = len(vocab)
    fb_hidden = matching_hidden(V, args.hidden, args.layers)
    models = {"stacked": Model(V, args.hidden, args.layers, args.seed, None, args.backend),
              "feedback": Model(V, fb_hidden, args.layers, args.seed, "top", args.backend)}
    print(f"{V} characters; {args.steps} steps of {args.seq_len} x {args.batch} characters, "
          f"seed {args.seed}, held out: {len(heldout_ids):,} characters")
    for label, model in models.items():
        print(f"  {label:<9} LSTM {model.lstm.hidden_size} units x {args.layers} layers"
              f"{', feedback top -> 0' if model.lstm.feedback else ''}: "
              f"{model.parameter_count():,} parameters")
    results = {}
    for label, model in models.items():
        bits, seconds = train(model, args, streams, length, heldout_ids, label)
        results[label] = {"heldout_bits": bits, "seconds": seconds,
                          "parameters": model.parameter_count(),
                          "hidden": model.lstm.hidden_size}
    a, b = results["stacked"]["heldout_bits"], results["feedback"]["heldout_bits"]
    for label, r in results.items():
        print(f"{label:<9} held-out {r['heldout_bits']:.3f} bits/char  ({r['parameters']:,} "
              f"parameters, H={r['hidden']}, {r['seconds']:.0f} s)")
    winner = "feedback" if b < a else "stacked" if a < b else "neither"
    print(f"difference (feedback - stacked): {b - a:+.3f} bits/char; better here: {winner}"
          f"{'' if args.long else ' (a short run: try --long before concluding)'}")
    results["unigram_bits"] = char_lm.unigram_bits(train_ids, V)
    return results


if __name__ == "__main__":
    main()
