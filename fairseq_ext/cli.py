"""Run fairseq's command-line tools (the ones installed beside this Python) as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

USER_DIR = str(Path(__file__).resolve().parent)


def run(tool: str, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess:
    """``tool args...`` with output captured; on failure (``check``) raise with the output's tail."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([str(Path(sys.executable).parent / tool), *args], capture_output=True, text=True,
                            env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{tool} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def preprocess(raw: Path, data_bin: Path) -> None:
    """fairseq-preprocess of ``raw/{train,valid,test}.{de,en}`` with a joined dictionary."""
    run("fairseq-preprocess", "--source-lang", "de", "--target-lang", "en", "--trainpref", str(raw / "train"),
        "--validpref", str(raw / "valid"), "--testpref", str(raw / "test"), "--destdir", str(data_bin),
        "--joined-dictionary", "--workers", "1")
