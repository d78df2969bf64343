# shellcheck shell=bash
# Shared by the IWSLT14 De-En recipes: the Python environment and fairseq's plugin directory.
set -euo pipefail
RECIPE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$RECIPE_DIR/../.." && pwd)
if [ -z "${PY:-}" ]; then
  if [ -x "$REPO_DIR/.venv/bin/python" ]; then PY="$REPO_DIR/.venv/bin/python"; else PY=python; fi
fi
BIN=$(dirname "$PY")
USER_DIR=$REPO_DIR/fairseq_ext
export PY BIN USER_DIR RECIPE_DIR REPO_DIR

die() { echo "$(basename "$0"): $*" >&2; exit 2; }
