"""``--dry-run`` reports every mistake a real run reports before it trains, in the same words.

Each bad input below (unknown names of every kind, bad values, impossible combinations) must
fail ``--dry-run`` with exit 2 and one line naming the problem, and a real run given the same
input must fail with that very line before it trains, leaving no run directory. Missing data
and weights are the exception (a plan never reads them) and are not listed. Near misses that
are fine (a correct pattern, a ResNet with the CIFAR stem) must still plan, so the checks are
not merely refusing everything.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

CONV2 = ["--model", "conv2"]  # layers features.0, features.2, classifier.1, classifier.3, classifier.5

PRUNE = [
    (["--recipe", "transfer-quickstart"], "this is a `transfer` recipe; run it with `ptl transfer --recipe"),
    (["--method", "iterandd"], "unknown pruner 'iterandd'; did you mean 'iterand'"),
    (["--model", "conv66"], "unknown model 'conv66'; did you mean 'conv6'"),
    (["--model", "torchvision:resnet5"], "unknown torchvision model 'resnet5'; did you mean 'resnet50'"),
    (
        ["--model", "torchvision:resnet18", "--set", "model.params.weights=IMAGENET1K_V2"],
        "unknown weights 'IMAGENET1K_V2'; did you mean 'IMAGENET1K_V1'",
    ),
    (["--model", "torchvision:resnet18", "--width", "0.5"], "torchvision models have no width factor"),
    (
        ["--model", "torchvision:vgg11", "--set", "model.params.stem=cifar"],
        "stem='cifar' works on torchvision ResNets",
    ),
    (["--dataset", "cifar1"], "unknown dataset 'cifar1'"),
    (["--set", "data.params.bogus=1"], "unknown key `data.params.bogus`"),
    (["--weight-init", "xavier"], "key `pruner.params.weight_init`: Input should be"),
    (["--set", "pruner.params.score_init=bogus"], "key `pruner.params.score_init`: Input should be"),
    (["--method", "sgd", "--sparsity", "0.5"], "pruner sgd: unknown key `pruner.params.sparsity`"),
    (["--device", "cuda:x"], "--device 'cuda:x' is not a device"),
    (["--device", "tpu"], "--device 'tpu' is not a device"),
    (["--device", "cuda:99"], "--device cuda:99: "),  # no CUDA here, or too few devices
    (["--set", "compute.precision=fp8"], "key `compute.precision`"),
    (["--epochs", "0"], "key `train.epochs`: Input should be greater than or equal to 1"),
    (["--sparsity", "1.5"], "key `pruner.params.sparsity`: Input should be less than 1"),
    (["--batch-size", "1"], "key `train.batch_size`"),
    (["--set", "train.lr=fast"], "key `train.lr`: Input should be a valid number"),
    (["--set", "train.bogus=1"], "unknown key `train.bogus`"),
    (["--set", "pruner.params.bogus=1"], "pruner iterand: unknown key `pruner.params.bogus`"),
    (["--set", "train.epochs=1.5"], "key `train.epochs`: Input should be a valid integer"),
    (["--epochs", "3", "--set", "train.warmup_epochs=3"], "must be fewer than epochs (3)"),
    (["--set", "data.train_limit=1"], "1 training image makes no batch"),
    (
        [*CONV2, "--method", "edge-popup", "--sparsity", "0"],
        "pruner edge-popup leaves nothing to train on conv2",
    ),
    (
        [*CONV2, "--set", 'pruner.params.layer_sparsity={"*" = 0.0}'],
        "pruner iterand leaves nothing to train on conv2",
    ),
    (
        [*CONV2, "--set", 'pruner.params.layer_sparsity={"clasifier.*" = 0.9}'],
        "pattern 'clasifier.*' matches no Conv/Linear layer of the model; its 5 layers are named like: "
        "features.0, features.2, classifier.1",
    ),
]

TRANSFER = [
    (["--generator", "biggann"], "unknown generator 'biggann'; did you mean 'biggan'"),
    (["--ssl", "fixmatc"], "unknown SSL algorithm 'fixmatc'; did you mean 'fixmatch'"),
    (["--source-classifier", "bogus"], "unknown source classifier 'bogus'"),
    (["--source-classifier", "torchvision:resnet5"], "unknown torchvision classifier 'resnet5'"),
    (
        ["--source-classifier", "torchvision:resnet18", "--set", "source.classifier.params.weights=V9"],
        "[source.classifier]: unknown weights 'V9'; known: DEFAULT, IMAGENET1K_V1",
    ),
    (
        ["--source-classifier", "torchvision:resnet18"],  # the bundled 4-class BigGAN with ImageNet's C_s
        "generator 'biggan' has 4 classes but classifier 'torchvision:resnet18' has 1000",
    ),
    (["--target", "cifar1"], "unknown dataset 'cifar1'"),
    (["--arch", "conv66"], "unknown model 'conv66'"),
    (["--arch", "torchvision:resnet5"], "[model]: unknown torchvision model 'resnet5'"),
    (
        ["--arch", "torchvision:resnet18", "--width", "0.5"],
        "[model]: torchvision models have no width factor",
    ),
    (["--stages", "scratch,ppssl"], "unknown stage 'ppssl'"),
    (["--arch", "torchvision:squeezenet1_1", "--stages", "pp"], "has no nn.Linear head; stage pp needs one"),
    (["--set", "source.generator.params.truncation=0"], "key `truncation`: Input should be greater than 0"),
    (["--set", "source.generator.params.bogus=1"], "[source.generator]: unknown key `bogus`"),
    (["--set", "ssl.params.bogus=1"], "[ssl]: unknown key `bogus`"),
    (["--set", "ssl.params.threshold=2"], "[ssl]: key `threshold`"),
    (["--set", "model.params.bogus=1"], "[model]: unknown key `bogus`"),
    (["--set", "pcs.temperature=0"], "key `pcs.temperature`: Input should be greater than 0"),
    (["--set", "kd.temperature=0"], "key `kd.temperature`"),
    (["--set", "ssl.mu=0"], "key `ssl.mu`"),
    (["--steps", "0"], "key `train.steps`"),
    (["--labels-per-class", "-1"], "key `target.labels_per_class`"),
    (["--set", "target.classes=[5, 5]"], "class 5 is listed twice"),
    (["--set", "target.classes=[-1, 2]"], "class indices are 0 or more, not -1"),
    (["--set", "target.classes=[5, 6, 12]"], "[target] classes: fashion-pack has classes 0..9, not 12"),
    (["--set", "pp.mode=bogus"], "key `pp.mode`"),
    (["--set", "pcs.bogus=1"], "unknown key `pcs.bogus`"),
    (["--set", "stages=scratch"], "key `stages`: Input should be a valid list"),
    (["--device", "cuda:x"], "--device 'cuda:x' is not a device"),
]

TRAIN_SOURCE = [
    (["generator", "--kind", "gan"], "--kind 'gan': choose biggan or ddpm"),
    (
        ["generator", "--dataset", "fashion-mnst"],
        "unknown dataset 'fashion-mnst'; did you mean 'fashion-mnist'",
    ),
    (["generator", "--classes", "0,1,x"], "--classes '0,1,x': expected comma-separated class indices"),
    (["generator", "--steps", "0"], "key `train.steps`"),
    (["generator", "--classes", "0,12"], "data.classes [12]: fashion-mnist has classes 0..9"),
    (["generator", "--set", "biggan.bottom_width=5"], "gives 20px images, but fashion-mnist has 28px"),
    (["generator", "--kind", "ddpm", "--set", "ddpm.patch=3"], "ddpm.patch 3 must divide the image size 28"),
    (["generator", "--set", "bogus=1"], "unknown key `bogus`"),
    (["generator", "--set", "eval.classifier=bogus"], "unknown source classifier 'bogus'"),
    (["generator", "--set", "eval.classifier_params.bogus=1"], "recipe eval.classifier_params: unknown key"),
    (
        ["generator", "--set", "data.dataset_params.bogus=1"],
        "recipe data.dataset_params (fashion-mnist): unknown",
    ),
    (["generator", "--kind", "ddpm", "--set", "ddpm.beta_schedule=bogus"], "key `ddpm.beta_schedule`"),
    (["generator", "--kind", "ddpm", "--set", 'ddpm.down_block_types=["Bogus2D"]'], "'AttnDownBlock2D'"),
    (["generator", "--kind", "ddpm", "--set", 'ddpm.down_block_types=["DownBlock2D"]'], "one entry each"),
    (["generator", "--kind", "ddpm", "--set", "ddpm.norm_num_groups=5"], "multiple of norm_num_groups 5"),
    (["generator", "--set", "biggan.attention_layer_position=7"], "position 7 is not a block"),
    (["generator", "--set", "biggan.d_downsample=[true]"], "need one entry each per discriminator block"),
    (["generator", "--set", "biggan.channel_width=0"], "key `biggan.channel_width`"),
    (["classifier", "--set", "classifier.width=0"], "key `classifier.width`: Input should be greater than 0"),
    (["classifier", "--arch", "conv66"], "unknown model 'conv66'"),
    (["classifier", "--arch", "torchvision:resnet5"], "unknown torchvision model 'resnet5'"),
    (["classifier", "--arch", "torchvision:resnet18"], "no width factor; remove `width` (got 0.5)"),
    (["classifier", "--set", "classifier.arch_params.bogus=1"], "recipe classifier.arch_params: unknown key"),
]

CASES = (
    [pytest.param(["prune", *a], m, id="prune " + " ".join(a)) for a, m in PRUNE]
    + [pytest.param(["transfer", *a], m, id="transfer " + " ".join(a)) for a, m in TRANSFER]
    + [pytest.param(["train-source", *a], m, id="train-source " + " ".join(a)) for a, m in TRAIN_SOURCE]
)


@pytest.mark.parametrize(("args", "expected"), CASES)
def test_dry_run_reports_what_the_run_reports(cli, tmp_path, args, expected):
    code, out, dry = cli(*args, "--dry-run")
    assert code == 2, out
    assert expected in dry, dry
    assert dry.count("\n") == 1 and dry.startswith("ptl: error: ") and "Traceback" not in dry
    code, _, real = cli(*args, "--out", tmp_path / "run", "--quiet")
    assert (code, real) == (2, dry)
    assert not (tmp_path / "run").exists()  # refused before a run directory was made


@pytest.mark.parametrize(
    "args",
    [
        ["prune", "--model", "torchvision:resnet18", "--set", "model.params.weights=IMAGENET1K_V1"],
        ["prune", "--model", "torchvision:wide_resnet50_2", "--set", "model.params.stem=cifar"],
        ["prune", *CONV2, "--set", 'pruner.params.layer_sparsity={"classifier.*" = 0.9}'],
        [
            "prune",
            *CONV2,
            "--method",
            "edge-popup",
            "--sparsity",
            "0",
            "--set",
            'pruner.params.layer_sparsity={"f*" = 0.5}',
        ],
        [
            "prune",
            "--model",
            "resnet18",
            "--method",
            "edge-popup",
            "--sparsity",
            "0",
            "--set",
            "pruner.params.bn_affine=true",
        ],
        ["prune", "--device", "cpu", "--set", "compute.precision=bf16-mixed"],
        # RegNet-Y cannot be built on the meta device: its layer names are left to the run to check
        [
            "prune",
            "--model",
            "torchvision:regnet_y_400mf",
            "--set",
            'pruner.params.layer_sparsity={"fc" = 0.5}',
        ],
        [
            "transfer",
            "--source-classifier",
            "torchvision:resnet18",
            "--set",
            "source.classifier.params.weights=IMAGENET1K_V1",
            "--set",
            "source.generator.params.weights=biggan-deep-128",  # ImageNet's classes, as the classifier's
        ],
        ["transfer", "--arch", "torchvision:resnet18"],
        ["transfer", "--set", "target.classes=[9, 5]"],
        ["train-source", "classifier", "--arch", "torchvision:resnet18", "--set", "classifier.width=1.0"],
        ["train-source", "generator", "--set", "eval.classifier=none"],
    ],
    ids=lambda a: " ".join(a),
)
def test_near_misses_still_plan(cli, args):
    code, out, err = cli(*args, "--dry-run", "--json")
    assert code == 0, err
    assert json.loads(out)["plan"]


PLAN = """
import sys
from ptl_cli.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert not exc.code, exc.code
print("torch" in sys.modules, file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["prune", "--method", "edge-popup", "--model", "torchvision:resnet50", "--dry-run"],
        [
            "transfer",
            "--source-classifier",
            "torchvision:resnet50",
            "--set",
            "source.generator.params.weights=biggan-deep-128",
            "--arch",
            "torchvision:resnet18",
            "--dry-run",
        ],
        [
            "train-source",
            "classifier",
            "--arch",
            "torchvision:resnet18",
            "--set",
            "classifier.width=1",
            "--dry-run",
        ],
    ],
    ids=["prune", "transfer", "train-source"],
)
def test_checking_names_imports_no_torch(args):
    """torchvision names are checked from its sources; only per-layer pruning settings build a
    network (on the meta device), so the usual plan stays a fraction of a second."""
    result = subprocess.run([sys.executable, "-c", PLAN, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["prune", "--batch-size", "128"], "train.batch_size 128 does not split over 3 processes"),
        (["transfer", "--set", "train.batch_size=16"], "train.batch_size = 16 does not split over 3"),
        (["transfer", "--set", "train.batch_size=18"], "pp.train.batch_size = 64 does not split over 3"),
    ],
    ids=["prune", "transfer", "transfer pp"],
)
def test_batches_the_processes_cannot_share(cli, tmp_path, monkeypatch, args, expected):
    """Under torchrun (its environment, here without processes) the world size is known at once;
    the PP batch used to fail only after the scratch and KD stages had trained."""
    for key, value in {"WORLD_SIZE": "3", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MASTER_PORT", "29555")
    code, _, dry = cli(*args, "--dry-run")
    assert code == 2 and expected in dry and dry.count("\n") == 1
    code, _, real = cli(*args, "--out", tmp_path / "run", "--quiet")
    assert (code, real) == (2, dry) and not (tmp_path / "run").exists()
