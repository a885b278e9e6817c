"""One bounded producer thread, shared by the sources that decode ahead and the runner that
prepares frames ahead.

``Prefetcher(produce)`` runs ``produce()`` (an iterator) on a thread of its own and hands
its items over, in order, through a queue of at most ``maxsize`` items, so memory stays
bounded while the producer overlaps the consumer. An exception in the producer is
re-raised in the consumer; ``close()`` stops the producer (even one blocked on a full
queue) and joins it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

POLL_INTERVAL_S = 0.05


class _End:
    """Queue marker: the producer finished (``error`` set when it failed)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class Prefetcher(Generic[T]):
    """Runs ``produce()`` on a background thread and yields its items in order.

    Args:
        produce: Returns the iterator to run on the thread.
        maxsize: How many items may wait for the consumer (>= 1).
        name: Thread name (shown by debuggers and ``py-spy``).
        stop_event: Set by the owner to stop both sides (a new one when ``None``).
        on_exit: Called on the producer thread after ``produce()`` ends or fails
            (releases a file or device there, where it was opened).

    Raises:
        ValueError: If ``maxsize`` is not an integer >= 1.
    """

    def __init__(
        self,
        produce: Callable[[], Iterator[T]],
        *,
        maxsize: int = 2,
        name: str = "ubiq-prefetch",
        stop_event: threading.Event | None = None,
        on_exit: Callable[[], None] | None = None,
    ) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int) or maxsize < 1:
            raise ValueError(f"maxsize must be an integer >= 1, got {maxsize!r}")
        self._produce = produce
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = stop_event if stop_event is not None else threading.Event()
        self._on_exit = on_exit
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def queue_length(self) -> int:
        """Items waiting in the queue."""
        return self._queue.qsize()

    def start(self) -> Prefetcher[T]:
        """Starts the producer thread; returns ``self``."""
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        """Whether the producer thread is still running."""
        return self._thread.is_alive()

    def _put(self, item: object) -> bool:
        """Puts ``item`` unless the consumer stopped listening; False when stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=POLL_INTERVAL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        end = _End()
        try:
            for item in self._produce():
                if not self._put(item):
                    return
        except BaseException as error:  # noqa: BLE001 - handed to the consumer and re-raised
            end = _End(error)
        finally:
            if self._on_exit is not None:
                self._on_exit()
        self._put(end)

    def __iter__(self) -> Iterator[T]:
        """Yields the producer's items until it ends, fails (re-raised here) or is stopped."""
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=POLL_INTERVAL_S)
            except queue.Empty:
                if self._thread.is_alive():
                    continue
                try:  # the producer is done: take what it left, or end
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stops the producer and waits for it (draining the queue so a blocked ``put``
        returns).

        Returns:
            True when the thread ended within ``timeout_s``.
        """
        self._stop.set()
        if self._thread.ident is None:  # never started
            return True
        waited = 0.0
        while self._thread.is_alive() and waited < timeout_s:
            self._drain()
            self._thread.join(timeout=POLL_INTERVAL_S)
            waited += POLL_INTERVAL_S
        self._drain()
        if self._thread.is_alive():
            logger.warning("%s did not stop within %.0f s", self._thread.name, timeout_s)
            return False
        return True

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return
