"""Prefect's fixed cost on a small build: `instvl build` of 4 files, and a rerun with nothing to do.

    python bench/orchestration.py --json orchestration.json            # 3 rounds, warm Prefect DB
    python bench/orchestration.py --src before=/tmp/old/src --src after=src --json o.json   # two trees


Each round builds a fresh OUT from the same InstVL-Synth media (`annotate/fake`, fake models, so the
time is orchestration: start-up, planning, the Prefect server, the flow, the manifest), then reruns the
same command, which has nothing left to do. One untimed build first creates the Prefect database (its
migrations are a one-off cost), so the rounds measure a warm database, as on a machine that builds
often. Every build is a fresh `python -m instvl build` process in its own process group, with its own
PREFECT_HOME and no PREFECT_API_URL (the embedded server). With `--src NAME=DIR` (repeatable) each round
runs every source tree in turn (PYTHONPATH=DIR), so versions of the code are compared under the same load.
Exit status 1 when a build fails.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def build(media: Path, out: Path, env: dict[str, str]) -> float:
    """Seconds one `instvl build` takes; raises with its output when it fails."""
    command = [sys.executable, "-m", "instvl", "build", str(media), str(out), "--config", "annotate/fake",
               "--set", "flow.progress=false"]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"build exited {process.returncode}:\n{output.decode(errors='replace')}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--src", action="append", default=[], metavar="NAME=DIR",
                        help="a source tree to measure (PYTHONPATH); default: the installed instvl")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    from instvl.datasets.synth import SynthConfig, generate

    work = Path(tempfile.mkdtemp(prefix="instvl-orchestration-"))
    try:
        generate(SynthConfig(output=str(work / "synth"), format="raw", num_samples=args.files, seed=0,
                             image_fraction=0.0, num_frames=8, max_objects=3))
        media = work / "synth" / "media"
        env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
        env.update(PREFECT_HOME=str(work / "prefect"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
                   PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
        trees = dict(item.split("=", 1) for item in args.src) or {"installed": ""}
        envs = {name: {**env, "PYTHONPATH": str(Path(src).resolve())} if src else env
                for name, src in trees.items()}
        build(media, work / "warm-up", next(iter(envs.values())))  # creates and migrates the Prefect DB
        times: dict[str, dict[str, list[float]]] = {name: {"build": [], "noop": []} for name in trees}
        for i in range(args.rounds):
            for name, tree_env in envs.items():
                out = work / f"out-{name}-{i}"
                times[name]["build"].append(build(media, out, tree_env))
                times[name]["noop"].append(build(media, out, tree_env))
                print(f"round {i + 1} {name}: build {times[name]['build'][-1]:.2f} s, rerun with nothing "
                      f"to do {times[name]['noop'][-1]:.2f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "files": args.files, "rounds": args.rounds,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "trees": {name: {"src": trees[name],
                         "build_s": [round(s, 2) for s in t["build"]],
                         "noop_rerun_s": [round(s, 2) for s in t["noop"]],
                         "build_median_s": round(statistics.median(t["build"]), 2),
                         "noop_rerun_median_s": round(statistics.median(t["noop"]), 2)}
                  for name, t in times.items()},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
