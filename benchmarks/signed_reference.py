"""Signed supermask against the reference code (TensorFlow): one layer's masks, weights and gradients.

Usage: ``python benchmarks/signed_reference.py --checkout /tmp/ss --tf-python /tmp/tfenv/bin/python
[--steps 5] [--threshold 0.4] [--lr 0.1]``

``--checkout`` is a checkout of kosnil/signed_supermasks, written in TensorFlow 2.7 / Keras 2; its
``custom_layers.py`` (``MaskedConv2D``, ``MaskedDense``) is imported from there, never copied, by
``--tf-python``: a Python with TensorFlow and Keras 2, kept out of ptl's environment::

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install tensorflow-cpu==2.21.0 tf-keras==2.21.0

(TensorFlow 2.7 has no wheel for Python 3.11; ``TF_USE_LEGACY_KERAS=1`` is set for it, since the
layers need Keras 2.) Two layers of a ptl Conv-2 (width 0.25, Fashion-MNIST's 1×28×28) prepared by
ptl's ``signed-supermask`` pruner are compared, each on its own: the first convolution, fed real
images of the bundled pack, and the middle linear layer ``classifier.3``, fed what reaches it in
that network. The reference's layer gets the same ``W`` and ``S`` (its mask variable) through a
small numpy bridge (``.npz`` files; NCHW/OIHW and ``(out, in)`` turned into NHWC/HWIO and
``(in, out)``), and its fixed threshold the way its ``experiment_looper.py`` sets it:
``update_tanh_th(percentage=--threshold)``, i.e. ``τ = threshold · max|S|``. ptl keeps a count, so
its layer prunes ``#{|S| ≤ τ}``: the reference's sparsity at the start. Both take ``--steps`` plain
SGD steps (``S ← S - lr · dL/dS``, by hand, the same on both sides) on the loss ``Σ out ⊙ U`` with
the same inputs and upstream gradients ``U`` ~ N(0, 1). Per step the script prints, per layer, the
largest differences of the forward weights, the outputs, the score gradients and the scores, the
mask entries (in {−1, 0, 1}) that differ and how many weights each side keeps. With
``--reference-count`` ptl's count follows the reference's threshold: before every step its layer
prunes ``#{|S| ≤ τ}`` of its own scores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

LAYERS = ("features.0", "classifier.3")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", required=True, help="checkout of kosnil/signed_supermasks")
    parser.add_argument("--tf-python", default="python", help="a Python with tensorflow and tf-keras")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.4, help="τ as a fraction of max|S| (tanh_th)")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reference-count",
        action="store_true",
        help="before every step ptl prunes #{|S| ≤ τ} of its own scores (the reference's threshold)",
    )
    parser.add_argument("--reference-side", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference_side:
        reference_side(args.checkout, *args.reference_side)
    else:
        compare(args)


def compare(args: argparse.Namespace) -> None:
    """ptl's side, and the run of the reference's side on the same arrays in ``--tf-python``."""
    import torch
    from pack_batches import batch, pack_images
    from torch import nn

    from ptl_cli import plugins, pruning
    from ptl_prune import supermask
    from ptl_prune.signed import SignedSupermaskPruner

    torch.set_num_threads(1)
    model = plugins.get("models", "conv2").build(10, 1, 28, 0.25, params={})
    model = pruning.prepare(SignedSupermaskPruner(sparsity=0.5), model, args.seed)
    images, labels = pack_images(args.steps)
    inputs: dict[str, list[torch.Tensor]] = {name: [] for name in LAYERS}
    hooks = [
        model.get_submodule(name).register_forward_pre_hook(
            lambda _, x, name=name: inputs[name].append(x[0].detach().clone())
        )
        for name in LAYERS
    ]
    with torch.no_grad():
        for step in range(args.steps):
            model(batch(images, labels, step)[0])
    for hook in hooks:
        hook.remove()
    gen = torch.Generator().manual_seed(args.seed)
    arrays: dict[str, np.ndarray] = {"lr": np.float32(args.lr), "threshold": np.float32(args.threshold)}
    ours: dict[str, tuple[nn.Module, supermask.Supermask, list[torch.Tensor]]] = {}
    for name in LAYERS:
        module = model.get_submodule(name)
        mask = supermask.supermask_of(module)
        with torch.no_grad():
            upstream = [torch.randn(module(x).shape, generator=gen) for x in inputs[name]]
        ours[name] = (module, mask, upstream)
        arrays[f"{name}/w"] = supermask.original(module).detach().numpy()
        arrays[f"{name}/s"] = mask.scores.detach().numpy().copy()
        arrays[f"{name}/x"] = torch.stack(inputs[name]).numpy()
        arrays[f"{name}/u"] = torch.stack(upstream).numpy()
    with tempfile.TemporaryDirectory() as tmp:
        np.savez(os.path.join(tmp, "in.npz"), **arrays)
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
        command = [args.tf_python, __file__, "--checkout", args.checkout, "--reference-side"]
        subprocess.run(
            [*command, os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")], env=env, check=True
        )
        theirs = dict(np.load(os.path.join(tmp, "out.npz")))
    capability = torch.backends.cpu.get_cpu_capability()
    print(f"torch {torch.__version__}, CPU capability {capability}, {theirs['version']}")
    for name in LAYERS:
        module, mask, upstream = ours[name]
        tau = float(theirs[f"{name}/tau"])
        n = mask.scores.numel()
        mask.pruned = below(mask, tau)
        print(f"\n{name}: n = {n}, τ = {tau:.6g}, both prune {mask.pruned} at the start")
        print(
            "step  max|Ŵ diff|  max|out diff|  max|dS diff| (max|dS|)  max|S diff|  masks differ  "
            "kept ptl / ref"
        )
        for step, x in enumerate(inputs[name]):
            if args.reference_count:  # ptl's count follows the reference's threshold
                mask.pruned = below(mask, tau)
            mask.scores.grad = None
            out = module(x)
            (out * upstream[step]).sum().backward()
            with torch.no_grad():
                w_hat = mask.forward(supermask.original(module))
                signs = mask.signs()
                mask.scores -= args.lr * mask.scores.grad
            ref = {key: theirs[f"{name}/{key}"][step] for key in ("w_hat", "out", "grad", "mask", "s")}
            diffs = [
                float((w_hat - torch.from_numpy(ref["w_hat"])).abs().max()),
                float((out.detach() - torch.from_numpy(ref["out"])).abs().max()),
                float((mask.scores.grad - torch.from_numpy(ref["grad"])).abs().max()),
                float((mask.scores.detach() - torch.from_numpy(ref["s"])).abs().max()),
            ]
            flips = int((signs != torch.from_numpy(ref["mask"]).to(torch.int8)).sum())
            kept = (n - mask.pruned, int(np.count_nonzero(ref["mask"])))
            scale = float(mask.scores.grad.abs().max())
            print(
                f"{step + 1:4d}  {diffs[0]:11.3g}  {diffs[1]:13.3g}  {diffs[2]:12.3g} ({scale:7.3g})  "
                f"{diffs[3]:11.3g}  {flips:12d}  {kept[0]:6d} / {kept[1]}"
            )


def below(mask, tau: float) -> int:
    """How many of the layer's scores the reference's fixed threshold prunes: ``#{|S| ≤ τ}``."""
    return int((mask.scores.detach().abs() <= tau).sum())


def reference_side(checkout: str, path_in: str, path_out: str) -> None:
    """Runs in ``--tf-python``: the reference's own layer on the arrays, in ptl's layout on the way out."""
    sys.path.insert(0, checkout)
    import custom_layers
    import tensorflow as tf

    data = np.load(path_in)
    lr, threshold = float(data["lr"]), float(data["threshold"])
    results: dict[str, np.ndarray] = {"version": np.array(f"tensorflow {tf.__version__}")}
    for name in LAYERS:
        w, s, xs, us = (data[f"{name}/{key}"] for key in ("w", "s", "x", "u"))
        if w.ndim == 4:  # torch (out, in, kh, kw), NCHW <-> TensorFlow (kh, kw, in, out), NHWC
            layer = custom_layers.MaskedConv2D(
                w.shape[0], w.shape[2], input_shape=(None, *xs.shape[3:], w.shape[1])
            )
            to_tf, from_tf = (0, 2, 3, 1), (0, 3, 1, 2)
            kernel, back = (2, 3, 1, 0), (3, 2, 0, 1)
        else:  # torch (out, in) <-> TensorFlow (in, out)
            layer = custom_layers.MaskedDense(w.shape[1], w.shape[0])
            to_tf = from_tf = (0, 1)
            kernel = back = (1, 0)
        layer.w.assign(w.transpose(kernel))
        layer.mask.assign(s.transpose(kernel))
        layer.update_tanh_th(percentage=threshold)  # as experiment_looper.py does, once
        results[f"{name}/tau"] = np.float32(layer.tanh_th)
        per_step: dict[str, list[np.ndarray]] = {key: [] for key in ("w_hat", "out", "grad", "mask", "s")}
        for x, u in zip(xs, us, strict=True):
            with tf.GradientTape() as tape:
                out = layer(tf.constant(x.transpose(to_tf)))
                loss = tf.reduce_sum(out * tf.constant(u.transpose(to_tf)))
            grad = tape.gradient(loss, layer.mask)
            ste = layer.signed_supermask()  # eager: the value the forward multiplies W by, and the mask
            per_step["w_hat"].append((layer.w * ste).numpy().transpose(back))
            per_step["mask"].append(layer.bernoulli_mask.numpy().transpose(back))
            per_step["out"].append(out.numpy().transpose(from_tf))
            per_step["grad"].append(grad.numpy().transpose(back))
            layer.mask.assign_sub(lr * grad)
            per_step["s"].append(layer.mask.numpy().transpose(back))
        results.update({f"{name}/{key}": np.stack(value) for key, value in per_step.items()})
    np.savez(path_out, **results)


if __name__ == "__main__":
    main()
