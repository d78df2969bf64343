#!/usr/bin/env bash
# Fetch, on a machine with a package registry, what a GPU machine without one lacks for `make gpu-check`: the
# pinned fairseq, timm and pytorch_optimizer stacks as Python 3.12 x86-64 wheels (about 25 MB) in .whl/, which git
# ignores. tools/gpu_check.sh installs them there when the folder travels with the checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.whl
mkdir -p "$dest"
grep -qxF '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d "$dest" fairseq-fixed==0.12.3.1 timm==1.0.31 pytorch_optimizer==4.1.0 sacremoses==0.2.0 \
  subword-nmt==0.3.8 tensorboardX==2.6.5 bitarray==3.12.3 hydra-core==1.3.2 omegaconf==2.3.0
python3 -m pip download -q --no-deps -d "$dest" antlr4-python3-runtime==4.9.3  # pure Python, an sdist only
ls "$dest"
