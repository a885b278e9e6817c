"""Segmentation outputs: one label PNG per frame (``ubiq segment --masks DIR``) and JSON Lines
with the pixel fraction of each class and each instance's mask (``ubiq segment --jsonl``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import ConfigError, UbiqError
from ubiq.models.runtime.label_png import write_label_png
from ubiq.pipelines.sinks.jsonl import JsonlSink
from ubiq.types import FrameResult

logger = logging.getLogger(__name__)

__all__ = ["MaskSink", "SegmentJsonlSink", "mask_rle"]


class MaskSink:
    """Writes each frame's class map as a palette PNG (pixel value = class id, VOC colours).

    An image keeps its file name with ``.png`` (a second image of the same name gets
    ``-INDEX``); other frames are ``000123.png``. A frame without a class map writes nothing.

    Args:
        folder: Output folder (created).

    Raises:
        ConfigError: If the folder cannot be created.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot create folder {self.folder}: {error.strerror}") from error
        self.written: list[Path] = []
        self._names: set[str] = set()

    def _target(self, result: FrameResult) -> Path:
        source = getattr(result.frame, "path", None)
        if source is None:
            return self.folder / f"{result.index:06d}.png"
        stem = Path(source).stem
        name = f"{stem}.png" if f"{stem}.png" not in self._names else f"{stem}-{result.index}.png"
        target = self.folder / name
        if target.exists() and target.resolve() == Path(source).resolve():
            raise UbiqError(f"refusing to overwrite the source image {source} with its mask")
        return target

    def write(self, result: FrameResult) -> None:
        if result.final or result.class_map is None:
            return
        target = self._target(result)
        write_label_png(target, result.class_map)
        self._names.add(target.name)
        self.written.append(target)

    def close(self) -> None:
        if self.written:
            logger.info("wrote %d masks to %s", len(self.written), self.folder)


def mask_rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO's uncompressed run-length encoding of a bool mask.

    Returns:
        ``{"size": [H, W], "counts": [...]}``: run lengths over the pixels in column-major
        order, starting with a run of ``False`` (0 when the first pixel is ``True``).
    """
    flat = np.asarray(mask, bool).T.reshape(-1)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


class SegmentJsonlSink(JsonlSink):
    """JSON Lines for segmentation: per frame ``{"frame", "ts", ["file",] "classes":
    {label: pixel fraction}}``, and for instance models ``"instances": [{"xyxy",
    "confidence", "class_id", "label", "rle"}]`` (``rle`` as :func:`mask_rle`); then one line
    per event, as :class:`~ubiq.pipelines.sinks.JsonlSink` writes them.

    Args:
        path: Output file (parent folders are created).
        relative_time: Report ``ts`` relative to the first frame (live sources).

    Raises:
        ConfigError: If the file cannot be opened for writing.
    """

    def write(self, result: FrameResult) -> None:
        frame = result.frame
        if self._first_timestamp_ns is None:
            self._first_timestamp_ns = frame.timestamp_ns if self._relative_time else 0
        seconds = (frame.timestamp_ns - self._first_timestamp_ns) / 1e9
        record: dict[str, Any] = {"frame": frame.index, "ts": round(seconds, 6)}
        path = getattr(frame, "path", None)
        if path is not None:
            record["file"] = path
        segmentation = result.data.get("segmentation")
        if segmentation is not None:
            record["classes"] = segmentation.fractions()
            instances = segmentation.instances
            if instances is not None:
                records = instances.to_records()
                for row, item in enumerate(records):
                    item["rle"] = mask_rle(instances.mask[row])
                record["instances"] = records
        lines = [] if result.final else [json.dumps(record, separators=(",", ":"))]
        lines += [
            json.dumps(event.to_record(seconds, frame.index), separators=(",", ":"))
            for event in result.events
        ]
        try:
            self._file.write("\n".join(lines) + "\n")
        except OSError as error:
            raise UbiqError(f"cannot write {self.path}: {error.strerror}") from error
        self.lines_written += len(lines)
