#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv, then run the offline CPU demo (tiny preset, generated media).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh
instvl demo "${1:-demo-out}" "${@:2}"
