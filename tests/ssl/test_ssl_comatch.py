"""CoMatch as ptl runs it: the contract check (heads, queues, resume, simulated GPU) and the
errors a user can meet. Its equality with USB is ``test_reference_comatch.py``."""

from __future__ import annotations

import pytest
import torch

from ptl_cli.data.views import make_views
from ptl_cli.engine.heads import WithHeads
from ptl_cli.testing import check_ssl
from ptl_ssl.comatch import CoMatch


def test_passes_ptl_contract_check():
    """check_ssl trains the net with CoMatch's projection head as ``ptl transfer`` does; with a
    queue of one batch, smoothing runs from step 2, so the resume at step 2 covers a full queue
    that wraps at every step (and the simulated GPU covers fp16-mixed)."""
    algo = check_ssl("comatch", {"queue_batch": 1, "da_len": 2, "threshold": 0.5}, steps=4, resume_at=2)
    assert algo.queue_feats.shape == (4 + 12, 64) and int(algo.prior_ptr) == 0


def test_needs_two_strong_views_and_the_heads(tiny_cnn, fashion):
    """A loop that gives one strong view, or a model without heads, is told what is missing."""
    images, labels, mean, std = fashion
    algo = CoMatch(5)
    assert algo.unlabeled_views == ("weak", "strong", "strong")
    labeled = make_views(images[:4], ("weak",), mean, std)
    one_strong = make_views(images[4:12], ("weak", "strong"), mean, std)
    model = WithHeads(tiny_cnn(5, 1), algo.heads(6))
    with pytest.raises(KeyError, match="'strong:1' view of the unlabeled batch"):
        algo.loss(model, labeled, labels[:4] % 5, one_strong, 0, 10)
    both = make_views(images[4:12], algo.unlabeled_views, mean, std)
    with pytest.raises(TypeError, match="not wrapped with the heads"):
        algo.loss(tiny_cnn(5, 1), labeled, labels[:4] % 5, both, 0, 10)
    assert not torch.equal(both["strong"], both["strong:1"])
    loss, logs = algo.loss(model, labeled, labels[:4] % 5, both, 0, 10)
    loss.backward()
    assert model.heads["proj"][0].weight.grad.abs().sum() > 0 and float(logs["loss_contrast"]) > 0


def test_targets_are_float32_under_mixed_precision():
    """Alignment, memory smoothing and the label graph ignore autocast: under bf16 autocast the
    same inputs give the float32 targets bit for bit (a bf16 graph would move edges across the
    cutoff)."""
    from ptl_ssl.comatch import full_precision, label_graph

    gen = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(6, 5, generator=gen) * 3, torch.randint(0, 5, (2,), generator=gen)
    z = torch.nn.functional.normalize(torch.randn(8, 4, generator=gen), dim=1)
    results = []
    for autocast in (False, True):
        algo = CoMatch(5, queue_batch=1, proj_size=4)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for step in range(3):  # smoothing from step 2
                with full_precision(logits.device):
                    probs = algo._targets(logits + step, z[:6], z[6:], targets, step)
                    graph = label_graph(probs, 0.3)
        results.append((probs, graph, algo.queue_probs))
    for ours, again in zip(*results, strict=True):
        assert ours.dtype == torch.float32 and torch.equal(ours, again)
