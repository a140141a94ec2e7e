"""The quality numbers of the bundled source models' cards, reproducible with one command each.

    python benchmarks/generators_quality.py classifier [--bundled fashion-coarse|fashion04]
    python benchmarks/generators_quality.py biggan --per-class 200 [--truncation 1.0,0.7,0.5]
    python benchmarks/generators_quality.py diffusers --per-class 200 [--steps 5,10,25,50] [--eta 0,1]
    python benchmarks/generators_quality.py soft NAME --pair 1,4 --n 100 [--steps 25 --eta 1]

``--bundled`` names the set of bundled models (default ``fashion-coarse``: the 4 coarse classes
top / trouser / footwear / bag of train half A; ``fashion04``: classes 0–4).

* classifier: accuracy of the ``bundled`` classifier on the Fashion-MNIST test images of its
  classes (full test split from the Debian location, and the bundled pack), overall and per class;
* generators: *agreement*, the rate at which samples conditioned on class ``c`` are classified as
  ``c`` by the bundled classifier, per class and on average (seed 0), for each setting given;
* soft: the classifier's mean probabilities for samples conditioned on a 50/50 mix of two classes,
  next to those for each pure class.
"""

from __future__ import annotations

import argparse
import time

import torch

from ptl_cli import plugins
from ptl_generators.quality import agreement, mean_probs
from ptl_generators.train import select_classes

BUNDLED = "fashion-coarse"  # set from --bundled


def bundled_classifier():
    return plugins.get("classifiers", "bundled").build("cpu", params={"weights": BUNDLED})


def test_set(name: str):
    """The test images of the bundled classifier's classes, labelled as it labels them."""
    if BUNDLED == "fashion-coarse":
        return plugins.get("datasets", name).build(None, "test", False, params={"coarse": True})
    return select_classes(plugins.get("datasets", name).build(None, "test", False), [0, 1, 2, 3, 4])


def classifier_report() -> None:
    clf = bundled_classifier()
    classes = list(range(clf.num_classes))
    print("| test set | images | accuracy | per class |")
    print("|---|---|---|---|")
    for name in ("fashion-mnist", "fashion-pack"):
        test = test_set(name)
        with torch.no_grad():
            pred = torch.cat(
                [clf(test.images[i : i + 500].float() / 255).argmax(1) for i in range(0, len(test), 500)]
            )
        acc = (pred == test.targets).float().mean().item()
        per = [
            ((pred == c) & (test.targets == c)).sum().item() / (test.targets == c).sum().item()
            for c in classes
        ]
        print(f"| {name} | {len(test)} | {acc:.4f} | {' / '.join(f'{p:.3f}' for p in per)} |")


def generator_report(name: str, settings: list[dict], per_class: int) -> None:
    clf = bundled_classifier()
    print("| settings | agreement | per class | seconds |")
    print("|---|---|---|---|")
    for params in settings:
        gen = plugins.get("generators", name).build("cpu", params={"weights": f"bundled:{BUNDLED}", **params})
        start = time.perf_counter()
        mean, rates = agreement(gen, clf, per_class, seed=0)
        took = time.perf_counter() - start
        shown = ", ".join(f"{k}={v}" for k, v in params.items()) or "defaults"
        print(f"| {shown} | {mean:.3f} | {' / '.join(f'{r:.2f}' for r in rates)} | {took:.0f} |")


def soft_report(name: str, pair: tuple[int, int], n: int, params: dict) -> None:
    clf = bundled_classifier()
    gen = plugins.get("generators", name).build("cpu", params={"weights": f"bundled:{BUNDLED}", **params})
    classes = range(clf.num_classes)
    a, b = pair
    rows = {
        f"pure {a}": [1.0 if i == a else 0.0 for i in classes],
        f"pure {b}": [1.0 if i == b else 0.0 for i in classes],
        f"{a}:0.5,{b}:0.5": [0.5 if i in pair else 0.0 for i in classes],
    }
    print(f"| conditioning | mean p({a}) | mean p({b}) | mean p(other) |")
    print("|---|---|---|---|")
    for label, row in rows.items():
        p = mean_probs(gen, clf, row, n, seed=0)
        print(f"| {label} | {p[a]:.3f} | {p[b]:.3f} | {1 - p[a] - p[b]:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["classifier", "biggan", "diffusers", "soft"])
    parser.add_argument("generator", nargs="?", default="biggan", help="for `soft`: biggan or diffusers")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--truncation", default="1.0")
    parser.add_argument("--steps", default="25")
    parser.add_argument("--guidance", default="2.0")
    parser.add_argument("--eta", default="", help="DDIM eta values (default: the model's own)")
    parser.add_argument("--pair", default="1,4")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bundled", default="fashion-coarse", choices=["fashion-coarse", "fashion04"])
    args = parser.parse_args()
    global BUNDLED
    BUNDLED = args.bundled
    torch.set_num_threads(args.threads)
    if args.what == "classifier":
        classifier_report()
    elif args.what == "biggan":
        settings = [{"truncation": float(t)} for t in args.truncation.split(",")]
        generator_report("biggan", settings, args.per_class)
    elif args.what == "diffusers":
        etas = [float(e) for e in args.eta.split(",")] if args.eta else [None]
        settings = [
            {"steps": int(s), "guidance_scale": float(g), **({} if e is None else {"eta": e})}
            for e in etas
            for g in args.guidance.split(",")
            for s in args.steps.split(",")
        ]
        generator_report("diffusers", settings, args.per_class)
    else:
        a, b = (int(x) for x in args.pair.split(","))
        params: dict = {}
        if args.generator == "diffusers":
            params["steps"] = int(args.steps.split(",")[0])
            if args.eta:
                params["eta"] = float(args.eta.split(",")[0])
        soft_report(args.generator, (a, b), args.n, params)


if __name__ == "__main__":
    main()
