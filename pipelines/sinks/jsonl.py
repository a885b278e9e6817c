"""JSON Lines sink: one line per processed frame, then one per event the frame produced."""

from __future__ import annotations

import json
from pathlib import Path

from ubiq.errors import ConfigError, UbiqError
from ubiq.types import FrameResult


class JsonlSink:
    """Writes ``{"frame", "ts", ["file",] "detections": [...]}`` per frame and
    ``{"kind", "ts", "frame", "id", ...}`` per event.

    Detections are ``{"xyxy", "confidence", "class_id", "label"}`` (plus ``"track_id"``
    once tracked) in source-frame pixels; ``"file"`` names the image a frame was read from
    (image files, folders and globs). Each line is flushed as it is written, so a run
    stopped by Ctrl-C, SIGTERM or a crash keeps every frame already processed.

    Args:
        path: Output file (parent folders are created).
        relative_time: Report ``ts`` relative to the first frame (live sources).

    Raises:
        ConfigError: If the file cannot be opened for writing.
    """

    def __init__(self, path: str | Path, *, relative_time: bool = False) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("w", encoding="utf-8", buffering=1)
        except OSError as error:
            raise ConfigError(f"cannot write {self.path}: {error.strerror}") from error
        self._relative_time = relative_time
        self._first_timestamp_ns: int | None = None
        self.lines_written = 0

    def write(self, result: FrameResult) -> None:
        frame = result.frame
        if self._first_timestamp_ns is None:
            self._first_timestamp_ns = frame.timestamp_ns if self._relative_time else 0
        seconds = (frame.timestamp_ns - self._first_timestamp_ns) / 1e9
        record: dict = {"frame": frame.index, "ts": round(seconds, 6)}
        path = getattr(frame, "path", None)
        if path is not None:
            record["file"] = path
        if result.detections is not None:
            record["detections"] = result.detections.to_records()
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

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()
