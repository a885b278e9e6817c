"""JSON Lines sink: one line per processed frame."""

from __future__ import annotations

import json
from pathlib import Path

from ubiq.errors import ConfigError, UbiqError
from ubiq.types import Detections, Frame


class JsonlSink:
    """Writes ``{"frame", "ts", "detections": [{"xyxy", "confidence", "class_id", "label"}]}``.

    Each line is flushed as it is written, so a run stopped by Ctrl-C, SIGTERM or a crash
    keeps every frame already processed.

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
            raise ConfigError(f"--jsonl: cannot write {self.path}: {error.strerror}") from error
        self._relative_time = relative_time
        self._first_timestamp_ns: int | None = None
        self.lines_written = 0

    def write(self, frame: Frame, detections: Detections) -> None:
        if self._first_timestamp_ns is None:
            self._first_timestamp_ns = frame.timestamp_ns if self._relative_time else 0
        seconds = (frame.timestamp_ns - self._first_timestamp_ns) / 1e9
        record = {
            "frame": frame.index,
            "ts": round(seconds, 6),
            "detections": detections.to_records(),
        }
        try:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as error:
            raise UbiqError(f"--jsonl: cannot write {self.path}: {error.strerror}") from error
        self.lines_written += 1

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()
