"""``ubiq val --task track --data MOTDIR``: HOTA, MOTA and IDF1 on MOTChallenge sequences.

```
ubiq val --task track --data MOTDIR                      # tracks SEQ/det/det.txt, then scores
ubiq val --task track --data MOTDIR --results RESDIR     # scores RESDIR/SEQ.txt
```

``MOTDIR`` holds sequence folders with ``gt/gt.txt`` (MOT15 or MOT17 columns; MOT17's
class and considered flags are respected), or is one such folder. The metrics are
TrackEval's, as packaged by Roboflow's ``trackers.eval``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags only ``--task track`` reads."""
    from ubiq.pipelines.track import TRACKERS

    parser.add_argument(
        "--results",
        default=None,
        metavar="RESDIR",
        help="track: score RESDIR/SEQ.txt result files (default: run ubiq's tracker on each "
        "sequence's det/det.txt)",
    )
    parser.add_argument(
        "--tracker",
        choices=TRACKERS,
        default="bytetrack",
        help="track: the tracker run on det/det.txt when --results is not given",
    )


def run(args: argparse.Namespace) -> int:
    import tempfile

    from ubiq.errors import ConfigError
    from ubiq.pipelines.track.evaluate import combined, score, sequences, track_frames
    from ubiq.pipelines.track.mot import read_detections, write_atomically
    from ubiq.pipelines.track.tracker import TrackerConfig

    if args.model is not None:
        raise ConfigError(
            f"--task track scores tracker results or public detections, not a model: "
            f"drop {args.model!r}"
        )
    folders = sequences(args.data)
    results_dir = Path(args.results) if args.results else None
    if results_dir is not None and not results_dir.is_dir():
        raise ConfigError(f"--results {args.results} is not a folder")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        result_files = []
        for folder in folders:
            if results_dir is not None:
                result = results_dir / f"{folder.name}.txt"
                if not result.is_file():
                    raise ConfigError(f"--results {args.results} has no {folder.name}.txt")
            else:
                det = folder / "det" / "det.txt"
                if not det.is_file():
                    raise ConfigError(
                        f"{folder.name} has no det/det.txt to track; give --results RESDIR"
                    )
                fps = _frame_rate(folder)
                lines, _ = track_frames(
                    read_detections(det), TrackerConfig.preset(args.tracker), fps=fps
                )
                result = Path(scratch) / f"{folder.name}.txt"
                write_atomically(result, lines)
            result_files.append(result)
            rows.append(score(folder, result))
        total = combined(folders, result_files)
    if args.json:
        print(json.dumps({"sequences": [r.row() for r in rows], "combined": total.row()}, indent=2))
        return 0
    print(f"{'sequence':24s} {'HOTA':>6s} {'MOTA':>6s} {'IDF1':>6s} {'IDSW':>6s}")
    for row in [*rows, total]:
        print(
            f"{row.name:24s} {row.hota:6.2f} {row.mota:6.2f} {row.idf1:6.2f} {row.id_switches:6d}"
        )
    source = f"results in {results_dir}" if results_dir else f"ubiq {args.tracker} on det/det.txt"
    print(f"ubiq val: {len(rows)} sequences, {source}", file=sys.stderr)
    return 0


def _frame_rate(folder: Path) -> float:
    """``frameRate`` from ``seqinfo.ini`` (30 when absent)."""
    info = folder / "seqinfo.ini"
    if info.is_file():
        for line in info.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "frameRate":
                try:
                    return float(value)
                except ValueError:
                    break
    return 30.0
