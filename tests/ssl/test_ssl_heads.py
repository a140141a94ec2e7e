"""``ptl_cli.engine.heads``: the penultimate features and an algorithm's heads, for any target.

Real networks only: a torchvision ResNet (a model not written for ptl) and the check's tiny
net. The transfer runs with heads, their resume and export are in
tests/transfer/test_transfer_heads.py; DDP in tests/scale/dist_worker.py (``ddp_heads``).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from ptl_cli import plugins
from ptl_cli.contracts import ensure_satisfies
from ptl_cli.engine.heads import WithHeads, attach, head_name, plain
from ptl_cli.errors import UserError
from ptl_cli.testing import tiny_net
from ptl_ssl.fixmatch import FixMatch


def test_a_torchvision_target_gives_its_penultimate_features_and_trains_the_head():
    torch.manual_seed(0)
    net = plugins.get("models", "torchvision:resnet18").build(3, 3, 32, 1.0).eval()
    assert head_name(net) == "fc"
    proj = nn.Linear(512, 4)
    wrapped = WithHeads(net, {"proj": proj})
    x = torch.randn(2, 3, 32, 32)
    out = wrapped(x, with_heads=True)
    body = copy.deepcopy(net)
    body.fc = nn.Identity()
    with torch.no_grad():
        assert torch.equal(wrapped(x), net(x))  # without heads: the network's logits, nothing else
        assert torch.allclose(out["features"], body(x), atol=1e-6)
        assert torch.allclose(out["logits"], net(x), atol=1e-6)
    assert out.keys() == {"logits", "features", "proj"} and out["proj"].shape == (2, 4)
    assert not net.fc._forward_pre_hooks  # the capture lives during the call only
    out["proj"].square().mean().backward()
    assert proj.weight.grad.abs().sum() > 0 and net.conv1.weight.grad.abs().sum() > 0
    assert plain(wrapped) is net and plain(net) is net


class Projected(FixMatch):
    """FixMatch with a (here unused) head: enough to see how ptl builds and names heads."""

    def heads(self, feature_dim):
        return {"proj": nn.Linear(feature_dim, 3)}


def test_heads_are_seeded_by_the_run_and_draw_nothing_from_the_global_stream():
    torch.manual_seed(7)
    first = attach(Projected(5), tiny_net(5), seed=3)
    after = torch.rand(1)
    torch.manual_seed(7)
    second = attach(Projected(5), tiny_net(5), seed=3)
    assert torch.equal(torch.rand(1), after)
    assert torch.equal(first.heads.proj.weight, second.heads.proj.weight)
    other = attach(Projected(5), tiny_net(5), seed=4)
    assert not torch.equal(first.heads.proj.weight, other.heads.proj.weight)
    assert first.heads.proj.in_features == 32  # tiny_net's classifier input
    assert attach(FixMatch(5), tiny_net(5), seed=3).__class__ is nn.Sequential  # no heads: the net


@pytest.mark.parametrize(
    ("heads", "message"),
    [
        ({"logits": nn.Linear(32, 2)}, "cannot name a head"),
        ({"a.b": nn.Linear(32, 2)}, "cannot name a head"),
        ({"p": "linear"}, "not an nn.Module"),
        ({}, "non-empty dict"),
    ],
)
def test_bad_heads_are_one_line_errors(heads, message):
    class Bad(FixMatch):
        def heads(self, feature_dim):
            return heads

    with pytest.raises(UserError, match=message):
        attach(Bad(5), tiny_net(5), seed=0)


def test_a_classifier_head_fed_other_than_once_on_2d_features_is_refused():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x) + self.fc(x)

    with pytest.raises(UserError, match="called once per forward"):
        WithHeads(Twice(), {"p": nn.Linear(4, 2)})(torch.randn(3, 4), with_heads=True)


def test_a_misspelt_or_uncallable_heads_member_fails_the_contract():
    class Head(FixMatch):
        def head(self, feature_dim):
            return {"proj": nn.Linear(feature_dim, 3)}

    class NoDim(FixMatch):
        def heads(self):
            return {}

    with pytest.raises(UserError, match="did you mean heads"):
        ensure_satisfies("ssl", Head(5), "SSL algorithm 'x'")
    with pytest.raises(UserError, match=r"heads\(\) cannot be called as heads\(feature_dim\)"):
        ensure_satisfies("ssl", NoDim(5), "SSL algorithm 'x'")


def test_with_heads_passes_through_torch_compile():
    torch.manual_seed(0)
    wrapped = WithHeads(tiny_net(5), {"proj": nn.Linear(32, 3)})
    compiled = torch.compile(wrapped, backend="eager")
    x = torch.rand(2, 1, 28, 28)
    out = compiled(x, with_heads=True)
    expected = wrapped(x, with_heads=True)
    assert all(torch.allclose(out[k], expected[k]) for k in expected)
    assert torch.allclose(compiled(x), wrapped.net(x))
