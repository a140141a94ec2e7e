"""A FixMatch training step: ptl (ptl_ssl + the transfer loop's update) vs USB's ``semilearn``.

Same network (a ptl model, wrapped to return USB's ``{"logits", "feat"}`` dict), same
pre-augmented tensors, same optimizer settings. USB's step is ``FixMatch.train_step`` followed
by its ``ParamUpdateHook`` and ``EMAHook`` (what ``AlgorithmBase.train`` runs after each step);
its ``TimerHook`` is left out because it records CUDA events, which do not exist on a CPU-only
machine. A second comparison times the data side: USB's per-image PIL transforms (weak =
flip + reflect-pad-crop, strong = weak + RandAugment(3, 5), as its FixMatch datasets use) for one
batch against ptl's batched ``make_views``.

semilearn pins old dependencies: install it into a throwaway venv, never into the project:

    python -m venv --system-site-packages /tmp/usbenv
    /tmp/usbenv/bin/pip install --no-deps semilearn==0.3.2
    /tmp/usbenv/bin/pip install scikit-image scikit-learn timm transformers torchaudio ruamel.yaml \
        tensorboard wandb aim progress
    /tmp/usbenv/bin/python benchmarks/transfer_usb_fixmatch.py [--arch conv6 --width 0.5 --batch 16 --mu 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from argparse import Namespace

import torch
from torch import nn

from ptl_cli import plugins
from ptl_cli.data.views import make_views
from ptl_transfer import nets
from ptl_transfer.recipe import Optim


class USBNet(nn.Module):
    """A ptl model seen the way USB's algorithms expect: ``{"logits": ..., "feat": ...}``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self._feat: torch.Tensor | None = None
        nets.get_head(net).register_forward_pre_hook(lambda m, i: setattr(self, "_feat", i[0]))

    def forward(self, x: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
        return {"logits": self.net(x), "feat": self._feat}


def usb_fixmatch(model_fn, num_classes: int, cfg: Optim, steps: int):
    from semilearn.algorithms.fixmatch import FixMatch
    from semilearn.algorithms.hooks import FixedThresholdingHook, PseudoLabelingHook
    from semilearn.core.hooks import EMAHook, ParamUpdateHook

    class CPUFixMatch(FixMatch):
        def set_dataset(self):
            return None  # tensors are fed directly

        def set_hooks(self):
            self.register_hook(PseudoLabelingHook(), "PseudoLabelingHook")
            self.register_hook(FixedThresholdingHook(), "MaskingHook")
            self.register_hook(ParamUpdateHook(), "ParamUpdateHook", "HIGHEST")
            self.register_hook(EMAHook(), "EMAHook", "HIGH")

    args = Namespace(
        num_classes=num_classes, ema_m=cfg.ema_decay, epoch=1, num_train_iter=steps, num_eval_iter=10**9,
        num_log_iter=10**9, ulb_loss_ratio=1.0, use_cat=True, amp=False, clip_grad=0, save_name="bench",
        save_dir="/tmp/usb-bench", resume=False, algorithm="fixmatch", gpu=None, rank=0, distributed=False,
        world_size=1, use_pretrain=False, pretrain_path="", optim="SGD", lr=cfg.lr, momentum=cfg.momentum,
        weight_decay=cfg.weight_decay, layer_decay=1.0, num_warmup_iter=0, T=0.5, p_cutoff=0.95,
        hard_label=True, use_wandb=False, use_aim=False, dataset="cifar10", net="ptl",
        multiprocessing_distributed=False,
    )  # fmt: skip
    algo = CPUFixMatch(args, lambda num_classes, **kw: model_fn())
    algo.model.train()
    algo.hooks_dict["EMAHook"].before_run(algo)
    return algo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="conv6")
    parser.add_argument("--width", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--mu", type=int, default=7)
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    torch.manual_seed(0)
    pack = plugins.get("datasets", "fashion-pack").build(None, "train", False)
    mean, std = pack.info.mean, pack.info.std
    b, ub = args.batch, args.mu * args.batch
    cfg = Optim(steps=10_000, batch_size=b)

    def model_fn():
        torch.manual_seed(1)
        return plugins.get("models", args.arch).build(10, 1, 28, args.width)

    ours_model = model_fn()
    ours = {
        "algo": plugins.get("ssl", "fixmatch").build(10),
        "optimizer": nets.sgd(ours_model, cfg),
        "ema": nets.EMA(ours_model, cfg.ema_decay),
    }
    ours["scheduler"] = nets.cosine(ours["optimizer"], cfg.steps, cfg.cosine_cycles)
    usb = usb_fixmatch(lambda: USBNet(model_fn()), 10, cfg, cfg.steps)

    batches = []
    for i in range(args.steps + 3):
        idx = torch.randint(len(pack), (b + ub,), generator=torch.Generator().manual_seed(i))
        x = make_views(pack.images[idx[:b]], ("weak",), mean, std)["weak"]
        u = make_views(pack.images[idx[b:]], ("weak", "strong"), mean, std)
        batches.append((x, pack.targets[idx[:b]], u["weak"], u["strong"]))

    def ours_step(i: int) -> float:
        x, y, uw, us = batches[i]
        start = time.perf_counter()
        loss, _ = ours["algo"].loss(ours_model, {"weak": x}, y, {"weak": uw, "strong": us}, i, cfg.steps)
        ours["optimizer"].zero_grad(set_to_none=True)
        loss.backward()
        ours["optimizer"].step()
        ours["scheduler"].step()
        ours["ema"].update(ours_model, i)
        return time.perf_counter() - start

    def usb_step(i: int) -> float:
        x, y, uw, us = batches[i]
        start = time.perf_counter()
        usb.out_dict, usb.log_dict = usb.train_step(x_lb=x, y_lb=y, x_ulb_w=uw, x_ulb_s=us)
        usb.hooks_dict["ParamUpdateHook"].after_train_step(usb)
        usb.hooks_dict["EMAHook"].after_train_step(usb)
        usb.it += 1
        return time.perf_counter() - start

    times: dict[str, list[float]] = {"ptl": [], "usb": []}
    for i in range(args.steps + 3):
        order = (
            (("ptl", ours_step), ("usb", usb_step)) if i % 2 == 0 else (("usb", usb_step), ("ptl", ours_step))
        )
        for name, fn in order:
            t = fn(i)
            if i >= 3:
                times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{args.arch} width {args.width}, B={b}, μ={args.mu}, {args.steps} steps, "
        f"threads {torch.get_num_threads()}"
    )
    print(f"FixMatch step, ptl: median {med['ptl'] * 1000:.1f} ms")
    print(f"FixMatch step, USB: median {med['usb'] * 1000:.1f} ms")
    print(f"ratio ptl / USB: {med['ptl'] / med['usb']:.3f}")
    data_side(pack, b, ub, mean, std)


def data_side(pack, b: int, ub: int, mean, std, repeats: int = 5) -> None:
    """One step's augmentation: USB's per-image PIL pipeline vs ptl's batched views.

    On RGB copies of the images: USB's Cutout fills with an RGB colour and fails on grey images.
    """
    from PIL import Image
    from semilearn.datasets.augmentation import RandAugment
    from torchvision import transforms

    mean, std = tuple(mean) * 3, tuple(std) * 3
    weak = transforms.Compose(
        [
            transforms.RandomHorizontalFlip(),
            transforms.RandomCrop(28, padding=int(28 * 0.125), padding_mode="reflect"),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    strong = transforms.Compose(
        [
            transforms.RandomHorizontalFlip(),
            transforms.RandomCrop(28, padding=int(28 * 0.125), padding_mode="reflect"),
            RandAugment(3, 5),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    images = pack.images[: b + ub].expand(-1, 3, -1, -1).contiguous()
    pil = [Image.fromarray(img.permute(1, 2, 0).numpy(), mode="RGB") for img in images]
    usb_times, ptl_times = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.stack([weak(p) for p in pil[:b]])
        torch.stack([weak(p) for p in pil[b:]])
        torch.stack([strong(p) for p in pil[b:]])
        usb_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        make_views(images[:b], ("weak",), mean, std)
        make_views(images[b:], ("weak", "strong"), mean, std)
        ptl_times.append(time.perf_counter() - start)
    u, p = statistics.median(usb_times), statistics.median(ptl_times)
    print(
        f"augmentation for one step (B={b}, μB={ub}): USB per-image PIL {u * 1000:.1f} ms, "
        f"ptl batched {p * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
