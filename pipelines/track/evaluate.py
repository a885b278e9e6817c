"""Tracking on MOTChallenge detections and scoring against ground truth.

The metrics (HOTA, MOTA, IDF1, ID switches) come from Roboflow's ``trackers.eval``, which
reimplements TrackEval's matching and metrics and respects MOT17's ``class`` and
``considered`` columns (distractors are neither rewarded nor punished). MOT15 ground
truth (``frame,id,x,y,w,h,conf,wx,wy,wz``, no class column) is rewritten to MOT17's
columns first, so its world coordinates are not read as classes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ubiq.errors import BackendUnavailable, ConfigError
from ubiq.pipelines.track.mot import MotFrame, format_result
from ubiq.pipelines.track.tracker import Tracker, TrackerConfig

METRICS = ("HOTA", "MOTA", "IDF1", "IDSW")


def track_frames(
    frames: Iterable[MotFrame],
    config: TrackerConfig | None = None,
    *,
    fps: float = 30.0,
    images: Callable[[int], np.ndarray] | None = None,
) -> tuple[list[str], list[float]]:
    """Runs the tracker over public detections.

    Args:
        frames: The detections of each frame, in order (from :func:`.mot.read_detections`).
        config: Tracker parameters.
        fps: Frame rate, for the tracker's clock.
        images: ``frame -> image`` for camera-motion compensation (optional).

    Returns:
        The MOTChallenge result lines, and the update time of each frame in milliseconds.
    """
    import time

    tracker = Tracker(config)
    lines: list[str] = []
    times: list[float] = []
    for frame in frames:
        image = images(frame.frame) if images is not None and tracker.config.camera_motion else None
        began = time.perf_counter()
        update = tracker.update(
            frame.xyxy,
            frame.scores,
            frame.class_id,
            timestamp_s=(frame.frame - 1) / fps,
            frame=image,
        )
        times.append((time.perf_counter() - began) * 1e3)
        for det, track_id, box in zip(update.det_index, update.track_id, update.xyxy, strict=True):
            lines.append(format_result(frame.frame, int(track_id), box, float(frame.scores[det])))
    return lines, times


@dataclass(frozen=True)
class SequenceScore:
    """Scores of one sequence (percentages, as MOT tables print them)."""

    name: str
    hota: float
    mota: float
    idf1: float
    id_switches: int

    def row(self) -> dict:
        return {
            "sequence": self.name,
            "HOTA": round(self.hota, 2),
            "MOTA": round(self.mota, 2),
            "IDF1": round(self.idf1, 2),
            "IDSW": self.id_switches,
        }


def _eval_module():
    try:
        from trackers import eval as track_eval
    except ImportError as error:
        raise BackendUnavailable(
            f"tracking metrics need Roboflow's trackers package ({error}): "
            "pip install 'ubiq[track-eval]'"
        ) from error
    return track_eval


def _as_mot17(gt_file: Path, folder: Path) -> Path:
    """``gt_file`` itself if it has MOT17 columns, else a MOT17-column copy in ``folder``."""
    rows = np.loadtxt(gt_file, delimiter=",", ndmin=2)
    if rows.shape[1] >= 9 and not np.all(rows[:, 7] == -1):
        return gt_file
    converted = np.ones((len(rows), 9))
    converted[:, :7] = rows[:, :7]
    converted[:, 6] = np.where(rows[:, 6] == 0, 0, 1)
    target = folder / gt_file.parent.parent.name / "gt" / "gt.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(target, converted, fmt="%g", delimiter=",")
    return target


def sequences(data: str | Path) -> list[Path]:
    """The sequence folders of a MOTChallenge split (each with ``gt/gt.txt``).

    Raises:
        ConfigError: If ``data`` is missing or holds no sequence.
    """
    data = Path(data)
    if not data.is_dir():
        raise ConfigError(f"data folder not found: {data}")
    if (data / "gt" / "gt.txt").is_file():
        return [data]
    found = sorted(p for p in data.iterdir() if (p / "gt" / "gt.txt").is_file())
    if not found:
        raise ConfigError(f"data {data} holds no MOTChallenge sequence (SEQ/gt/gt.txt)")
    return found


def score(sequence: Path, result_file: Path) -> SequenceScore:
    """HOTA, MOTA, IDF1 and ID switches of one result file against ``SEQ/gt/gt.txt``.

    Raises:
        BackendUnavailable: If ``trackers`` is not installed.
        ConfigError: If the result file is missing.
    """
    track_eval = _eval_module()
    if not result_file.is_file():
        raise ConfigError(f"no result for sequence {sequence.name}: {result_file} not found")
    with tempfile.TemporaryDirectory() as scratch:
        gt_file = _as_mot17(sequence / "gt" / "gt.txt", Path(scratch))
        tracked = result_file
        if result_file.stat().st_size == 0:  # nothing tracked: score as all missed
            tracked = Path(scratch) / "empty.txt"
            tracked.write_text("1,-1,-10,-10,1,1,0,-1,-1,-1\n")
        result = track_eval.evaluate_mot_sequence(
            gt_file, tracked, metrics=["CLEAR", "HOTA", "Identity"]
        )
    return SequenceScore(
        name=sequence.name,
        hota=100 * float(result.HOTA.HOTA),
        mota=100 * float(result.CLEAR.MOTA),
        idf1=100 * float(result.Identity.IDF1),
        id_switches=int(result.CLEAR.IDSW),
    )


def combined(sequences_: list[Path], results: list[Path]) -> SequenceScore:
    """Scores over all sequences together (TrackEval's combined row)."""
    track_eval = _eval_module()
    with tempfile.TemporaryDirectory() as scratch:
        gt_root = Path(scratch) / "gt"
        tracker_root = Path(scratch) / "trackers"
        tracker_root.mkdir(parents=True)
        for sequence, result in zip(sequences_, results, strict=True):
            gt = _as_mot17(sequence / "gt" / "gt.txt", Path(scratch) / "converted")
            target = gt_root / sequence.name / "gt" / "gt.txt"
            target.parent.mkdir(parents=True)
            target.write_bytes(gt.read_bytes())
            text = result.read_text() or "1,-1,-10,-10,1,1,0,-1,-1,-1\n"
            (tracker_root / f"{sequence.name}.txt").write_text(text)
        benchmark = track_eval.evaluate_mot_sequences(
            gt_root, tracker_root, metrics=["CLEAR", "HOTA", "Identity"]
        )
    total = benchmark.aggregate
    return SequenceScore(
        name="COMBINED",
        hota=100 * float(total.HOTA.HOTA),
        mota=100 * float(total.CLEAR.MOTA),
        idf1=100 * float(total.Identity.IDF1),
        id_switches=int(total.CLEAR.IDSW),
    )
