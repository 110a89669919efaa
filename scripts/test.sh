#!/usr/bin/env bash
# The test suite on a fresh machine: set up .venv, Chromium for the HTML tests, then mypy and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/env.sh
. scripts/env.sh
if ! command -v chromium >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "installing Chromium for the browser tests" >&2
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
# The Label Studio server lives in its own venv: its pins (Django, pyarrow<25, pytz<2023) clash with ours.
LS_VENV=${INSTVL_LABEL_STUDIO_VENV:-.venv-labelstudio}
if [[ ! -x "$LS_VENV/bin/label-studio" ]]; then
  echo "installing the Label Studio server into $LS_VENV" >&2
  "${PYTHON:-python3}" -m venv "$LS_VENV"
  "$LS_VENV/bin/python" -m pip install -q -U pip
  "$LS_VENV/bin/python" -m pip install -q "label-studio==1.23.2"
fi
echo "type-checking src/instvl (scripts/typecheck.sh)" >&2
bash scripts/typecheck.sh
python -m pytest -q "$@"
