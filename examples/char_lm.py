"""A character-level language model of Python's own documentation, trained with fastlstm alone.

The text is the pydoc topics that ship with every Python (``pydoc_data.topics``, about 465,000
characters of English about the language, with code samples), so nothing is downloaded. The last
5% is held out. The model reads one character at a time and predicts the next: a one-hot input
(the LSTM's input weights are then the character embedding), an LSTM, and a linear read-out to
logits over the characters. It trains by truncated backpropagation through time: the text is cut
into ``--batch`` contiguous streams, read ``--seq-len`` characters at a time, and the LSTM's state
is carried from each chunk into the next while the gradient stops at the chunk's start. Adam's
learning rate decays from ``--lr`` to zero along a half cosine over the steps.

The score is the held-out cross-entropy in bits per character. The baseline is the unigram
model, which knows only how often each character occurs: its score is the entropy of the
character distribution, about 4.7 bits. Every ``--sample-every`` steps the model writes a sample,
one character at a time through ``layer.stream(1)``, to show what it has learned so far.

    python examples/char_lm.py                          # a few minutes on 2 cores
    python examples/char_lm.py --steps 300 --hidden 128 --plot ''

Shows a progress bar if tqdm is installed and saves a plot if matplotlib is.
"""
import argparse
import time

import numpy as np

import fastlstm
from fastlstm.progress import progress
from fastlstm import losses, optim

HELD_OUT = 0.05        # the fraction of the text, at its end, kept for evaluation
EVAL_STREAMS = 16      # the held-out text is read as this many contiguous streams in parallel
LN2 = np.log(2)


def load_text():
    """The pydoc topics, joined in the order of their names, as one string."""
    from pydoc_data.topics import topics
    return "".join(topics[name] for name in sorted(topics))


def encode(text):
    """The vocabulary (the sorted distinct characters) and the text as indices into it."""
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    codes, ids = np.unique(codes, return_inverse=True)
    return [chr(c) for c in codes], ids


def unigram_bits(ids, vocab_size):
    """The entropy, in bits, of the character frequencies of ``ids``."""
    p = np.bincount(ids, minlength=vocab_size) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


class CharLM:
    """One-hot characters -> LSTM -> Linear to logits over the vocabulary."""

    def __init__(self, vocab_size, hidden, num_layers, seed):
        self.lstm = fastlstm.LSTM(vocab_size, hidden, num_layers, seed=seed)
        self.head = fastlstm.Linear(hidden, vocab_size, seed=seed)
        self.modules = [self.lstm, self.head]
        self.onehot = np.eye(vocab_size, dtype=np.float32)

    def logits(self, ids, hx=None):
        """ids (T, B) -> logits (T, B, vocab_size) and the LSTM's final states."""
        y, hx = self.lstm(self.onehot[ids], hx)
        return self.head(y), hx

    def train(self, mode=True):
        for module in self.modules:
            module.train(mode)


def train_chunk(model, optimizer, inputs, targets, hx, clip):
    """One step of truncated BPTT on a chunk: inputs and targets (T, B), ``hx`` the states the
    last chunk ended with. Returns the chunk's loss in bits per character and its final states,
    for the next chunk."""
    logits, hx = model.logits(inputs, hx)
    loss, dlogits = losses.cross_entropy(logits, targets)
    optimizer.zero_grad()
    model.lstm.backward(model.head.backward(dlogits))     # hx is a constant: no dhx
    optim.clip_grad_norm(model.modules, clip)
    optimizer.step()
    return loss / LN2, hx


def evaluate(model, ids):
    """The model's cross-entropy on ``ids`` in bits per character, reading them as
    EVAL_STREAMS contiguous streams, each from a zero state, in one forward pass."""
    n = (len(ids) - 1) // EVAL_STREAMS
    inputs = ids[:EVAL_STREAMS * n].reshape(EVAL_STREAMS, n).T
    targets = ids[1:EVAL_STREAMS * n + 1].reshape(EVAL_STREAMS, n).T
    model.train(False)
    loss, _ = losses.cross_entropy(model.logits(inputs)[0], targets)
    model.train()
    return loss / LN2


def sample(model, vocab, prime, length, temperature, rng):
    """``length`` characters drawn one at a time after ``prime``, each from the softmax of the
    logits divided by ``temperature`` (below 1: safer, more repetitive choices)."""
    index = {c: k for k, c in enumerate(vocab)}
    stream = model.lstm.stream(1)       # a copy of the current weights, fast steps of one input
    model.head.eval()
    for c in prime:
        h = stream.step(model.onehot[index[c]][None])
    chars = []
    for _ in range(length):
        z = model.head(h)[0].astype(np.float64) / temperature
        p = np.exp(z - z.max())
        k = rng.choice(len(vocab), p=p / p.sum())
        chars.append(vocab[k])
        h = stream.step(model.onehot[k][None])
    model.head.train()
    return "".join(chars)


def plot(curve, unigram, path):
    """Training and held-out bits per character over the steps, against the unigram baseline."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    steps, train_bits, heldout_bits = zip(*curve)
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    ax.plot(steps, train_bits, label="training (mean since the last point)")
    ax.plot(steps, heldout_bits, marker="o", label="held-out (last 5% of the text)")
    ax.axhline(unigram, color="gray", linestyle="--", label=f"unigram baseline {unigram:.2f}")
    ax.set_xlabel("training step")
    ax.set_ylabel("bits per character")
    ax.set_title("Character LSTM on the pydoc topics")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot saved to {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1500, help="training chunks")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=100, help="characters per chunk")
    parser.add_argument("--batch", type=int, default=32, help="parallel streams of the text")
    parser.add_argument("--lr", type=float, default=1e-2,
                        help="Adam's initial learning rate, decayed to 0 on a half cosine")
    parser.add_argument("--clip", type=float, default=1.0, help="gradient norm limit")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--sample-every", type=int, default=500)
    parser.add_argument("--sample-len", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--prime", default="The ", help="text the samples start from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default="char_lm.png", help="PNG path ('' for none)")
    args = parser.parse_args(argv)

    vocab, ids = encode(load_text())
    if not set(args.prime) <= set(vocab):
        parser.error(f"--prime has characters that are not in the text: "
                     f"{sorted(set(args.prime) - set(vocab))}")
    split = len(ids) - int(len(ids) * HELD_OUT)
    train_ids, heldout_ids = ids[:split], ids[split:]
    unigram = unigram_bits(train_ids, len(vocab))
    # The training text as `batch` contiguous streams side by side: column b is stream b.
    length = len(train_ids) // args.batch
    streams = train_ids[:args.batch * length].reshape(args.batch, length).T
    print(f"{len(ids):,} characters, {len(vocab)} distinct; training on {split:,}, holding out "
          f"{len(heldout_ids):,}. Unigram baseline: {unigram:.3f} bits/char")
    print(f"LSTM {args.hidden} units x {args.layers} layer(s), chunks of {args.seq_len} x "
          f"{args.batch} streams, Adam lr {args.lr} (cosine decay), {args.steps} steps")

    model = CharLM(len(vocab), args.hidden, args.layers, args.seed)
    optimizer = optim.Adam(model.modules, lr=args.lr)
    rng = np.random.default_rng(args.seed)
    curve, window, hx, lo = [], [], None, 0
    start = time.perf_counter()
    steps, write = progress(range(1, args.steps + 1), "training", unit="step")
    for step in steps:
        if lo + args.seq_len + 1 > length:          # the end of the streams: start them again
            hx, lo = None, 0
        chunk = streams[lo:lo + args.seq_len + 1]
        optimizer.lr = args.lr * 0.5 * (1 + np.cos(np.pi * (step - 1) / args.steps))
        bits, hx = train_chunk(model, optimizer, chunk[:-1], chunk[1:], hx, args.clip)
        window.append(bits)
        lo += args.seq_len
        if step % args.eval_every == 0 or step == args.steps:
            curve.append((step, float(np.mean(window)), evaluate(model, heldout_ids)))
            window = []
            write(f"step {step:>5}  training {curve[-1][1]:.3f}  held-out {curve[-1][2]:.3f} "
                  f"bits/char  {time.perf_counter() - start:.0f} s")
        if step % args.sample_every == 0 or step == args.steps:
            text = sample(model, vocab, args.prime, args.sample_len, args.temperature, rng)
            write(f"--- sample at step {step} ---\n{args.prime}{text}\n---")
    seconds = time.perf_counter() - start
    _, train_bits, heldout_bits = curve[-1]
    print(f"Held-out {heldout_bits:.3f} bits/char after {args.steps} steps "
          f"({args.steps * args.seq_len / length:.1f} passes over the training "
          f"text, {seconds:.0f} s); unigram baseline {unigram:.3f}")
    if args.plot:
        plot(curve, unigram, args.plot)
    return {"steps": args.steps, "train_bits": train_bits, "heldout_bits": heldout_bits,
            "unigram_bits": unigram, "seconds": seconds, "sample": text}


if __name__ == "__main__":
    main()
