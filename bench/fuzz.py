"""Fuzz the build's per-input fault boundary at scale: how corrupted and odd media end, and files/s.

Writes byte-mutated copies of a small MP4, JPEG and PNG (fixed seeds) plus odd media (a decompression
bomb, videos without frames, odd codecs and containers, a non-UTF-8 name), annotates them with the fake
models unit by unit, and counts inputs annotated, quarantined by reason, and lost to a crashed unit.

    python bench/fuzz.py --json fuzz.json                       # 2000 mutated files, seeds 0
    python bench/fuzz.py --mutated 500 --seed 3 --no-doc

The table replaces the "Fuzzing" section of docs/BENCHMARKS.md (unless --no-doc). Exit status 1 when
any unit crashed or any input is unaccounted for.
"""

import argparse
import json
import logging
import os
import platform
import re
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from instvl.testing.fuzz import FuzzResult, make_corpus, run_corpus  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"
SECTION = "## Fuzzing"


def markdown(result: FuzzResult, args: argparse.Namespace) -> str:
    data = result.to_json()
    command = f"python bench/fuzz.py --mutated {args.mutated} --seed {args.seed} --json fuzz.json"
    lines = [SECTION, "",
             "Command:", "", "```bash", command, "```", "",
             "What it does: writes byte-mutated copies (flipped bytes, cuts, inserted noise, zeroed or "
             "repeated spans) of a small MP4, JPEG and PNG with fixed seeds, plus odd media (an image over "
             "Pillow's decompression-bomb limit, videos without frames, MJPEG/VP9/FFV1/MPEG-4/HEVC, a 1x1 "
             "JPEG, a 16x2048 PNG, CMYK and 16-bit images, a GIF named .jpg, an MP4 named .jpg, a non-UTF-8 "
             "name), and "
             "annotates them with `annotate/fake` unit by unit (`run_unit`, 16 files per unit). Every input "
             "must end annotated or quarantined by name; a unit that raises counts its files as crashed. "
             "tests/testing/test_fuzz.py runs the same with 300 mutated files.", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared), Python "
             f"{platform.python_version()}.", "",
             "| files | annotated | quarantined | crashed units | unaccounted | seconds | files/s |",
             "|---:|---:|---:|---:|---:|---:|---:|",
             f"| {data['files']} | {data['annotated']} | {data['quarantined']} | "
             f"{len(data['crashed_units'])} | {len(data['unaccounted'])} | {data['seconds']} | "
             f"{data['files_per_s']} |", "",
             "| quarantined at: reason | files |", "|---|---:|"]
    lines += [f"| {reason} | {count} |" for reason, count in data["quarantined_by_reason"].items()]
    return "\n".join(lines) + "\n"


def write_doc(section: str) -> None:
    text = DOC.read_text()
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutated", type=int, default=2000, help="mutated files (a third each MP4/JPEG/PNG)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the counts as JSON here")
    parser.add_argument("--no-doc", action="store_true", help="do not update docs/BENCHMARKS.md")
    parser.add_argument("--keep", type=Path, help="build in this folder (kept) instead of a temporary one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="instvl-fuzz-") as tmp:
        work = args.keep or Path(tmp)
        make_corpus(work / "media", mutated=args.mutated, seed=args.seed)
        result = run_corpus(work / "media", work / "out")
    data = result.to_json()
    print(json.dumps(data, indent=1))
    if args.json:
        args.json.write_text(json.dumps(data, indent=1))
    if not args.no_doc:
        write_doc(markdown(result, args))
    return 1 if result.crashed or result.unaccounted else 0


if __name__ == "__main__":
    sys.exit(main())
