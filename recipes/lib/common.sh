# shellcheck shell=bash
# Shared by every recipe: strict mode, the Python environment, errors, and the run options.
set -euo pipefail
LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$LIB_DIR/../.." && pwd)
if [ -z "${PY:-}" ]; then
  if [ -x "$REPO_DIR/.venv/bin/python" ]; then PY="$REPO_DIR/.venv/bin/python"; else PY=python; fi
fi
BIN=$(dirname "$PY")
export PY BIN REPO_DIR

die() { echo "$(basename "$0"): $*" >&2; exit 2; }

# parse_run_options ARGS...: --optimizer NAME, --seed N (1), --gpus G (1), --tiny, then the positional
# arguments, which are left in the array REST. Sets OPTIMIZER, SEED, GPUS, TINY (0/1).
# shellcheck disable=SC2034  # the variables it sets are its outputs
parse_run_options() {
  OPTIMIZER="" SEED=1 GPUS=1 TINY=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --optimizer) OPTIMIZER=$2; shift 2 ;;
      --seed) SEED=$2; shift 2 ;;
      --gpus) GPUS=$2; shift 2 ;;
      --tiny) TINY=1; shift ;;
      --) shift; break ;;
      -*) die "unknown option $1 (allowed: --optimizer, --seed, --gpus, --tiny)" ;;
      *) break ;;
    esac
  done
  REST=("$@")
}
