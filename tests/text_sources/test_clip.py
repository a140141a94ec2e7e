"""The ``clip`` source classifier against transformers' own ``CLIPModel`` on a tiny random CLIP folder.

With one template its logits are ``CLIPModel``'s ``logits_per_image`` for the class prompts; with
several, each class embedding is the renormalized mean of the templates' normalized text
features (CLIP's zero-shot recipe); the tensor preprocessing is close to ``CLIPImageProcessor``'s.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ptl_cli import plugins

from .conftest import CLASSES


def build(directory, **params):
    params = {"weights": str(directory), "classes": CLASSES, **params}
    return plugins.get("classifiers", "clip").build("cpu", params=params)


@pytest.fixture(scope="module")
def reference(clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    return CLIPModel.from_pretrained(str(clip_dir)).eval(), AutoTokenizer.from_pretrained(str(clip_dir))


def images(n: int = 4, channels: int = 3, size: int = 20) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(n + channels))


def test_logits_equal_clipmodel_for_one_template(clip_dir, reference):
    model, tokenizer = reference
    clf = build(clip_dir)
    x = images()
    prompts = [f"a photo of a {name}." for name in CLASSES]
    tokens = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        expected = model(**tokens, pixel_values=clf.preprocess(x)).logits_per_image
        ours = clf(x)
    assert ours.shape == (4, 3) and clf.num_classes == 3 and clf.class_names == tuple(CLASSES)
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    assert (clf(images(4, 3, 20).flip(-1)) - ours).abs().max() > 1e-4  # the image matters


def test_templates_are_averaged_as_clip_zero_shot_does(clip_dir, reference):
    model, tokenizer = reference
    templates = ["a photo of a {name}.", "a drawing of a {name}."]
    clf = build(clip_dir, templates=templates)
    for c, name in enumerate(CLASSES):
        tokens = tokenizer(
            [t.format(name=name) for t in templates], padding=True, truncation=True, return_tensors="pt"
        )
        with torch.no_grad():
            out = model.get_text_features(**tokens)
        features = F.normalize(out if isinstance(out, torch.Tensor) else out.pooler_output, dim=-1)
        torch.testing.assert_close(
            clf.text_embeddings[c], F.normalize(features.mean(0), dim=0), rtol=0, atol=1e-6
        )
    assert not torch.allclose(clf.text_embeddings, build(clip_dir).text_embeddings, atol=1e-4)
    assert clf.id != build(clip_dir).id


def test_tensor_preprocessing_is_close_to_clip_image_processor(clip_dir):
    from PIL import Image
    from transformers import CLIPImageProcessor

    clf = build(clip_dir)
    x = torch.rand(1, 3, 24, 30, generator=torch.Generator().manual_seed(0))
    pil = Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    expected = CLIPImageProcessor.from_pretrained(str(clip_dir))(images=pil, return_tensors="pt").pixel_values
    ours = clf.preprocess(torch.from_numpy(np.asarray(pil)).permute(2, 0, 1)[None].float() / 255)
    assert ours.shape == expected.shape == (1, 3, 16, 16)
    assert (ours - expected).abs().mean() < 0.05  # PIL's and torch's bicubic resamplers differ slightly


def test_grey_images_of_any_size(clip_dir):
    clf = build(clip_dir)
    grey = images(2, 1, 28)
    torch.testing.assert_close(clf(grey), clf(grey.expand(-1, 3, -1, -1)), rtol=0, atol=0)
    assert clf(images(2, 3, 64)).shape == (2, 3)


@pytest.mark.parametrize(
    ("kind", "name", "params"),
    [
        (
            "generators",
            "stable-diffusion",
            {"weights", "classes", "templates", "guidance_scale", "scheduler"},
        ),
        ("classifiers", "clip", {"weights", "classes", "templates", "dtype"}),
    ],
)
def test_ptl_list_shows_the_text_sources_with_their_parameters(kind, name, params):
    import json
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "ptl_cli", "list", kind, name, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)
    assert entry["name"] == name and params <= {p["name"] for p in entry["params"]}


def test_the_classifier_contract_checks_pass(clip_dir):
    from ptl_cli.testing import check_classifier

    check_classifier("clip", {"weights": str(clip_dir), "classes": CLASSES}, channels=1)
    check_classifier("clip", {"weights": str(clip_dir), "classes": CLASSES}, channels=3)


def test_offline_without_weights_is_one_line(monkeypatch, tmp_path):
    from ptl_cli.errors import UserError

    monkeypatch.setenv("PTL_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(UserError, match="CLIP weights 'openai/clip-vit-base-patch32' are not in the") as err:
        build("openai/clip-vit-base-patch32")
    assert "\n" not in str(err.value) and "ptl is offline" in str(err.value)
