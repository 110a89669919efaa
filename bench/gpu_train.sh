#!/usr/bin/env bash
# Training throughput of the vit-b16 and vit-l14 presets on one GPU in bf16: samples/s per variant
# (global-only and instance-aware), where a step's time goes, FLOPs per sample and MFU; JSON per preset.
# About 8 minutes on one H100/H200. Needs no network: the CLIP teacher and BERT text tower are random
# towers of the real shapes (throughput does not depend on the weights), the data is InstVL-Synth.
#
#   bash bench/gpu_train.sh                 # writes $OUT/vit-b16.json, $OUT/vit-l14.json (OUT=bench-gpu)
#   PEAK_TFLOPS=989 OUT=/tmp/out bash bench/gpu_train.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench-gpu}
PEAK=${PEAK_TFLOPS:-989}  # H100 SXM bf16 dense; H200 has the same compute
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
BERT="model.text.model=minilm"
BERT_BASE="model.text.random_config={hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072}"
CLIP_B="model.teacher.vision_config={hidden_size: 768, intermediate_size: 3072, num_hidden_layers: 12, num_attention_heads: 12, patch_size: 16, image_size: 224}"
CLIP_L="model.teacher.vision_config={hidden_size: 1024, intermediate_size: 4096, num_hidden_layers: 24, num_attention_heads: 16, patch_size: 14, image_size: 224}"

run() {  # preset, batch, image batch, clip override, seconds allowed
  local preset=$1 batch=$2 images=$3 clip=$4 limit=$5 name
  name=$(basename "$preset")
  timeout "$limit" python bench/train.py --preset "$preset" --device cuda --precision bf16 \
    --batch-size "$batch" --samples 384 --steps 8 --workers 6 --peak-tflops "$PEAK" \
    --set "$BERT" --set "$BERT_BASE" --set "$clip" --set "data.image_batch_size=$images" \
    --set "run.tensorboard=false" --json "$OUT/$name.json" | tee "$OUT/$name.md"
}

run train/vit-b16 32 128 "$CLIP_B" 210
run train/vit-l14 16 64 "$CLIP_L" 270
echo "wrote $OUT/vit-b16.json $OUT/vit-l14.json"
