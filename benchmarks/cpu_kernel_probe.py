"""Which CPU-kernel knob changes which kind of float result on this machine.

torch picks code paths by CPU in three places: its own vectorized kernels (ATen, capped by
``ATEN_CPU_CAPABILITY``), oneDNN's convolutions (``ONEDNN_MAX_CPU_ISA``) and MKL's matrix
products (``MKL_CBWR``). Each is read once when the library starts, so every setting runs in a
fresh process here, on one thread, and prints a short hash of a few results computed on the same
seeded inputs: a hash that differs from the first row's means that knob changes those digits.

    python benchmarks/cpu_kernel_probe.py
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

SETTINGS = [
    {},
    {"ATEN_CPU_CAPABILITY": "avx2"},
    {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    {"MKL_CBWR": "AVX2"},
    {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
]


def probe() -> str:
    """Hashes of a conv net's output and weight gradient, a linear layer, a matrix product, a
    matrix-vector product, a softmax and a row sum, on seeded inputs; with the CPU kernel level
    torch reports."""
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(1)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(64 * 14 * 14, 128),
    )
    images = torch.randn(64, 1, 28, 28)
    out = net(images)
    out.sum().backward()
    a = torch.randn(128, 512)
    results = {
        "conv": out.detach(),
        "conv grad": net[0].weight.grad,
        "linear": torch.nn.Linear(512, 256)(a).detach(),
        "matmul": a @ a.T,
        "matvec": torch.mv(torch.randn(256, 1152), torch.randn(1152)),  # BigGAN's spectral norm
        "softmax": torch.softmax(a, 1).sum(0),
        "sum": a.sum(1),
    }
    hashes = "  ".join(f"{k} {hashlib.sha1(v.numpy().tobytes()).hexdigest()[:6]}" for k, v in results.items())
    return f"{torch.backends.cpu.get_cpu_capability():7} {hashes}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(probe())
        return
    for setting in SETTINGS:
        env = {**os.environ, "OMP_NUM_THREADS": "1", **setting}
        for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR"):
            if name not in setting:
                env.pop(name, None)
        line = subprocess.run(
            [sys.executable, __file__, "--child"], env=env, capture_output=True, text=True, check=True
        ).stdout.strip()
        label = " ".join(f"{k}={v}" for k, v in setting.items()) or "(defaults)"
        print(f"{label:70} {line}")


if __name__ == "__main__":
    main()
