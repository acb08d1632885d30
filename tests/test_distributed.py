"""fastlstm.torch under torch.nn.parallel.DistributedDataParallel, gloo over loopback.

Two processes each training on half of every batch must reach the weights one process reaches on
the whole batch: DDP averages the two halves' gradients, and the mean of the halves' mean losses
is the whole batch's mean loss. float64 and a few SGD steps keep the two runs' difference to
rounding (they sum the batch in different orders): 1e-10 relative to max(1, |weight|).
"""
import gc
import os
from pathlib import Path

import pytest
from helpers import assert_close, run_python

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
mp = pytest.importorskip("torch.multiprocessing")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("this torch has no gloo backend", allow_module_level=True)

import fastlstm  # noqa: E402
import fastlstm.torch  # noqa: E402

# the single-process run shares the machine with the other tests
pytestmark = pytest.mark.usefixtures("torch_and_fastlstm_on_one_thread")
ROOT = Path(__file__).resolve().parents[1]
STEPS, BATCH, T, I = 3, 8, 7, 3


class Model(torch.nn.Module):
    """Every cell, bidirectional and stacked, then a Linear head."""

    def __init__(self):
        super().__init__()
        self.lstm = torch.nn.LSTM(I, 6, num_layers=2, bidirectional=True, proj_size=3)
        self.gru = torch.nn.GRU(6, 5)
        self.rnn = torch.nn.RNN(5, 4, nonlinearity="relu")
        self.head = torch.nn.Linear(4, 1)

    def forward(self, x):
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        y, _ = self.rnn(y)
        return self.head(y[-1])


def train(rank, world_size, model):
    """STEPS of SGD on this rank's share of fixed batches; returns the final parameters."""
    gen = torch.Generator().manual_seed(1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    share = BATCH // world_size
    for _ in range(STEPS):
        x = torch.randn(T, BATCH, I, dtype=torch.float64, generator=gen)
        target = torch.randn(BATCH, 1, dtype=torch.float64, generator=gen)
        mine = slice(rank * share, (rank + 1) * share)
        loss = torch.nn.functional.mse_loss(model(x[:, mine]), target[mine])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def new_model():
    torch.manual_seed(0)
    return fastlstm.torch.convert(Model().double())


def rank_main(rank, world_size, store_file, out_dir):
    """One rank of the DDP run (started by torch.multiprocessing.spawn)."""
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"      # loopback only
    torch.set_num_threads(1)
    fastlstm.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank,
                            world_size=world_size)
    params = train(rank, world_size, torch.nn.parallel.DistributedDataParallel(new_model()))
    torch.save({name.removeprefix("module."): p for name, p in params.items()},
               Path(out_dir) / f"rank{rank}.pt")
    # as examples/ddp_train.py says: free the DDP module before the process exits
    gc.collect()
    dist.destroy_process_group()


def test_two_ranks_on_half_batches_reach_the_weights_of_one_process(tmp_path):
    mp.spawn(rank_main, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2,
             join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    one = train(0, 1, new_model())
    start = new_model().state_dict()
    for name, p in one.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name}: the ranks differ"
        assert_close(ranks[0][name].numpy(), p.numpy(), 1e-10, name)
        assert not torch.equal(p, start[name]), f"{name} did not train"


def test_example_script_under_torchrun(tmp_path):
    """examples/ddp_train.py, as the README runs it, on two processes for a few steps (torchrun
    leaves a log directory in TMPDIR: the test's own)."""
    result = run_python(
        ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(ROOT / "examples" / "ddp_train.py"), "--steps", "20", "--seq-len", "10",
         "--batch", "8", "--hidden", "8"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "GLOO_SOCKET_IFNAME": "lo", "TMPDIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step    20  loss" in result.stdout
    assert "2 process(es)" in result.stdout
