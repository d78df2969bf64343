# shellcheck shell=bash
# Shared by the IWSLT14 De-En recipes: lib/common.sh plus fairseq's plugin directory.
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
RECIPE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
USER_DIR=$REPO_DIR/fairseq_ext
export USER_DIR RECIPE_DIR
