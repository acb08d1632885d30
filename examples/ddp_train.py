"""Train a PyTorch model whose LSTM runs on fastlstm over several processes, with DDP.

The task is the adding problem: a sequence of (value, marker) pairs, two of them marked, and the
target is the sum of the two marked values. Predicting the mean (1.0) gives an MSE of 1/6 = 0.167;
an LSTM that learns the task goes far below.

One process, on this machine:

    python examples/ddp_train.py

Two processes on this machine (torchrun starts them, gloo connects them over loopback):

    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py

The same script across machines: start this on each of N machines, with its own node rank:

    torchrun --nnodes=N --node_rank=K --nproc_per_node=2 \\
        --master_addr=FIRST_MACHINE --master_port=29500 examples/ddp_train.py

Every process draws the same global batch from the same seed and trains on its own slice of it;
DistributedDataParallel averages the gradients, so every process takes the step the whole batch
would give. Give each process its own cores: torchrun sets OMP_NUM_THREADS=1 when it starts
several processes per machine, and fastlstm and torch both follow it.
"""
import argparse
import gc
import os
import time

import torch
import torch.distributed as dist

import fastlstm
import fastlstm.torch


def adding_batch(gen, batch, steps):
    """Inputs (batch, steps, 2) and targets (batch, 1) of the adding problem."""
    values = torch.rand(batch, steps, generator=gen)
    markers = torch.zeros(batch, steps)
    rows = torch.arange(batch)
    first = torch.randint(0, steps // 2, (batch,), generator=gen)
    second = torch.randint(steps // 2, steps, (batch,), generator=gen)
    markers[rows, first] = markers[rows, second] = 1
    target = (values * markers).sum(1, keepdim=True)
    return torch.stack([values, markers], 2), target


class Model(torch.nn.Module):
    def __init__(self, hidden):
        super().__init__()
        self.lstm = torch.nn.LSTM(2, hidden, batch_first=True)
        self.head = torch.nn.Linear(hidden, 1)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y[:, -1])


def train(args, rank, world):
    """Train on this rank's share of every batch; rank 0 prints the loss of the whole batch."""
    share = args.batch // world
    torch.manual_seed(0)                   # DDP copies rank 0's weights to the others anyway
    model = fastlstm.torch.convert(Model(args.hidden))
    model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)  # the same global batches on every rank
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        x, target = adding_batch(gen, args.batch, args.seq_len)
        mine = slice(rank * share, (rank + 1) * share)
        loss = torch.nn.functional.mse_loss(model(x[mine]), target[mine])
        optimizer.zero_grad()
        loss.backward()                    # DDP averages the gradients over the ranks here
        optimizer.step()
        if step % 100 == 0 or step == args.steps:
            dist.all_reduce(loss)
            if rank == 0:
                print(f"step {step:5d}  loss {loss.item() / world:.4f}  (baseline 0.167)  "
                      f"{time.perf_counter() - start:.1f} s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    parser.add_argument("--seq-len", type=int, default=50)
    parser.add_argument("--batch", type=int, default=64, help="global batch, split over ranks")
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()

    if "RANK" in os.environ:          # started by torchrun, which says where the others are
        dist.init_process_group("gloo")
    else:                             # a group of one process
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch % world:
        raise SystemExit(f"--batch {args.batch} must be a multiple of the {world} processes")
    train(args, rank, world)
    if rank == 0:
        print(f"{world} process(es), fastlstm {fastlstm.__version__} on "
              f"{fastlstm.get_num_threads()} thread(s) each")
    # DistributedDataParallel sits in reference cycles: collect it while Python is fully alive.
    # Left to the collection at exit, gloo's worker threads can abort the process (torch 2.13).
    gc.collect()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
