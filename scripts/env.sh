#!/usr/bin/env bash
# Create (or refresh) the project virtualenv in .venv and activate it; sourced by demo.sh and test.sh.
# torch goes in first and pinned: 2.13.0 is a CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
VENV=${INSTVL_VENV:-.venv}
PY=${PYTHON:-python3}
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
stamp="$VENV/.instvl-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)-${INSTVL_EXTRAS:-all}"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  python -m pip install -q -U pip
  python -m pip install -q "torch==${INSTVL_TORCH:-2.13.0}"
  python -m pip install -q -e ".[${INSTVL_EXTRAS:-all}]"
  # The reference SAM2 package, CPU-only: build isolation would fetch a CUDA torch (~3 GB) to build it.
  python -m pip install -q hydra-core iopath
  SAM2_BUILD_CUDA=0 python -m pip install -q --no-build-isolation --no-deps "sam2==1.1.0"
  echo "$want" > "$stamp"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 RAY_USAGE_STATS_ENABLED=0
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-180}
