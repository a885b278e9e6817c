"""End-to-end FPS of ``ubiq detect``, ``ubiq track`` and ``ubiq run counter`` with the same
model and source, interleaved over rounds, and the ratios the tracking and apps issues
set bars on: track / detect (>= 0.95) and counter / track (>= 0.9).

    python benchmarks/pipeline_fps.py --rounds 3 --workdir /tmp/pipeline-fps

The source is a crossing clip from ``ubiq.models.datasets.crossings`` (objects moving
across a line, so the tracker and the rules have work), the model ``ubiq-det-mnv2-320`` (the
counter's default); each run writes a JSONL, as a user would. FPS is each run's own summary
(first frame to last).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from ubiq.models.datasets import crossings


def run(command: list[str], summary: Path) -> float:
    subprocess.run(
        [sys.executable, "-m", "ubiq", *command, "--summary-json", str(summary), "--no-stages"],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(json.loads(summary.read_text())["fps"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default="/tmp/ubiq-pipeline-fps")
    parser.add_argument("--model", default="ubiq-det-mnv2-320", help="the counter's default")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    clip = crossings.generate(crossings.CrossingSpec(seed=7))
    video = workdir / "clip" / "clip.mp4"
    if not video.is_file():
        crossings.write(clip, video.parent)
    line = ",".join(str(v) for v in clip.line)
    common = ["--source", str(video), "--model", args.model]
    commands = {
        "detect": ["detect", *common, "--conf", "0.2", "--jsonl", str(workdir / "d.jsonl")],
        "track": ["track", *common, "--conf", "0.2", "--jsonl", str(workdir / "t.jsonl")],
        "counter": ["run", "counter", *common, "--line", line, "--jsonl", str(workdir / "c.jsonl")],
    }
    fps: dict[str, list[float]] = {name: [] for name in commands}
    for round_ in range(args.rounds):
        for name, command in commands.items():
            fps[name].append(run(command, workdir / f"{name}.json"))
        print(
            f"round {round_ + 1}: "
            + ", ".join(f"{name} {values[-1]:.1f} FPS" for name, values in fps.items()),
            flush=True,
        )
    ratios = {
        "track / detect": [t / d for t, d in zip(fps["track"], fps["detect"], strict=True)],
        "counter / track": [c / t for c, t in zip(fps["counter"], fps["track"], strict=True)],
    }
    for name, values in fps.items():
        print(f"{name:8s} median {statistics.median(values):.1f} FPS")
    for name, values in ratios.items():
        bar = 0.95 if name.startswith("track") else 0.9
        median = statistics.median(values)
        print(f"{name}: {median:.3f} (per round {[round(v, 3) for v in values]}; bar >= {bar})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
