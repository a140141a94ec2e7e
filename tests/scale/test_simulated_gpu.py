"""ptl's GPU paths on a simulated GPU (:mod:`ptl_cli.testing_gpu`): fake ``cuda`` tensors, the
driver-only runtime stood in for, and a recorder of host syncs, device mismatches, CPU generators
feeding CUDA draws and stream races.

Three kinds of tests: the simulator catches each kind of bug (a mutation of each, run here); each
training step ptl has (every pruner, the IteRand re-draw, every SSL algorithm with its EMA, KD, PP)
runs on ``cuda:0`` in fp32, bf16 and fp16 with zero host syncs; and whole ``ptl prune`` and
``ptl transfer`` runs through the CLI on ``--device cuda``, where every sync that remains is one
the code declares (``host_sync(reason)``) at a log record, a checkpoint, an evaluation or setup.
"""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest
import torch

from ptl_cli import plugins, testing
from ptl_cli.testing_gpu import SimulatedGPU, available, python_backward

pytestmark = pytest.mark.skipif(not available(), reason="the simulated GPU needs a CUDA build of torch")

CUDA = torch.device("cuda", 0)

#: the reasons a whole run may read device values on the host, none of them inside a step
DECLARED = {
    "log record",
    "checkpoint",
    "evaluation result",
    "final metrics",
    "final model",
    "moving the model to its device, once",
    "loading the source generator onto its device, once",
    "loading the source classifier onto its device, once",
    "a stage's trained weights to disk",
    "pool shard to disk",
    "source-classifier outputs for a pool shard",
}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """One intra-op thread (the suite shares two cores)."""


# -- the simulator catches each kind of bug -------------------------------------------------------
def test_an_index_less_set_device_raises_as_torch_2_14_does():
    with SimulatedGPU(devices=2):
        with pytest.raises(ValueError, match="Expected a torch.device with a specified index"):
            torch.cuda.set_device(torch.device("cuda"))
        torch.cuda.set_device(torch.device("cuda", 1))
        assert torch.cuda.current_device() == 1
        with pytest.raises(ValueError, match="Invalid device id 2"):
            torch.cuda.set_device(2)


def test_devices_resolve_with_an_index_and_a_users_cuda_1_becomes_current():
    """The first-batch crash: ``--device auto``/``cuda`` gave ``torch.device("cuda")``."""
    from ptl_cli.engine.device import resolve_device
    from ptl_cli.engine.distributed import DistInfo, local_device

    with SimulatedGPU(devices=2):
        assert resolve_device("auto") == CUDA
        assert resolve_device("cuda") == CUDA
        chosen = local_device(DistInfo(), resolve_device("cuda:1"))
        assert chosen == torch.device("cuda", 1) and torch.cuda.current_device() == 1


@pytest.mark.parametrize("depth", [0, 2])
def test_the_prefetcher_hands_over_batches_without_a_race_or_a_sync(depth):
    from ptl_cli.data.loader import Prefetcher

    source = [(torch.full((4, 1, 8, 8), i, dtype=torch.uint8), torch.arange(4)) for i in range(3)]
    with SimulatedGPU() as gpu, Prefetcher(source, "cuda", depth) as batches:
        seen = [(images.float() / 255, labels + 1) for images, labels in batches]
    assert len(seen) == 3 and all(x.device == CUDA and y.device == CUDA for x, y in seen)
    assert gpu.findings == []


def test_a_prefetcher_that_drops_the_ready_event_is_a_race():
    """The depth-0 path did this: the copy ran on a side stream nobody waited for."""
    from ptl_cli.data.loader import Prefetcher

    class Racy(Prefetcher):
        def _ready(self, item):
            return item[0]

    source = [(torch.zeros(4, 1, 8, 8, dtype=torch.uint8),)]
    with SimulatedGPU() as gpu, Racy(source, "cuda", 0) as batches:
        for (images,) in batches:
            images.float()
    kinds = {f.kind for f in gpu.findings}
    assert kinds == {"race"}, gpu.findings
    assert any("without waiting" in f.what for f in gpu.findings)
    assert any("record_stream" in f.what for f in gpu.findings)


def test_a_host_read_in_a_step_is_named_with_its_line_and_a_declared_one_with_its_reason():
    from ptl_cli.engine.sync import host_sync

    with SimulatedGPU() as gpu:
        loss = torch.ones(3, device="cuda").sum()
        loss.item()  # the mutation: an .item() in a step
        with host_sync("log record"):
            float(loss)
    undeclared, declared = gpu.syncs(declared=False), gpu.syncs(declared=True)
    assert len(undeclared) == 1 and "test_simulated_gpu.py" in undeclared[0].where
    assert [f.reason for f in declared] == ["log record"]
    with pytest.raises(AssertionError, match="1 problem"):
        gpu.assert_clean()


def test_blocking_copies_are_syncs_and_pinned_non_blocking_ones_are_not():
    from ptl_cli.engine.compute import host_to_device

    with SimulatedGPU() as gpu:
        torch.arange(4).to("cuda")  # pageable: the host waits
        host_to_device(torch.arange(4), CUDA)  # pinned, queued
        torch.ones(2, device="cuda").cpu()  # device to host: always waits
    assert [f.what.split(" (")[0] for f in gpu.findings] == [
        "a blocking host-to-device copy",
        "a device-to-host copy",
    ]


def test_a_cpu_tensor_in_a_cuda_op_raises():
    from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError

    with SimulatedGPU(), pytest.raises(FakeTensorDeviceMismatchError):
        torch.ones(3, device="cuda") + torch.ones(3)  # the mutation: a CPU tensor in a CUDA op


def test_a_cpu_generator_feeding_a_cuda_draw_is_recorded():
    with SimulatedGPU() as gpu:
        cuda_gen = torch.Generator("cuda").manual_seed(0)
        torch.rand(3, device="cuda", generator=cuda_gen)
        assert gpu.findings == []
        torch.rand(3, device="cuda", generator=torch.Generator().manual_seed(0))  # the mutation
        torch.empty(3, device="cuda").uniform_(generator=torch.Generator())
    assert [f.kind for f in gpu.findings] == ["generator", "generator"]


def test_python_backward_equals_the_autograd_engine_bit_for_bit():
    """The simulation's backward (the C++ engine refuses fake devices) on real CPU tensors: a
    supermask network (a custom autograd.Function, broadcast biases, BatchNorm, pooling)."""
    from ptl_cli import pruning

    def grads(backward):
        torch.manual_seed(0)
        pruner = plugins.get("pruners", "edge-popup").build(params={"sparsity": 0.5})
        net = pruning.prepare(pruner, testing.tiny_net(), 0)
        x, y = testing.sample_batch(8, 0, 0)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        backward(loss)
        return [p.grad.clone() for p in pruner.trainable_parameters(net)] + [
            p.grad.clone() for p in net.parameters() if p.grad is not None
        ]

    engine, python = grads(lambda loss: loss.backward()), grads(python_backward)
    assert len(engine) == len(python) > 2
    assert all(torch.equal(a, b) for a, b in zip(engine, python, strict=True))
    assert any(a.abs().sum() > 0 for a in engine)


def test_global_masks_follow_a_fused_optimizer():
    """Fused optimizers (ptl's choice on CUDA) do not bump the scores' version counters; the
    global top-k cache keyed on them alone kept the first step's masks forever."""
    from ptl_cli import pruning
    from ptl_prune import supermask

    torch.manual_seed(0)
    pruner = plugins.get("pruners", "edge-popup").build(params={"sparsity": 0.5, "sparsity_scope": "global"})
    net = pruning.prepare(pruner, testing.tiny_net(), 0)
    optimizer = torch.optim.SGD(pruner.trainable_parameters(net), lr=50.0, fused=True)
    masks = lambda: [m.kept().clone() for *_, m in supermask.masked_layers(net)]  # noqa: E731
    before = masks()
    for step in range(3):
        x, y = testing.sample_batch(8, step, 0)
        pruning.train_step(pruner, net, optimizer, x, y, step + 1)
    after = masks()
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    group = next(m for *_, m in supermask.masked_layers(net)).group
    keys = torch.cat([m.key().reshape(-1) for m in group.masks])
    expected = supermask.kept_mask(keys, supermask.num_pruned(keys.numel(), 0.5))
    assert torch.equal(torch.cat([k.reshape(-1) for k in after]), expected)


# -- every training step on cuda:0, in every precision, with zero host syncs -----------------------
PRUNERS = [
    ("edge-popup", {}),
    ("edge-popup", {"sparsity_scope": "global"}),
    ("iterand", {"rerand_freq": 1}),  # a re-draw after every step
    ("iterand", {"rerand_freq": 1, "sparsity_scope": "global"}),
    ("sgd", {}),
]


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed", "fp16-mixed"])
@pytest.mark.parametrize(("method", "params"), PRUNERS, ids=[f"{m}-{p}" for m, p in PRUNERS])
def test_every_pruner_step_runs_on_the_gpu_without_a_sync(method, params, precision):
    testing.check_pruner_on_gpu(method, params, steps=3, precisions=(precision,))


def test_a_pruner_that_syncs_in_its_step_fails_check_pruner():
    """A third-party pruner held to the rule: an ``.item()`` in ``after_step`` is caught."""
    from ptl_prune.edgepopup import EdgePopup

    class Chatty(EdgePopup):
        def after_step(self, model, step):
            self.last = float(next(iter(self.trainable_parameters(model))).sum())

    with pytest.raises(
        testing.ContractError, match=r"simulated GPU \(fp32\).*_local_scalar_dense.*after_step"
    ):
        testing.check_pruner_on_gpu(lambda **_: Chatty(sparsity=0.5), steps=2, precisions=("fp32",))


def _ssl_names() -> list[str]:
    return plugins.manager().registry("ssl").names()


@pytest.mark.parametrize("name", _ssl_names())
def test_every_ssl_step_with_its_ema_runs_on_the_gpu_without_a_sync(name):
    from ptl_transfer.nets import EMA

    testing.check_ssl_on_gpu(name, steps=3, precisions=("bf16-mixed",), ema=lambda net: EMA(net, 0.999))


def test_an_ssl_algorithm_that_logs_a_python_float_fails_check_ssl():
    from ptl_ssl.fixmatch import FixMatch

    class Chatty(FixMatch):
        def loss(self, model, labeled, targets, unlabeled, step, total):
            loss, logs = super().loss(model, labeled, targets, unlabeled, step, total)
            return loss, {**logs, "loss_x": float(loss)}  # the mutation: a host read per step

    with pytest.raises(testing.ContractError, match="_local_scalar_dense"):
        testing.check_ssl_on_gpu(lambda k, **_: Chatty(k), steps=2, precisions=("fp32",))


def test_evaluation_reads_the_device_once():
    from ptl_cli.engine.device import Precision
    from ptl_transfer import nets

    images, labels = testing.sample_batch(20, 0, 0)
    batches = [((images[i : i + 8] * 255).to(torch.uint8), labels[i : i + 8]) for i in range(0, 20, 8)]
    net = testing.tiny_net()
    with SimulatedGPU() as gpu:
        from ptl_cli.engine.sync import host_sync

        with host_sync("setup"):
            net = net.to(CUDA)
        gpu.clear()
        nets.count_correct(net, batches, (0.5,), (0.5,), CUDA, Precision("fp16-mixed", CUDA))
    # one .tolist() of the two counts at the end (the simulation sees one read per element)
    assert [f.reason for f in gpu.findings] == ["evaluation result"] * 2


def test_pool_shards_are_made_on_the_gpu_with_one_copy_back_per_chunk():
    """PP and PCS shards with the bundled BigGAN and the bundled DDPM (2 DDIM steps)."""
    from ptl_transfer import pcs

    targets, _ = testing.sample_batch(6, 0, 0)
    targets = (targets.clamp(0, 1) * 255).to(torch.uint8)
    with SimulatedGPU() as gpu:
        classifier = plugins.get("classifiers", "bundled").build(CUDA)
        for name, params in [
            ("biggan", {"weights": "bundled"}),
            ("diffusers", {"weights": "bundled", "steps": 2}),
        ]:
            generator = plugins.get("generators", name).build(CUDA, params=params)
            gpu.clear()
            shard = pcs.pp_shard(generator, 0, 8, 0, 28, 1, 4, CUDA)
            assert shard["images"].device.type == "cpu" and shard["images"].shape == (8, 1, 28, 28)
            shard = pcs.pcs_shard(generator, classifier, targets, 0, 1, 2, 1.0, 0, 0, 4, CUDA)
            assert shard["images"].shape == (12, 1, 28, 28)
            batch = pcs.pp_batch(generator, 3, 4, 0, 28, 1, CUDA)  # on the fly: stays on the device
            assert batch["images"].device == CUDA
            reasons = Counter(f.reason for f in gpu.findings)
            assert gpu.problems() == [], gpu.problems()
            assert set(reasons) <= {"pool shard to disk", "source-classifier outputs for a pool shard"}


# -- whole runs through the CLI on --device cuda ------------------------------------------------------
def _run_on_gpu(cli, args: list[str]) -> tuple[SimulatedGPU, str]:
    with SimulatedGPU() as gpu:
        code, out, err = cli(*args)
    assert code == 0, err
    assert gpu.problems() == [], "\n".join(str(p) for p in gpu.problems())
    reasons = {f.reason for f in gpu.syncs(declared=True)}
    assert reasons <= DECLARED, reasons - DECLARED
    return gpu, out


def test_ptl_prune_on_cuda_through_the_cli(cli, tmp_path):
    gpu, _ = _run_on_gpu(
        cli,
        [
            "prune", "--method", "iterand", "--device", "cuda", "--epochs", "1",
            "--out", str(tmp_path / "run"),
            "--set", "data.train_limit=96", "--set", "data.test_limit=64", "--set", "train.batch_size=16",
            "--set", "train.log_every=2", "--set", "pruner.params.rerand_freq=2",
            "--set", "compute.precision=fp16-mixed",
        ],
    )  # fmt: skip
    reasons = Counter(f.reason for f in gpu.syncs(declared=True))
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r.get("stage") == "train"]
    steps = max(r["step"] for r in train)
    assert steps >= 4
    # the steps read nothing; each log (every 2 steps and at the epoch's end, which the record
    # log keeps once) reads the running sums (3 values) once
    assert reasons["log record"] == 3 * (steps // 2 + 1)
    assert threading.active_count() < 10  # the prefetcher threads ended


def test_ptl_transfer_on_cuda_through_the_cli(cli, tmp_path):
    """Every stage (scratch, KD, PP, P-SSL, PP+P-SSL) with pseudo pre-training on the fly."""
    small = {
        "model.arch": "conv2",
        "model.width": 0.25,
        "target.labels_per_class": 4,
        "pool.dir": str(tmp_path / "pools"),
        "pool.shard_size": 32,
        "pool.gen_batch_size": 16,
        "pp.mode": "on-the-fly",
        "pp.train.steps": 4,
        "pp.train.batch_size": 16,
        "pp.train.log_every": 2,
        "pp.train.checkpoint_every": 2,
        "pcs.per_image": 3,
        "ssl.mu": 2,
        "train.steps": 4,
        "train.batch_size": 8,
        "train.log_every": 2,
        "train.checkpoint_every": 2,
        "stage_processes": 1,
        "compute.precision": "fp16-mixed",
    }
    args = ["transfer", "--ssl", "flexmatch", "--device", "cuda", "--out", str(tmp_path / "run")]
    for key, value in small.items():
        args += ["--set", f"{key}={value}"]
    _run_on_gpu(cli, args)


def test_converting_rgb_to_grey_on_the_gpu_copies_its_weights_once():
    from ptl_cli.data.augment import match_channels

    cpu = torch.rand(2, 3, 4, 4)
    with SimulatedGPU() as gpu:
        images = torch.rand(2, 3, 4, 4, device="cuda")
        for _ in range(3):
            assert match_channels(images, 1).shape == (2, 1, 4, 4)
    assert gpu.findings == []
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    assert torch.equal(match_channels(cpu, 1), (cpu * weights).sum(1, keepdim=True))


@pytest.mark.parametrize(
    ("deterministic", "benchmark", "expected"),
    [(True, None, False), (False, None, True), (True, True, True), (False, False, False)],
)
def test_cudnn_benchmark_follows_the_recipe(deterministic, benchmark, expected):
    from ptl_cli.engine.seeding import seed_everything

    before = (torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled())
    try:
        seed_everything(0, deterministic, benchmark)
        assert torch.backends.cudnn.benchmark is expected
        if deterministic:
            assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.backends.cudnn.benchmark = before[0]
        torch.use_deterministic_algorithms(before[1], warn_only=True)


def test_ranks_vote_to_stop_one_call_later_without_waiting(tmp_path):
    """The stop vote under torchrun: an asynchronous all-reduce read at the next call (one rank
    of a gloo group here; tests/scale's torchrun runs interrupt two)."""
    import torch.distributed as dist

    from ptl_cli.engine.distributed import DistInfo, StopVote

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        vote = StopVote(DistInfo(rank=0, world_size=2))  # "enabled": a group of one answers
        assert [vote(False), vote(True), vote(False), vote(False)] == [False, False, True, False]
    finally:
        dist.destroy_process_group()
