"""A durable outbox: events that leave the machine (MQTT, webhooks) are written here first
and deleted only once the other side has them, so a broker or server that is down, or a
process killed with SIGKILL, loses nothing.

One SQLite file per output, in WAL mode: :meth:`Outbox.put` commits an event before it is
sent; the sender reads the oldest rows (:meth:`Outbox.peek`) and deletes each one when it
is acknowledged (PUBACK, HTTP 2xx). Rows keep the order they were put in (an
``AUTOINCREMENT`` sequence that is never reused), so queued events go out in order when the
other side returns or the process restarts.

Durability: with ``synchronous=NORMAL`` (the default) a committed event survives a crash or
``kill -9`` of the process; ``fsync=True`` (``synchronous=FULL``) also survives a power cut,
at the cost of one fsync per event.

A full disk: opening the outbox, or queuing an event, fails with one line that names the
file (``cannot write outbox PATH: no space left on the disk; ...``), and the run stops
rather than go on losing events it cannot queue (as the JSONL sink stops on a full disk);
what is already queued stays in the file for the next run.

Bound: at most ``max_events`` rows (default 100,000, about 30 MB of typical events). When
the outbox is full the oldest events are dropped to make room for new ones (the newest say
most about the present), counted in :attr:`Outbox.dropped` and logged once per overflow.

A lock file beside the database (``<file>.lock``, ``flock``) keeps a second process from
sending the same outbox at the same time.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ubiq.errors import ConfigError, UbiqError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock; the lock is skipped there
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_MAX_EVENTS",
    "EventRecords",
    "Outbox",
    "OutboxItem",
    "default_outbox_dir",
    "outbox_name",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_EVENTS = 100_000
"""Most events an outbox holds before it drops the oldest."""

_SCHEMA_VERSION = 1


def default_outbox_dir() -> Path:
    """``$UBIQ_HOME/outbox`` (see :func:`ubiq.paths.ubiq_home`), read on every call."""
    from ubiq.paths import ubiq_home

    return ubiq_home() / "outbox"


@dataclass(frozen=True)
class OutboxItem:
    """One queued event.

    Attributes:
        seq: Its place in the queue (increasing, never reused).
        topic: Where it goes (an MQTT topic; for webhooks, the event kind).
        body: The bytes to send (the event's JSON record).
        event_id: The event's id.
        created_s: When it was queued (Unix time, seconds).
    """

    seq: int
    topic: str
    body: bytes
    event_id: str
    created_s: float


class Outbox:
    """A bounded on-disk FIFO of events waiting to be sent; safe to share between threads.

    Args:
        path: The SQLite file (parent folders are created).
        max_events: Most rows kept; when full, the oldest are dropped.
        fsync: Sync every commit to disk (survives a power cut, not just a crash).

    Raises:
        ConfigError: If the file cannot be created, is not an outbox, or another process
            holds it.
    """

    def __init__(
        self, path: str | Path, *, max_events: int = DEFAULT_MAX_EVENTS, fsync: bool = False
    ) -> None:
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
            raise ConfigError(f"max_events must be an integer >= 1, got {max_events!r}")
        self.path = Path(path).expanduser()
        self.max_events = max_events
        self.dropped = 0
        self._full = False
        self._lock = threading.Lock()
        self._lock_file = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            self._db = sqlite3.connect(
                self.path, timeout=10.0, isolation_level=None, check_same_thread=False
            )
        except OSError as error:
            self._release_lock()
            raise ConfigError(f"cannot create outbox {self.path}: {error.strerror}") from error
        except sqlite3.Error as error:
            self._release_lock()
            raise ConfigError(f"cannot open outbox {self.path}: {_reason(error)}") from error
        try:
            self._setup(fsync)
        except sqlite3.DatabaseError as error:
            self._db.close()
            self._release_lock()
            if _is_full(error) or isinstance(error, sqlite3.OperationalError):
                raise ConfigError(f"cannot create outbox {self.path}: {_reason(error)}") from error
            raise ConfigError(
                f"{self.path} is not a ubiq outbox ({error}); move it away or choose another"
            ) from error

    def _take_lock(self) -> None:
        if fcntl is None:
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = open(lock_path, "a+b")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            handle.close()
            raise ConfigError(
                f"outbox {self.path} is in use by another ubiq process; give this one its "
                "own (--outbox DIR)"
            ) from error
        self._lock_file = handle

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _setup(self, fsync: bool) -> None:
        mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            logger.warning("outbox %s: WAL mode unavailable (journal mode %s)", self.path, mode)
        self._db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, _SCHEMA_VERSION):
            raise sqlite3.DatabaseError(f"schema version {version}, expected {_SCHEMA_VERSION}")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox ("
            " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
            " topic TEXT NOT NULL,"
            " body BLOB NOT NULL,"
            " event_id TEXT NOT NULL,"
            " created_s REAL NOT NULL)"
        )
        self._db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        self._count = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]

    def _check_open(self) -> None:
        if self._db is None:
            raise UbiqError(f"outbox {self.path} is closed")

    def __len__(self) -> int:
        """Events waiting."""
        return self._count

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r}, waiting={self._count}, dropped={self.dropped})"

    def put(self, topic: str, body: bytes, event_id: str) -> int:
        """Queues one event, committed to disk before this returns.

        Returns:
            Its sequence number.

        Raises:
            UbiqError: If the disk is full or the file cannot be written.
        """
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                overflow = self._count + 1 - self.max_events
                if overflow > 0:
                    self._db.execute(
                        "DELETE FROM outbox WHERE seq IN "
                        "(SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
                        (overflow,),
                    )
                cursor = self._db.execute(
                    "INSERT INTO outbox (topic, body, event_id, created_s) VALUES (?, ?, ?, ?)",
                    (topic, sqlite3.Binary(body), event_id, time.time()),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise UbiqError(f"cannot write outbox {self.path}: {_reason(error)}") from error
            if overflow > 0:
                self.dropped += overflow
                self._count -= overflow
                if not self._full:
                    logger.warning(
                        "outbox %s is full (%d events): dropping the oldest until it drains",
                        self.path,
                        self.max_events,
                    )
                self._full = True
            self._count += 1
            return int(cursor.lastrowid)

    def peek(self, after_seq: int = 0, limit: int = 100) -> list[OutboxItem]:
        """The oldest events with a sequence number above ``after_seq``, oldest first.

        Raises:
            UbiqError: If the file cannot be read.
        """
        with self._lock:
            self._check_open()
            try:
                rows = self._db.execute(
                    "SELECT seq, topic, body, event_id, created_s FROM outbox"
                    " WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                ).fetchall()
            except sqlite3.Error as error:
                raise UbiqError(f"cannot read outbox {self.path}: {_reason(error)}") from error
        return [OutboxItem(int(s), t, bytes(b), e, float(c)) for s, t, b, e, c in rows]

    def delete(self, seqs: Iterable[int]) -> int:
        """Deletes acknowledged events (unknown sequence numbers are ignored).

        Returns:
            How many rows were deleted.

        Raises:
            UbiqError: If the file cannot be written.
        """
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock:
            self._check_open()
            try:
                self._db.execute("BEGIN IMMEDIATE")
                deleted = 0
                for start in range(0, len(seqs), 500):
                    chunk = seqs[start : start + 500]
                    marks = ",".join("?" * len(chunk))
                    deleted += self._db.execute(
                        f"DELETE FROM outbox WHERE seq IN ({marks})", chunk
                    ).rowcount
                self._db.execute("COMMIT")
            except sqlite3.Error as error:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise UbiqError(f"cannot write outbox {self.path}: {_reason(error)}") from error
            self._count -= deleted
            if self._full and self._count < self.max_events:
                self._full = False
            return deleted

    def close(self) -> None:
        """Closes the file (waiting events stay in it for the next run)."""
        with self._lock:
            if self._db is not None:
                try:
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                except sqlite3.Error as error:
                    logger.debug("outbox %s: checkpoint failed: %s", self.path, error)
                self._db.close()
                self._db = None
            self._release_lock()


def _is_full(error: sqlite3.Error) -> bool:
    """Whether SQLite says the disk (or the file system's quota) is full."""
    return getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
        "disk is full" in str(error)
    )


def _reason(error: sqlite3.Error) -> str:
    """SQLite's message, said plainly where the disk is full."""
    if _is_full(error):
        return "no space left on the disk; free some or choose another outbox folder"
    return str(error)


def outbox_name(kind: str, identity: str, label: str) -> str:
    """A stable file name for one output: ``mqtt-<label>-<hash of identity>.sqlite``.

    Args:
        kind: ``"mqtt"`` or ``"webhook"``.
        identity: Everything that tells this output from another (URL without credentials,
            topic prefix, source), so a restarted run finds its own queue.
        label: A readable hint (the host), sanitised for a file name.
    """
    import hashlib
    import re

    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    label = re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("._") or kind
    return f"{kind}-{label[:40]}-{digest}.sqlite"


class EventRecords:
    """Turns a result's events into the records every output shares
    (:meth:`ubiq.types.Event.to_record`), with ``ts`` and ``frame`` exactly as
    :class:`~ubiq.pipelines.sinks.jsonl.JsonlSink` writes them.

    For video frames ``ts`` is the frame's time in seconds (relative to the first frame
    with ``relative_time``) and ``frame`` its index; for audio chunks (no image) ``ts`` is
    the event's own time in seconds of source audio and ``frame`` is left out.

    Args:
        relative_time: Report ``ts`` relative to the first frame (as the CLI's JSONL does).
    """

    def __init__(self, *, relative_time: bool = False) -> None:
        self._relative_time = relative_time
        self._first_timestamp_ns: int | None = None

    def seconds(self, result) -> float:
        """The result's ``ts``: its frame's time in seconds on this output's clock."""
        frame = result.frame
        if self._first_timestamp_ns is None:
            self._first_timestamp_ns = frame.timestamp_ns if self._relative_time else 0
        return round((frame.timestamp_ns - self._first_timestamp_ns) / 1e9, 6)

    def __call__(self, result) -> list[tuple[object, dict]]:
        """``[(event, record), ...]`` for the result's events, in order."""
        frame = result.frame
        if not hasattr(frame, "image"):
            return [(event, event.to_record(event.timestamp_ns / 1e9)) for event in result.events]
        seconds = self.seconds(result)
        return [(event, event.to_record(seconds, frame.index)) for event in result.events]
