#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) with pinned versions.
# Idempotent: it reinstalls only when pyproject.toml, constraints.txt or the requested extras change.
# Usage: tools/bootstrap.sh [EXTRAS]   (default: dev)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
extras=${1:-dev}
venv="$root/.venv"
python=${PYTHON:-python3.11}
command -v "$python" >/dev/null 2>&1 || python=python3
stamp_value="$extras $(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$venv/.stamp" ] && [ "$(cat "$venv/.stamp")" = "$stamp_value" ]; then
  exit 0
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
echo "installing .[$extras] into .venv (log: .venv/install.log)"
if ! { "$venv/bin/python" -m pip install --upgrade pip &&
       "$venv/bin/python" -m pip install -c "$root/constraints.txt" -e "${root}[${extras}]"; } > "$venv/install.log" 2>&1; then
  tail -n 40 "$venv/install.log" >&2
  echo "bootstrap: pip install failed; see .venv/install.log" >&2
  exit 1
fi
echo "$stamp_value" > "$venv/.stamp"
