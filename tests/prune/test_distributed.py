"""Two data-parallel processes (torchrun, gloo, CPU) keep identical weights through IteRand's re-draws."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

# Each rank starts from a different global RNG state, trains on its own share of real images
# under DistributedDataParallel, re-draws every 2 steps, and rank 0 saves every rank's state.
WORKER = """
import gc
import os
import sys
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ptl_cli import plugins
from ptl_prune.iterand import IteRand

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
torch.manual_seed(1000 + rank)
data = plugins.get("datasets", "fashion-pack").build(None, "train", False)
pruner = IteRand(sparsity=0.5, rerand_freq=2, rerand_lambda=0.5)
model = pruner.prepare(plugins.get("models", "conv2").build(10, 1, 28, 0.25), seed=3)
sources = [n for n, _ in model.named_buffers() if n.endswith(".sources")]
DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, sources)
ddp = DistributedDataParallel(model)
optimizer = torch.optim.SGD(pruner.trainable_parameters(model), lr=0.5, momentum=0.9)
for step in range(1, 6):
    index = torch.arange(64 * step, 64 * step + 64)[rank::world]
    x, y = data.images[index].float() / 255.0, data.targets[index]
    optimizer.zero_grad()
    F.cross_entropy(ddp(x), y).backward()
    optimizer.step()
    pruner.after_step(model, step)
gathered = [None] * world
dist.all_gather_object(gathered, dict(model.state_dict()))
if rank == 0:
    torch.save({"states": gathered, "events": pruner.events}, sys.argv[1])
# Leave the group with nothing holding it and end without the interpreter's teardown, as
# tests/scale/dist_worker.py does: a DDP reducer or gloo group destroyed at interpreter exit
# aborted a rank now and then (SIGABRT, "terminate called without an active exception").
del ddp, model, optimizer
gc.collect()
dist.barrier()
dist.destroy_process_group()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ranks_draw_identical_weights(tmp_path):
    script, out = tmp_path / "worker.py", tmp_path / "states.pt"
    script.write_text(WORKER)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_addr", "127.0.0.1", "--master_port", str(_free_port()), str(script), str(out)]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = torch.load(out, weights_only=True)
    assert result["events"] == [2, 4]
    first, second = result["states"]
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # weights, scores, sources, all
    assert sum(int((v > 0).sum()) for k, v in first.items() if k.endswith(".sources")) > 0
