#!/usr/bin/env bash
# `make gpu-check`: every CUDA-only test (pytest -m gpu) and the GPU benchmark set, in about 8 minutes, with all
# that it measured under one folder ($1, default out/gpu_check): versions, JUnit report and log, benchmark CSV,
# Markdown, and a copy of docs/benchmarks.md with its bench:gpu block filled. Without CUDA it says so and exits 0.
# On a machine without a package registry, first run tools/gpu_wheels.sh where there is one and bring .whl/ along.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=$(realpath -m "${1:-out/gpu_check}")
mkdir -p "$out"
py=${PY:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
if [ -d .whl ] && ls .whl/* >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir --target /tmp/gpu_site \
    .whl/* > "$out/install.log" 2>&1 || { echo "gpu-check: installing .whl/ failed (see install.log)"; exit 1; }
  export PYTHONPATH=/tmp/gpu_site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
  echo "gpu-check: no CUDA device here, nothing run (the GPU tests are collected and skipped)" | tee "$out/skipped.txt"
  exit 0
fi
{ nvidia-smi; "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())'
  "$py" -m pip list 2>/dev/null | grep -iE '^(timm|fairseq|pytorch.optimizer|torchvision) '; } > "$out/versions.txt" 2>&1
status=0
timeout 330 "$py" -m pytest -m gpu -rA -p no:cacheprovider --junitxml="$out/junit.xml" tests/test_gpu.py \
  2>&1 | tee "$out/pytest.log" || status=1
cp docs/benchmarks.md "$out/benchmarks.md"
timeout 140 "$py" -m benchmarks --set gpu --repeats 5 --csv "$out/bench.csv" --markdown "$out/bench.md" \
  --readme "$out/benchmarks.md" --section gpu 2>&1 | tee "$out/bench.log" || status=1
echo "gpu-check: done (status $status); results in $out"
exit $status
