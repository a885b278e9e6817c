"""MOTChallenge text files: public detections in, tracking results out.

Detections (``det/det.txt``): ``frame, -1, x, y, w, h, score[, ...]``, frames counted from
1, boxes as left, top, width, height in pixels; a frame may have no rows. Results:
``frame, id, x, y, w, h, score, -1, -1, -1``, the layout TrackEval and every MOT
benchmark read.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ubiq.errors import ConfigError


@dataclass(frozen=True)
class MotFrame:
    """The detections of one frame (``frame`` counts from 1)."""

    frame: int
    xyxy: np.ndarray
    scores: np.ndarray
    class_id: np.ndarray


def read_detections(path: str | Path) -> list[MotFrame]:
    """Reads a MOTChallenge detection file, every frame from 1 to the last (empty frames
    included, with no rows).

    Raises:
        ConfigError: Naming the file and line: a missing or empty file, a line with fewer
            than 7 numbers or one that is not a number, a frame below 1, frames out of
            order, a negative width or height, a score that is not finite.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"detections file not found: {path}")
    rows: list[tuple[int, float, float, float, float, float, int]] = []
    previous = 0
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            parts = [p.strip() for p in text.replace(";", ",").split(",")]
            if len(parts) < 7:
                raise ConfigError(
                    f"{path}:{number}: expected frame,id,x,y,w,h,score,..., got {text!r}"
                )
            try:
                values = [float(p) for p in parts[:7]]
                class_id = int(float(parts[7])) if len(parts) > 7 and parts[7] else -1
            except ValueError:
                raise ConfigError(f"{path}:{number}: not a number in {text!r}") from None
            if not all(np.isfinite(values)):
                raise ConfigError(f"{path}:{number}: not a finite number in {text!r}")
            frame = int(values[0])
            if frame != values[0] or frame < 1:
                raise ConfigError(f"{path}:{number}: frame must be an integer >= 1, got {parts[0]}")
            if frame < previous:
                raise ConfigError(
                    f"{path}:{number}: frames out of order: frame {frame} after frame {previous}"
                )
            previous = frame
            x, y, w, h, score = values[2:7]
            if w < 0 or h < 0:
                raise ConfigError(f"{path}:{number}: negative box size {w} x {h}")
            rows.append((frame, x, y, w, h, score, max(class_id, 0)))
    if not rows:
        raise ConfigError(f"detections file {path} is empty")
    data = np.array(rows, np.float64)
    frames = data[:, 0].astype(np.int64)
    last = int(frames[-1])
    starts = np.searchsorted(frames, np.arange(1, last + 2))
    result = []
    for frame in range(1, last + 1):
        chunk = data[starts[frame - 1] : starts[frame]]
        xyxy = np.concatenate([chunk[:, 1:3], chunk[:, 1:3] + chunk[:, 3:5]], axis=1)
        result.append(MotFrame(frame, xyxy, chunk[:, 5].copy(), chunk[:, 6].astype(np.int64)))
    return result


def format_result(frame: int, track_id: int, xyxy: np.ndarray, score: float) -> str:
    """One result line: ``frame,id,x,y,w,h,score,-1,-1,-1``."""
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    return f"{frame},{track_id},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},{score:.4f},-1,-1,-1"


def write_atomically(path: str | Path, lines: Iterator[str] | list[str]) -> None:
    """Writes ``lines`` to a temporary file beside ``path`` and renames it into place, so
    an error part way leaves whatever ``path`` held before.

    Raises:
        ConfigError: If the folder cannot be created or written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as error:
        raise ConfigError(f"cannot write {path}: {error.strerror}") from error
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            for line in lines:
                out.write(line + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
