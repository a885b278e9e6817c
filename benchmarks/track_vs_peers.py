"""ubiq's tracker against Roboflow ``trackers`` on the same detections, scored the same way.

Generates MOTChallenge sequences (``ubiq.pipelines.track.synthetic``: walking people,
groups, crossings, stops, occlusion that lowers scores and drops boxes, size-proportional
box noise, low-score false positives, a panning camera; a strong and a weak detector),
runs every tracker on each sequence's ``det/det.txt``, and scores every result with
``trackers.eval`` (TrackEval's HOTA, MOTA, IDF1). Update time is the mean per frame,
measured in the same run, interleaved tracker by tracker on each sequence.

Peers: SORT, ByteTrack, OC-SORT and BoT-SORT with their defaults, and each tuned: its
confidence thresholds chosen per detector kind by a grid search on the tuning seeds
(never on the test seeds). ubiq's own defaults were tuned on the tuning seeds as well.

    python benchmarks/track_vs_peers.py --workdir /tmp/track-bench

prints a table per sequence, the combined scores, and whether the bars hold. ``--quick``
runs two short sequences (for the test that runs this script).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from ubiq.pipelines.track import synthetic
from ubiq.pipelines.track.evaluate import combined, score
from ubiq.pipelines.track.mot import format_result
from ubiq.pipelines.track.tracker import Tracker, TrackerConfig

TEST_SEEDS = (11, 12)
TUNE_SEEDS = (1, 2)
KINDS = (
    ("static", dict(pan=0.0, people=40)),
    ("pan", dict(pan=300.0, people=40)),
    ("crowd", dict(pan=0.0, people=80)),
)


def specs(seeds, frames: int, kinds=KINDS) -> list[synthetic.SequenceSpec]:
    out = []
    for seed in seeds:
        for detector in synthetic.DETECTORS:
            for kind, options in kinds:
                out.append(
                    synthetic.SequenceSpec(
                        name=f"SYN-{detector}-{kind}-{seed}",
                        seed=seed * 100 + len(out),
                        frames=frames,
                        detector=detector,
                        **options,
                    )
                )
    return out


def run_ubiq(sequence, config: TrackerConfig) -> tuple[list[str], float]:
    tracker = Tracker(config)
    lines, elapsed = [], 0.0
    fps = sequence.spec.fps
    for frame in range(1, sequence.spec.frames + 1):
        xyxy, scores = sequence.detections(frame)
        image = synthetic.render(sequence, frame) if config.camera_motion else None
        began = time.perf_counter()
        update = tracker.update(xyxy, scores, None, timestamp_s=(frame - 1) / fps, frame=image)
        elapsed += time.perf_counter() - began
        for det, track_id, box in zip(update.det_index, update.track_id, update.xyxy, strict=True):
            lines.append(format_result(frame, int(track_id), box, float(scores[det])))
    return lines, elapsed * 1e3 / sequence.spec.frames


def peer_factories() -> dict:
    import trackers

    return {
        "SORT": trackers.SORTTracker,
        "ByteTrack": trackers.ByteTrackTracker,
        "OC-SORT": trackers.OCSORTTracker,
        "BoT-SORT": trackers.BoTSORTTracker,
    }


# Threshold arguments each peer takes, and the grid its tuned variant searches.
PEER_GRID = {
    "SORT": [dict(track_activation_threshold=a) for a in (0.15, 0.25, 0.4, 0.6)],
    "ByteTrack": [
        dict(track_activation_threshold=a, high_conf_det_threshold=h)
        for a in (0.3, 0.5, 0.7)
        for h in (0.3, 0.45, 0.6)
    ],
    "OC-SORT": [dict(high_conf_det_threshold=h) for h in (0.2, 0.3, 0.45, 0.6)],
    "BoT-SORT": [
        dict(track_activation_threshold=a, high_conf_det_threshold=h)
        for a in (0.3, 0.5, 0.7)
        for h in (0.3, 0.45, 0.6)
    ],
}


def run_peer(sequence, factory, options: dict, uses_frames: bool) -> tuple[list[str], float]:
    import supervision as sv

    tracker = factory(frame_rate=sequence.spec.fps, **options)
    lines, elapsed = [], 0.0
    for frame in range(1, sequence.spec.frames + 1):
        xyxy, scores = sequence.detections(frame)
        detections = sv.Detections(
            xyxy=xyxy.astype(np.float32),
            confidence=scores.astype(np.float32),
            class_id=np.zeros(len(xyxy), int),
        )
        image = synthetic.render(sequence, frame) if uses_frames else None
        began = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tracked = (
                tracker.update(detections, frame=image)
                if uses_frames
                else tracker.update(detections)
            )
        elapsed += time.perf_counter() - began
        ids = tracked.tracker_id if tracked.tracker_id is not None else np.zeros(0, int)
        for box, track_id, conf in zip(tracked.xyxy, ids, tracked.confidence, strict=True):
            if track_id >= 0:
                lines.append(format_result(frame, int(track_id), box, float(conf)))
    return lines, elapsed * 1e3 / sequence.spec.frames


def evaluate(folder: Path, name: str, lines: list[str], out_root: Path):
    out = out_root / f"{folder.name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + ("\n" if lines else ""))
    return score(folder, out), out


def tune_peers(workdir: Path, frames: int) -> dict:
    """Best grid point per peer and detector kind on the tuning seeds (by combined HOTA)."""
    factories = peer_factories()
    chosen: dict = {}
    tune = specs(TUNE_SEEDS, frames)
    folders = {}
    for spec in tune:
        sequence = synthetic.generate(spec)
        folders[spec.name] = (sequence, synthetic.write(sequence, workdir / "tune"))
    for peer, grid in PEER_GRID.items():
        for detector in synthetic.DETECTORS:
            best = None
            for options in grid:
                results, seqs = [], []
                for sequence, folder in folders.values():
                    if sequence.spec.detector != detector:
                        continue
                    lines, _ = run_peer(sequence, factories[peer], options, uses_frames=False)
                    _, path = evaluate(folder, peer, lines, workdir / "tune-out" / peer)
                    results.append(path)
                    seqs.append(folder)
                total = combined(seqs, results)
                if best is None or total.hota > best[0]:
                    best = (total.hota, options)
            chosen[(peer, detector)] = best[1]
            print(f"  tuned {peer} for {detector}: {best[1]} (HOTA {best[0]:.1f})", flush=True)
    return chosen


def dense_update_ms(count: int, frames: int = 300) -> tuple[float, float]:
    """Mean update time of ubiq and trackers' ByteTrack with ``count`` objects in every
    frame (boxes drifting with noise, scores 0.3-0.95), interleaved over 3 rounds, best round."""
    import supervision as sv
    import trackers

    rng = np.random.default_rng(0)
    start = rng.uniform(0, 1800, (count, 2))
    size = rng.uniform(40, 120, (count, 2))
    velocity = rng.normal(0, 3, (count, 2))
    boxes, scores = [], []
    for frame in range(frames):
        corner = start + velocity * frame
        boxes.append(np.concatenate([corner, corner + size], 1) + rng.normal(0, 1, (count, 4)))
        scores.append(rng.uniform(0.3, 0.95, count))
    inputs = [
        sv.Detections(
            xyxy=b.astype(np.float32),
            confidence=s.astype(np.float32),
            class_id=np.zeros(count, int),
        )
        for b, s in zip(boxes, scores, strict=True)
    ]
    ours, theirs = [], []
    for _ in range(3):
        tracker = Tracker()
        began = time.perf_counter()
        for frame, (b, s) in enumerate(zip(boxes, scores, strict=True)):
            tracker.update(b, s, None, timestamp_s=frame / 30)
        ours.append((time.perf_counter() - began) * 1e3 / frames)
        peer = trackers.ByteTrackTracker()
        began = time.perf_counter()
        for detections in inputs:
            peer.update(detections)
        theirs.append((time.perf_counter() - began) * 1e3 / frames)
    return min(ours), min(theirs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/ubiq-track-bench")
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--quick", action="store_true", help="two short sequences, no tuning")
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    factories = peer_factories()
    if args.quick:
        test = specs(TEST_SEEDS[:1], 150, kinds=KINDS[:1])
        tuned: dict = {}
    else:
        print("tuning peers on seeds", TUNE_SEEDS, flush=True)
        tuned = tune_peers(workdir, args.frames)
        test = specs(TEST_SEEDS, args.frames)
    configs = [("ubiq", None, {})]
    for peer in factories:
        configs.append((peer, peer, {}))
        if tuned:
            configs.append((f"{peer} tuned", peer, "tuned"))
    rows = []
    results: dict[str, list[Path]] = {name: [] for name, _, _ in configs}
    folders = []
    for spec in test:
        sequence = synthetic.generate(spec)
        folder = synthetic.write(sequence, workdir / "test")
        folders.append(folder)
        for name, peer, options in configs:
            if peer is None:
                config = TrackerConfig(camera_motion=spec.pan > 0)
                lines, ms = run_ubiq(sequence, config)
            else:
                chosen = tuned[(peer, spec.detector)] if options == "tuned" else {}
                lines, ms = run_peer(
                    sequence, factories[peer], chosen, uses_frames=peer == "BoT-SORT"
                )
            result, path = evaluate(folder, name, lines, workdir / "out" / name.replace(" ", "-"))
            results[name].append(path)
            rows.append(result.row() | {"tracker": name, "ms_per_frame": round(ms, 3)})
            print(
                f"{spec.name:24s} {name:16s} HOTA {result.hota:5.1f} MOTA {result.mota:6.1f} "
                f"IDF1 {result.idf1:5.1f} IDSW {result.id_switches:4d} {ms:6.3f} ms/frame",
                flush=True,
            )
    print("\ncombined over", len(folders), "sequences:")
    totals = {}
    for name, _, _ in configs:
        total = combined(folders, results[name])
        times = [r["ms_per_frame"] for r in rows if r["tracker"] == name]
        totals[name] = (total, float(np.mean(times)))
        print(
            f"  {name:16s} HOTA {total.hota:5.2f} MOTA {total.mota:6.2f} IDF1 {total.idf1:5.2f} "
            f"IDSW {total.id_switches:5d} {np.mean(times):6.3f} ms/frame"
        )
    peers = {k: v for k, v in totals.items() if k != "ubiq"}
    ours = totals["ubiq"][0]
    best_hota = max(peers.items(), key=lambda kv: kv[1][0].hota)
    best_idf1 = max(peers.items(), key=lambda kv: kv[1][0].idf1)
    best_mota = max(peers.items(), key=lambda kv: kv[1][0].mota)
    print(
        f"\nHOTA  ubiq {ours.hota:.2f} vs best peer {best_hota[0]} {best_hota[1][0].hota:.2f}: "
        f"{'ok' if ours.hota >= best_hota[1][0].hota else 'BELOW'}"
    )
    print(
        f"IDF1  ubiq {ours.idf1:.2f} vs best peer {best_idf1[0]} {best_idf1[1][0].idf1:.2f}: "
        f"{'ok' if ours.idf1 >= best_idf1[1][0].idf1 else 'BELOW'}"
    )
    print(
        f"MOTA  ubiq {ours.mota:.2f} vs best peer {best_mota[0]} {best_mota[1][0].mota:.2f}: "
        f"{'ok' if ours.mota >= best_mota[1][0].mota - 0.5 else 'BELOW'} (bar: within 0.5)"
    )
    # Update time where nobody estimates camera motion, and the peer tracks something
    # (ByteTrack's defaults track nothing from the weak detector, which costs nothing).
    names = [c[0] for c in configs]
    for peer in ("ByteTrack", "ByteTrack tuned"):
        if peer not in names:
            continue
        for detector in synthetic.DETECTORS:
            chosen = [
                i for i, spec in enumerate(test) if spec.pan == 0 and spec.detector == detector
            ]
            ours_ms = np.mean([rows[i * len(configs)]["ms_per_frame"] for i in chosen])
            theirs_ms = np.mean(
                [rows[i * len(configs) + names.index(peer)]["ms_per_frame"] for i in chosen]
            )
            print(
                f"update time, fixed camera, {detector} detector: ubiq {ours_ms:.3f} ms, "
                f"trackers {peer} {theirs_ms:.3f} ms: {ours_ms / theirs_ms:.2f}x (bar <= 1.0)"
            )
    dense_ours, dense_theirs = dense_update_ms(50)
    print(
        f"update time with 50 objects in view: ubiq {dense_ours:.3f} ms (bar <= 1 ms), "
        f"trackers ByteTrack {dense_theirs:.3f} ms"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
