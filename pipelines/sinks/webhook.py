"""Webhook sink: every event POSTed as JSON to a URL, signed, retried, through a durable
outbox.

Each request carries one event's record (the JSONL schema: ``{"kind", "ts", "frame", "id",
...fields}``) and the headers::

    Content-Type: application/json
    X-Ubiq-Event: <kind>
    X-Ubiq-Event-Id: <id>                  (receivers drop duplicates by it)
    X-Ubiq-Signature: sha256=<hex>         HMAC-SHA256 of the body with the shared secret

Batches (``batch_size`` > 1, ``--webhook-batch N``): each request carries a JSON array of
up to N records, oldest first, and the headers ``X-Ubiq-Event: batch``, ``X-Ubiq-Batch:
<count>`` and the signature of that exact body (no ``X-Ubiq-Event-Id``: each record has its
``id``). A batch goes out when it is full or when its oldest event has waited
``batch_wait_s`` (``--webhook-batch-s``, default 1 s), and at once on close.

Delivery is in order and at-least-once: a sender thread POSTs the oldest queued event (or
batch) and deletes it from the outbox on a 2xx answer. A connection error, a timeout, a
5xx, 408 or 429 (or any other 4xx but the ones below) is retried with exponential backoff
(``retry_initial_s``, doubling, at most ``retry_max_s``), the same events first, so nothing
overtakes them. 400, 413, 415 and 422 say the body itself is refused, which no retry can
fix: that event is dropped and logged; a refused batch is split in halves and sent again
until the refused event is alone, so only it is dropped. Events wait in the outbox across
outages and restarts.

A receiver verifies a request with::

    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    hmac.compare_digest(expected, request.headers["X-Ubiq-Signature"])
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ubiq.errors import ConfigError, UbiqError
from ubiq.pipelines.sinks.outbox import (
    DEFAULT_MAX_EVENTS,
    EventRecords,
    Outbox,
    default_outbox_dir,
    outbox_name,
)
from ubiq.types import FrameResult

__all__ = ["MAX_BATCH", "REFUSED_STATUSES", "WebhookOptions", "WebhookSink", "sign"]

logger = logging.getLogger(__name__)

MAX_BATCH = 1000
"""Most events one batched request carries."""

REFUSED_STATUSES = frozenset({400, 413, 415, 422})
"""Answers that refuse the body itself: the event is dropped instead of retried."""


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Ubiq-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class WebhookOptions:
    """Where to POST and how; the secret never appears in ``repr``.

    Attributes:
        url: ``http://`` or ``https://`` URL.
        secret: Shared secret for the signature (``None``: requests are not signed).
        timeout_s: Per-request timeout.
        retry_initial_s: First wait after a failed POST.
        retry_max_s: Longest wait between two tries.
        flush_timeout_s: How long ``close()`` waits for queued events while the server
            answers.
        batch_size: Most events in one request (1: one event per request, its record as
            the body; more: a JSON array of records).
        batch_wait_s: Longest time the oldest queued event waits for a batch to fill.
    """

    url: str
    secret: bytes | None = field(default=None, repr=False)
    timeout_s: float = 10.0
    retry_initial_s: float = 0.5
    retry_max_s: float = 60.0
    flush_timeout_s: float = 5.0
    batch_size: int = 1
    batch_wait_s: float = 1.0

    def __post_init__(self) -> None:
        try:
            parts = urlsplit(self.url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as error:
            raise ConfigError(f"{self.address} is not an http(s) URL ({error})") from error
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{self.address} is not an http:// or https:// URL")
        if parts.username or parts.password:
            raise ConfigError(
                "no user or password in the webhook URL, please: sign requests with "
                "UBIQ_WEBHOOK_SECRET or --webhook-secret-file"
            )
        if isinstance(self.secret, str):
            object.__setattr__(self, "secret", self.secret.encode())
        for name in ("timeout_s", "retry_initial_s", "retry_max_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        size = self.batch_size
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_BATCH:
            raise ConfigError(f"batch_size must be an integer in 1..{MAX_BATCH}, got {size!r}")
        if not 0 <= self.batch_wait_s <= 3600:
            raise ConfigError(f"batch_wait_s must be in 0..3600 seconds, got {self.batch_wait_s}")

    @property
    def address(self) -> str:
        """The URL without user, password, query or fragment (which may hold a token)."""
        try:
            parts = urlsplit(self.url)
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            return "the webhook URL"
        return f"{parts.scheme}://{host}{port}{parts.path}"


class WebhookSink:
    """POSTs every event (through a durable outbox) with retries and an HMAC signature, one
    per request or in batches (``options.batch_size``).

    Attributes:
        events_sent: Events the server took (2xx).
        events_refused: Events dropped because the server refused them (400, 413, ...).
        requests_sent: Requests the server took (fewer than events with batches).
        attempts: Every POST tried, retries included.

    Args:
        options: URL, secret and timing (:class:`WebhookOptions`).
        outbox: The outbox file (default: one per URL and source under
            ``$UBIQ_HOME/outbox``).
        source_key: Tells this output's outbox from another source's (default: none).
        relative_time: Report ``ts`` relative to the first frame, like the CLI's JSONL.
        max_events: Most events the outbox holds (the oldest are dropped beyond it).

    Raises:
        ConfigError: If the outbox cannot be opened.
    """

    def __init__(
        self,
        options: WebhookOptions,
        *,
        outbox: str | Path | None = None,
        source_key: str = "",
        relative_time: bool = False,
        max_events: int = DEFAULT_MAX_EVENTS,
    ) -> None:
        self.options = options
        if outbox is None:
            host = urlsplit(options.url).hostname or "webhook"
            outbox = default_outbox_dir() / outbox_name(
                "webhook", f"{options.url}|{source_key}", host
            )
        self.outbox = Outbox(outbox, max_events=max_events)
        self._records = EventRecords(relative_time=relative_time)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._healthy = True
        self._closed = False
        self._refused_logged: set[int] = set()
        self.events_sent = 0
        self.events_refused = 0
        self.requests_sent = 0
        self.attempts = 0
        if len(self.outbox):
            logger.warning(
                "webhook: %d events queued in %s from an earlier run go out first",
                len(self.outbox),
                self.outbox.path,
            )
        self._sender = threading.Thread(target=self._send_loop, name="ubiq-webhook", daemon=True)
        self._sender.start()

    def __repr__(self) -> str:
        return f"WebhookSink({self.options.address}, outbox={self.outbox!r})"

    def write(self, result: FrameResult) -> None:
        """Queues the result's events (committed before this returns).

        Raises:
            UbiqError: If the outbox cannot be written (a full disk).
        """
        for event, record in self._records(result):
            body = json.dumps(record, separators=(",", ":")).encode()
            self.outbox.put(event.kind, body, event.event_id)
        if result.events:
            self._wake.set()

    def _send_loop(self) -> None:
        backoff_s = self.options.retry_initial_s
        batched = self.options.batch_size > 1
        limit = self.options.batch_size  # halved while a refused batch is split
        split_end_seq = 0  # while splitting: the last event of the refused batch
        while not self._stop.is_set():
            try:
                items = self.outbox.peek(0, limit)
            except UbiqError as error:
                logger.error("webhook: %s", error)
                items = []
            if not items:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            if batched and len(items) < limit and not (self._closed or split_end_seq):
                waited_s = time.time() - items[0].created_s
                if waited_s < self.options.batch_wait_s:
                    # Let the batch fill; a new event wakes the loop to look again.
                    self._wake.wait(min(0.5, self.options.batch_wait_s - waited_s))
                    self._wake.clear()
                    continue
            if batched:
                body = b"[" + b",".join(item.body for item in items) + b"]"
                outcome, reason = self._post("batch", "", body, count=len(items))
            else:
                item = items[0]
                outcome, reason = self._post(item.topic, item.event_id, item.body)
            if outcome == "retry":
                if self._healthy:
                    logger.warning(
                        "webhook: POST to %s failed (%s); retrying with backoff, events queue "
                        "in %s",
                        self.options.address,
                        reason,
                        self.outbox.path,
                    )
                self._healthy = False
                self._stop.wait(backoff_s)
                backoff_s = min(backoff_s * 2, self.options.retry_max_s)
                continue
            if not self._healthy:
                logger.warning(
                    "webhook: %s answers again; sending %d queued events",
                    self.options.address,
                    len(self.outbox),
                )
            self._healthy = True
            backoff_s = self.options.retry_initial_s
            if outcome == "refused" and len(items) > 1:
                # Find the refused event: send the batch in halves, then halves of those.
                split_end_seq = max(split_end_seq, items[-1].seq)
                limit = max(1, len(items) // 2)
                continue
            try:
                self.outbox.delete([item.seq for item in items])
            except UbiqError as error:  # sent again after a restart
                logger.error("webhook: %s", error)
            if split_end_seq and items[-1].seq >= split_end_seq:
                split_end_seq, limit = 0, self.options.batch_size  # the refused batch is out
            if outcome == "sent":
                self.events_sent += len(items)
                self.requests_sent += 1
            else:
                self.events_refused += len(items)

    def _post(self, kind: str, event_id: str, body: bytes, *, count: int = 0) -> tuple[str, str]:
        """One POST: ``("sent" | "refused" | "retry", reason)``; ``count`` > 0 for a batch."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "ubiq-webhook",
            "X-Ubiq-Event": kind,
        }
        if count:
            headers["X-Ubiq-Batch"] = str(count)
        else:
            headers["X-Ubiq-Event-Id"] = event_id
        if self.options.secret:
            headers["X-Ubiq-Signature"] = sign(self.options.secret, body)
        request = urllib.request.Request(self.options.url, data=body, headers=headers)
        self.attempts += 1
        try:
            with urllib.request.urlopen(request, timeout=self.options.timeout_s) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as error:
            status = error.code
            error.close()
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", None) or error
            return "retry", str(getattr(reason, "strerror", None) or reason)
        if 200 <= status < 300:
            return "sent", ""
        if status in REFUSED_STATUSES:
            if count > 1:
                return "refused", f"HTTP {status}"  # split, then the lone event is logged
            if status not in self._refused_logged:
                self._refused_logged.add(status)
                logger.error(
                    "webhook: %s refused event %s with HTTP %d; dropping it (and any other "
                    "it refuses so)",
                    self.options.address,
                    event_id or json.loads(body)[0].get("id", "?"),
                    status,
                )
            return "refused", f"HTTP {status}"
        return "retry", f"HTTP {status}"

    def close(self) -> None:
        """Waits up to ``flush_timeout_s`` for queued events while the server answers, then
        stops. Events not yet delivered stay in the outbox for the next run."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        deadline = time.monotonic() + self.options.flush_timeout_s
        while time.monotonic() < deadline and self._healthy and len(self.outbox):
            time.sleep(0.02)
        self._stop.set()
        self._wake.set()
        self._sender.join(timeout=self.options.timeout_s + 1.0)
        waiting = len(self.outbox)
        self.outbox.close()
        if waiting:
            logger.warning(
                "webhook: %d events stay queued in %s; they go out on the next run",
                waiting,
                self.outbox.path,
            )
