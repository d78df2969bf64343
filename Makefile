# The two commands of the README: `make demo` (the main job) and `make test`.
# Each first creates or refreshes the project-local virtual environment .venv (tools/bootstrap.sh).
PY := .venv/bin/python

.PHONY: demo test lint venv gpu-check

venv:
	@tools/bootstrap.sh dev,fairseq,timm,bench

demo: venv
	$(PY) -m examples.demo --out out/demo
	$(PY) -m examples.fairseq_demo --out out/fairseq_demo
	$(PY) -m examples.timm_demo --out out/timm_demo

lint: venv
	$(PY) -m ruff check .
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q

# CUDA-only tests and the GPU benchmark set, never part of `make test` (CI has no GPU); skips cleanly without CUDA.
gpu-check: venv
	tools/gpu_check.sh out/gpu_check
