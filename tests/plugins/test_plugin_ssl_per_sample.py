"""A third-party SSL algorithm with per-sample state, written from docs/plugins alone.

``visitmatch`` keeps two arrays the size of the unlabeled set (factory argument
``num_unlabeled``), indexed by ``unlabeled_index``: how often each sample was drawn, and an EMA of
its own confidence, which gates its pseudo label. No private attributes of ptl are used. It is
installed as a throwaway package, passes ``check_ssl``, and runs in a real ``ptl transfer``,
whose logs show the documented sampling scheme: every pool sample drawn once per epoch. A copy
that leaves its state out of ``state_dict()`` fails ``check_ssl``, whatever the model.
"""

from __future__ import annotations

import json

import pytest
import torch

from ptl_cli.testing import ContractError, check_plugin_loads, check_ssl, install_plugin, run_ptl, tiny_net

SOURCE = '''
"""visitmatch: pseudo labels gated by each sample's remembered confidence."""

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from ptl_cli import hookimpl
from ptl_cli.engine.distributed import gather_global_batch
from ptl_cli.schema import Params


class VisitParams(Params):
    threshold: float = Field(0.3, ge=0.0, le=1.0, description="remembered confidence a label needs")
    momentum: float = Field(0.5, ge=0.0, lt=1.0, description="EMA decay of each sample's confidence")


class VisitMatch:
    labeled_views = ("weak",)
    unlabeled_views = ("weak", "strong")

    def __init__(self, num_classes, threshold=0.3, momentum=0.5, *, num_unlabeled, num_labeled):
        self.num_classes = num_classes
        self.threshold = threshold
        self.momentum = momentum
        self.num_labeled = num_labeled
        self.visits = torch.zeros(num_unlabeled, dtype=torch.long)
        self.memory = torch.zeros(num_unlabeled)

    def loss(self, model, labeled, targets, unlabeled, step, total_steps, unlabeled_index):
        x, weak, strong = labeled["weak"], unlabeled["weak"], unlabeled["strong"]
        logits_x, logits_w, logits_s = model(torch.cat([x, weak, strong])).split(
            [x.shape[0], weak.shape[0], strong.shape[0]]
        )
        confidence, labels = logits_w.detach().softmax(dim=1).max(dim=1)
        self.visits = self.visits.to(confidence.device)
        self.memory = self.memory.to(confidence.device)
        with torch.no_grad():  # the global batch, so every rank keeps the same arrays
            index, seen = gather_global_batch(unlabeled_index), gather_global_batch(confidence)
            self.visits.index_add_(0, index, torch.ones_like(index))
            self.memory[index] = self.momentum * self.memory[index] + (1 - self.momentum) * seen
        mask = (self.memory[unlabeled_index] >= self.threshold).float()
        loss_u = (F.cross_entropy(logits_s, labels, reduction="none") * mask).mean()
        loss = F.cross_entropy(logits_x, targets) + loss_u
        logs = {
            "visits_min": self.visits.min().float(),
            "visits_max": self.visits.max().float(),
            "pool_size": torch.tensor(float(self.visits.numel())),
            "mask_ratio": mask.mean(),
        }
        return loss, logs

    def after_step(self, model, step):
        pass

    def state_dict(self) -> dict[str, Any]:
        return {"visits": self.visits.cpu().clone(), "memory": self.memory.cpu().clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.visits = state["visits"].clone()
        self.memory = state["memory"].clone()


class ForgetfulVisitMatch(VisitMatch):
    """The mistake check_ssl must catch: the arrays are left out of the checkpoint."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@hookimpl
def ptl_register_ssl_algorithms(register):
    register("visitmatch", VisitMatch, description="pseudo labels gated by remembered confidence",
             params=VisitParams)
'''

#: A tiny P-SSL run: the quickstart's 8 target classes x 4 labeled images x 3 pseudo samples = a
#: pool of 96, drawn 16 at a time (mu 2 x batch 8): six steps an epoch, two epochs.
TINY = {
    "stages": '["pssl"]',
    "model.arch": '"conv2"',
    "model.width": "0.25",
    "target.labels_per_class": "4",
    "pool.shard_size": "32",
    "pool.gen_batch_size": "16",
    "pcs.per_image": "3",
    "ssl.mu": "2",
    "train.steps": "12",
    "train.batch_size": "8",
    "train.log_every": "1",
}


@pytest.fixture
def visitmatch(plugin_site):
    install_plugin(plugin_site, "ptl-visitmatch", "ptl_visitmatch", SOURCE)
    check_plugin_loads("ptl-visitmatch", ["ptl_register_ssl_algorithms"])
    import ptl_visitmatch

    return ptl_visitmatch


def test_a_per_sample_plugin_passes_check_ssl(visitmatch):
    algo = check_ssl("visitmatch")
    # check_ssl's unlabeled set: 24 images, 12 a step, 4 steps = every sample drawn twice
    assert algo.visits.tolist() == [2] * 24 and algo.num_labeled == 64
    assert (algo.memory > 0).all()


@pytest.mark.parametrize("model", [None, tiny_net], ids=["confident-net", "tiny-net"])
def test_state_left_out_of_state_dict_fails_check_ssl(visitmatch, model):
    with pytest.raises(ContractError, match=r"is all state in state_dict\(\)"):
        check_ssl(visitmatch.ForgetfulVisitMatch, model=model)


def test_flexmatch_without_its_state_fails_check_ssl():
    """The built-in FlexMatch with its stored pseudo labels dropped from the checkpoint."""
    from ptl_ssl.flexmatch import FlexMatch

    class Forgetful(FlexMatch):
        def state_dict(self):
            return {}

        def load_state_dict(self, state):
            pass

    check_ssl(FlexMatch)
    with pytest.raises(ContractError, match=r"is all state in state_dict\(\)"):
        check_ssl(Forgetful)


def test_a_per_sample_plugin_runs_in_ptl_transfer(visitmatch, tmp_path):
    sets = {**TINY, "pool.dir": json.dumps(str(tmp_path / "pools"))}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / "run"
    done = run_ptl(
        "transfer", "--ssl", "visitmatch", "--device", "cpu", "--out", str(out), "--json", *args,
        env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["status"] == "completed"
    pool = summary["metrics"]["labeled"] * 3
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("stage") == "pssl" and "visits_min" in r]
    assert [r["step"] for r in steps] == list(range(1, 13)) and all(r["pool_size"] == pool for r in steps)
    for r in steps:  # without replacement within an epoch: draws never differ by more than one
        drawn = r["step"] * 16
        assert r["visits_min"] == drawn // pool and r["visits_max"] == -(-drawn // pool)
    assert {r["step"] for r in steps if r["visits_min"] == r["visits_max"]} >= {pool // 16, 2 * pool // 16}
    assert torch.load(out / "model.pt", weights_only=True)["stage"] == "pssl"
