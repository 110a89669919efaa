"""How `bench/pipeline.py` judges and shows its phases: the rows of the two paths compared, the issue's
targets checked, the table for docs/BENCHMARKS.md."""

from typing import Any

VOLATILE = {"created_at", "media"}
"""Row fields that differ between two runs of the same inputs (the media are re-encoded)."""
TARGETS = {"busy": 0.80, "caption_batch": 48, "detect_batch": 6, "speedup": 3.0, "orchestration": 0.05}


def comparable(row: dict) -> dict:
    """`row` without the fields two runs of the same inputs may differ in."""
    row = {k: v for k, v in row.items() if k not in VOLATILE}
    row["provenance"] = {k: v for k, v in (row.get("provenance") or {}).items() if k not in VOLATILE}
    return row


def check(phases: dict[str, dict[str, Any]], captioner: str = "emulated") -> dict[str, Any]:
    """The targets, on `captioner`'s stream phase against its serial phase (the in-process captioner's, or
    the workers' with `--workers`; a stage's busy share of the run is in the table: the detector's work is
    a few per cent of any run)."""
    stream = phases[f"{captioner}/stream"]
    serial = phases.get(f"{captioner}/serial", stream)
    stages = stream["stages"]
    # models that share a GPU (`--gpus shared|split`) take turns: the GPU is the device to keep busy
    devices = {"separate": ["detect", "track", "caption"], "split": ["gpu", "caption"], "shared": ["gpu"]}[
        stream.get("gpus", "separate")]
    results = {f"{name} busy >= 80% of its phase": stages[name]["busy_of_phase"] >= TARGETS["busy"]
               for name in devices}
    results["mean caption batch >= 48"] = stages["caption"]["mean_batch"] >= TARGETS["caption_batch"]
    results["mean detector batch >= 6"] = stages["detect"]["mean_batch"] >= TARGETS["detect_batch"]
    if serial is not stream:
        results["clips/s >= 3x per-clip path"] = \
            stream["clips_per_s_modelled"] >= TARGETS["speedup"] * serial["clips_per_s_modelled"]
    results["orchestration <= 5%"] = stream["orchestration_share"] <= TARGETS["orchestration"]
    results["rows equal"] = all(p.get("rows_equal", True) for p in phases.values())
    return results


def table(phases: dict[str, dict[str, Any]]) -> str:
    lines = ["| path | captioner | clips/s | speed-up | first GPU call | detect busy (phase / run) | "
             "detect batch | track busy (phase / run) | caption busy (phase / run) | caption batch (step / "
             "time) | shared GPU busy (phase / run) | orchestration | Prefect | peak RSS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in phases.values():
        serial = phases.get(f"{p['captioner']}/serial", p)
        s = p["stages"]
        speedup = p["clips_per_s_modelled"] / serial["clips_per_s_modelled"]
        busy = {name: f"{s[name]['busy_of_phase']:.0%} / {s[name]['busy_of_run']:.0%}" for name in s}
        busy.setdefault("gpu", "-")
        prefect = f"{p['prefect_share']:.1%} ({p['prefect_s']:.1f} s)" if p["prefect_s"] else "-"
        units = f" ({p['units']} units{' each' if 'workers' in p else ''})" if p.get("units", 1) > 1 else ""
        lines.append(
            f"| {p['mode']}{units} | {p['captioner']} | {p['clips_per_s_modelled']:.2f} | {speedup:.1f}x | "
            f"{p['first_gpu_call_s']:.2f} s | {busy['detect']} | {s['detect']['mean_batch']:.1f} | "
            f"{busy['track']} | {busy['caption']} | {s['caption']['mean_batch']:.1f} / "
            f"{s['caption']['running_time_weighted']:.1f} | {busy['gpu']} | "
            f"{p['orchestration_share']:.1%} | {prefect} | {p['peak_rss_mib']:.0f} MiB |")
    return "\n".join(lines)
