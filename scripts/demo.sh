#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then run the offline CPU demo (`flows/demo` preset):
# generated media, annotated by the weight-free `annotate/demo` models (colour segmentation, template
# tracking, captions from pixels), then a few `train/tiny` steps and retrieval eval.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh
instvl demo "${1:-demo-out}" "${@:2}"
