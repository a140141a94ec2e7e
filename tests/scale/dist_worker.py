"""Run under torchrun (2 processes, gloo): checks of the engine's data-parallel plumbing.

Each check asserts on every rank; the process exits non-zero at the first failure, and prints
``ok <name> rank <r>`` for each passed check (the test counts those lines).
"""

from __future__ import annotations

import gc
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from ptl_cli.engine import distributed
from ptl_cli.engine.checkpoint import CheckpointStore
from ptl_cli.engine.compute import prepare_model
from ptl_cli.errors import RunFailure, UserError
from ptl_cli.recipes import Compute


def ok(name: str, info: distributed.DistInfo) -> None:
    print(f"ok {name} rank {info.rank}", flush=True)


class Net(nn.Module):
    """A BatchNorm-free net with an int16 buffer (like IteRand's ``sources``) and a float one."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 3)
        self.register_buffer("sources", torch.zeros(4, dtype=torch.int16))
        self.register_buffer("running", torch.zeros(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def main() -> None:
    info = distributed.from_env()
    assert info.world_size == 2, info
    device = torch.device("cpu")
    distributed.init(info, device)

    # any_rank: a flag raised on one rank is seen by all
    assert distributed.any_rank(info, info.rank == 1) is True
    assert distributed.any_rank(info, False) is False
    ok("any_rank", info)

    # mean over ranks: numbers and tensors, one collective
    means = distributed.mean_over_ranks(info, {"a": float(info.rank), "b": torch.tensor(2.0 * info.rank)})
    assert means == {"a": 0.5, "b": 1.0}, means
    ok("mean_over_ranks", info)

    assert distributed.gather_objects(info, f"r{info.rank}") == ["r0", "r1"]
    assert distributed.broadcast_object(info, info.rank) == 0
    ok("objects", info)

    # gather_global_batch undoes rank_share: the global batch in its own order, rows of any shape
    whole = torch.arange(12).reshape(6, 2) * 10
    share = distributed.rank_share(whole, info)
    assert torch.equal(distributed.gather_global_batch(share), whole)
    flags = torch.tensor([True, False, True, True, False, False])
    assert torch.equal(distributed.gather_global_batch(distributed.rank_share(flags, info)), flags)
    ok("gather_global_batch", info)

    # work split in rounds: every rank makes the same number of rounds, no item twice
    rounds = distributed.work_rounds(list(range(5)), info)
    assert rounds == ([0, 2, 4] if info.rank == 0 else [1, 3, None]), rounds
    assert distributed.work_rounds([], info) == []
    ok("work_rounds", info)

    # DDP via prepare_model: int16 buffers are not broadcast (gloo cannot), gradients are averaged
    torch.manual_seed(0)
    model, train_model = prepare_model(Net(), Compute(), device, info)
    reference = Net()
    reference.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 1, 8, 8, generator=gen), torch.randint(0, 3, (8,), generator=gen)
    nn.functional.cross_entropy(train_model(x[info.rank :: 2]), y[info.rank :: 2]).backward()
    nn.functional.cross_entropy(reference(x), y).backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name
    ok("ddp_gradients_equal_global_batch", info)

    # an SSL algorithm's heads (ptl_cli.engine.heads): wrapped before DDP, `with_heads=True` passes
    # through it, and over two steps the net's and the head's gradients are the global batch's
    import copy

    from ptl_cli.engine.heads import WithHeads

    torch.manual_seed(0)
    wrapped = WithHeads(Net(), {"proj": nn.Linear(4 * 6 * 6, 5)})
    single = copy.deepcopy(wrapped)
    headed, train_headed = prepare_model(wrapped, Compute(), device, info)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (headed, single)]
    for _ in range(2):
        for net, share, opt in (
            (train_headed, slice(info.rank, None, 2), optimizers[0]),
            (single, slice(None), optimizers[1]),
        ):
            opt.zero_grad()
            out = net(x[share], with_heads=True)
            (nn.functional.cross_entropy(out["logits"], y[share]) + out["proj"].pow(2).mean()).backward()
        for (name, p), q in zip(headed.named_parameters(), single.parameters(), strict=True):
            assert p.grad is not None and torch.allclose(p.grad, q.grad, atol=1e-6), name
        for opt in optimizers:
            opt.step()
    ok("ddp_heads", info)

    # CoMatch's memory and alignment queues (ptl_ssl.comatch) are filled from the global batch:
    # after three steps with a memory queue of one global batch and an alignment queue of two,
    # every rank holds what one process holds, computed here from the whole batch
    from ptl_ssl.comatch import CoMatch
    from ptl_ssl.distalign import align

    torch.manual_seed(0)
    algo = CoMatch(3, queue_batch=1, da_len=2)
    coupled = WithHeads(Net(), algo.heads(4 * 6 * 6))
    batches = [
        {name: x + 0.1 * step * (i + 1) for i, name in enumerate(("weak", "strong", "strong:1"))}
        for step in range(3)
    ]
    mine = slice(info.rank, None, 2)
    for step, views in enumerate(batches):
        unlabeled = {name: view[mine] for name, view in views.items()}
        algo.loss(coupled, {"weak": x[mine]}, y[mine], unlabeled, step, 3)
    with torch.no_grad():
        means = [torch.softmax(coupled(views["weak"]), dim=1).mean(dim=0) for views in batches]
        assert torch.allclose(algo.prior_queue, torch.stack([means[2], means[1]]), atol=1e-6)
        embed = [
            nn.functional.normalize(coupled(v, with_heads=True)["proj"], dim=1)
            for v in (batches[2]["weak"], x)
        ]
        assert torch.allclose(algo.queue_feats, torch.cat(embed), atol=1e-6)
        probs = align(
            torch.softmax(coupled(batches[2]["weak"]), dim=1),
            algo.prior_queue.mean(dim=0),
            torch.full((3,), 1 / 3),
        )
        assert torch.allclose(
            algo.queue_probs, torch.cat([probs, nn.functional.one_hot(y, 3).float()]), atol=1e-6
        )
    assert int(algo.queue_ptr) == 0 and int(algo.prior_ptr) == 1
    ok("comatch_queues", info)

    # SimMatch's labeled bank (ptl_ssl.simmatch) is written from the global batch by labeled
    # index: after one step every rank holds the bank one process would, computed here from the
    # whole batch, and the second step (bank full) gives both ranks the same state
    from ptl_ssl.simmatch import SimMatch

    torch.manual_seed(0)
    sim = SimMatch(3, num_labeled=8, proj_size=4, da_len=2)
    start = sim.bank.clone()
    banked = WithHeads(Net(), sim.heads(4 * 6 * 6))
    index = torch.arange(8)
    for step in range(2):
        views = {"weak": x[mine] + 0.1 * (step + 1), "strong": x[mine] - 0.1 * (step + 1)}
        _, logs = sim.loss(banked, {"weak": x[mine]}, y[mine], views, step, 2, labeled_index=index[mine])
        if step == 0:
            with torch.no_grad():
                z = nn.functional.normalize(banked(x, with_heads=True)["proj"], dim=1)
            expected = nn.functional.normalize(0.7 * start + 0.3 * z.t(), dim=1)
            assert torch.allclose(sim.bank, expected, atol=1e-6) and torch.equal(sim.bank_labels, y)
            assert bool(sim.filled.all())
    assert float(logs["loss_in"]) > 0
    states = distributed.gather_objects(info, sim.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    ok("simmatch_bank", info)

    # verify_in_sync: silent on equal weights, a clear failure on every rank when they differ
    digest = distributed.verify_in_sync(info, model, "test")
    assert distributed.gather_objects(info, digest)[0] == digest
    if info.rank == 1:
        with torch.no_grad():
            model.fc.bias[0] += 1e-7
    try:
        distributed.verify_in_sync(info, model, "step 3")
    except RunFailure as exc:
        assert "rank(s) [1]" in str(exc) and "step 3" in str(exc), exc
    else:
        raise AssertionError("diverged ranks were not detected")
    ok("verify_in_sync", info)

    # resume: rank 0 picks the newest *readable* checkpoint and every rank loads that file
    root = Path(distributed.broadcast_object(info, tempfile.mkdtemp() if info.is_main else None))
    store = CheckpointStore(root, keep=3, warn=lambda m: None)
    if info.is_main:
        store.save({"step": 4}, 4)
        store.save({"step": 8}, 8)
        (root / "step-000000012.pt").write_bytes(b"torn")
    distributed.barrier(info)
    from ptl_cli.engine.context import RunContext
    from ptl_cli.engine.interrupt import InterruptGuard

    ctx = RunContext(
        run=None,
        recipe=None,
        device=device,
        precision=None,
        console=None,
        progress=None,
        checkpoints=store,
        guard=InterruptGuard(),
        dist=info,
        resuming=True,
    )
    assert ctx.load_checkpoint() == {"step": 8}
    ok("load_checkpoint", info)

    # a stop request on one rank stops all, agreed at the next poll (an asynchronous vote, so no
    # step waits for a round trip); a NaN on one rank fails all
    if info.rank == 1:
        ctx.guard.requested = "SIGTERM"
    assert ctx.should_stop() is False  # the vote is under way
    ctx.guard.requested = None
    assert ctx.should_stop() is True  # every rank learns it at the same poll
    assert ctx.should_stop() is False
    try:
        ctx.check_finite(float("nan") if info.rank == 0 else 1.0, "step 5")
    except RunFailure as exc:
        assert "step 5" in str(exc)
    else:
        raise AssertionError("a NaN on rank 0 must stop rank 1 too")
    ok("collective_checks", info)

    # global means: what one process with the global batch would log
    assert ctx.global_mean(loss=torch.tensor([1.0, 3.0])[info.rank]) == {"loss": 2.0}
    ok("global_mean", info)

    # run creation errors on rank 0 reach every rank
    from ptl_cli.launch import create_on_main

    def create():
        raise UserError("out already holds a run")

    try:
        create_on_main(info, create)
    except UserError as exc:
        assert "already holds" in str(exc)
    else:
        raise AssertionError("rank 0's error must reach every rank")
    ok("create_on_main", info)
    # Leave the group as the engine does, with nothing holding it: a DDP reducer or a gloo group
    # torn down during interpreter exit aborted both processes ("terminate called without an
    # active exception") after every check had passed.
    del model, train_model, reference, headed, train_headed, single, optimizers
    gc.collect()
    distributed.shutdown(info)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        import traceback

        traceback.print_exc()
        sys.exit(1)
    # Every check passed and was printed: end without the interpreter's teardown, where torch's
    # and gloo's C++ destructors still aborted the process now and then (SIGABRT, exit -6).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
