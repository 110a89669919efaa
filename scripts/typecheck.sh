#!/usr/bin/env bash
# Type-check src/instvl with mypy (settings and the per-package ratchet: [tool.mypy] in pyproject.toml).
# Run inside the project venv (scripts/test.sh calls it after scripts/env.sh has set that up).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m mypy src/instvl "$@"
