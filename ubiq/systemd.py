"""sd_notify for services run by systemd: readiness, watchdog pings, stopping.

With ``Type=notify`` and ``WatchdogSec=`` in the unit, systemd restarts a ubiq service
whose pipeline stops delivering frames (a camera that hangs, a wedged runtime). Outside
systemd (``NOTIFY_SOCKET`` unset) every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time

logger = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Sends ``state`` (such as ``"READY=1"``) to systemd's notify socket.

    Returns:
        Whether a message was sent (``False`` outside systemd or when sending failed).
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)  # a receiver that stopped reading never stalls a pipeline
            sock.connect(address)
            sock.send(state.encode("utf-8"))
    except BlockingIOError:
        logger.debug("systemd notify socket is full; dropped %s", state)
        return False
    except OSError as error:
        logger.warning("cannot notify systemd (%s): %s", state, error)
        return False
    return True


class Watchdog:
    """Sends ``WATCHDOG=1`` at most every half of systemd's ``WatchdogSec``.

    Reads ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, when set, must be this process) once,
    at construction. :meth:`ping` is a clock check when no ping is due.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.interval_s = 0.0
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        ours = not pid or (pid.isdigit() and int(pid) == os.getpid())
        if os.environ.get("NOTIFY_SOCKET") and usec.isdigit() and int(usec) > 0 and ours:
            self.enabled = True
            self.interval_s = int(usec) / 1e6 / 2.0
        self._next_at = 0.0

    def ping(self) -> None:
        """Tells systemd the pipeline is alive, when a ping is due."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now >= self._next_at:
            notify("WATCHDOG=1")
            self._next_at = now + self.interval_s
