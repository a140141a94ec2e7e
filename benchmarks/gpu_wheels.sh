#!/usr/bin/env bash
# Wheels of ptl's dependencies that the lent GPU machine's image lacks (it has torch, torchvision,
# typer, rich, pluggy, safetensors, huggingface_hub, numpy, matplotlib, pillow, scipy and pytest),
# for Python 3.12 on x86-64, into DIR (default .whl, which must be git-ignored to travel only when
# carried). Versions are the ones this checkout's environment resolved; see docs/scale.md.
#
#   bash benchmarks/gpu_wheels.sh [DIR]
set -euo pipefail
dir="${1:-.whl}"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dir" \
  pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  typing_extensions==4.16.0 platformdirs==4.14.9 tomli_w==1.2.0 diffusers==0.42.1 \
  importlib_metadata==10.2.0
ls "$dir"
