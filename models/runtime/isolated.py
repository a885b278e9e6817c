"""Library calls in a fresh Python process, for isolation, not for the command line.

Two jobs need a process of their own:

* :func:`pull_in_child`: a zoo entry that needs a toolchain extra (torch, Ultralytics) to
  fetch is pulled in a child, so the runtime process never imports them;
* :func:`bench_in_child`: each model is timed in a clean process, so its peak RSS is its own.

The child runs ``python -m ubiq.models.runtime.isolated ENTRY KWARGS_JSON``: it calls one
library function of :data:`ENTRY_POINTS` with the keyword arguments and prints one JSON
object on stdout, ``{"result": ...}`` or ``{"error": {"type", "message", "exit_code",
"attributes"}}``. The parent raises a :class:`~ubiq.errors.UbiqError` of the same class and
message again, so a failure in the child reads as it would in-process.
"""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ubiq import errors
from ubiq.errors import UbiqError, ZooError

__all__ = ["ENTRY_POINTS", "bench_in_child", "call_in_child", "main", "pull_in_child"]

MODULE = "ubiq.models.runtime.isolated"
"""This module's import name (``python -m`` runs it as ``__main__``)."""

ENTRY_POINTS: dict[str, str] = {
    "bench": f"{MODULE}:_bench",
    "pull": f"{MODULE}:_pull",
}
"""What a child may run: entry name to ``"module:function"`` (keyword arguments only)."""


def _bench(**options: Any) -> dict[str, Any]:
    from ubiq.models.runtime.bench import bench_model

    return bench_model(**options).to_dict()


def _pull(name: str, timeout_s: float = 20.0) -> str:
    from ubiq.models.zoo import pull

    return str(pull(name, progress=False, timeout_s=timeout_s))


def _error_from(payload: dict[str, Any]) -> UbiqError:
    """The child's error as an exception of the same :mod:`ubiq.errors` class."""
    kind = getattr(errors, str(payload.get("type")), None)
    message = str(payload.get("message", "the child process failed"))
    if not (isinstance(kind, type) and issubclass(kind, UbiqError)):
        kind = UbiqError
    error = kind.__new__(kind)
    Exception.__init__(error, message)
    for name, value in dict(payload.get("attributes") or {}).items():
        setattr(error, name, value)
    error.exit_code = int(payload.get("exit_code", kind.exit_code))
    return error


def _answer(stdout: str) -> dict[str, Any] | None:
    """The child's JSON answer: the last stdout line that is one (native libraries may
    write lines of their own)."""
    for line in reversed(stdout.splitlines()):
        try:
            answer = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(answer, dict) and ("result" in answer or "error" in answer):
            return answer
    return None


def call_in_child(
    entry: str, kwargs: dict[str, Any] | None = None, *, timeout_s: float | None = None
) -> Any:
    """Runs entry point ``entry`` with keyword arguments ``kwargs`` in a fresh Python process.

    Args:
        entry: A key of :data:`ENTRY_POINTS`.
        kwargs: JSON-safe keyword arguments of the entry point.
        timeout_s: Seconds to wait for the child; ``None`` waits as long as it takes.

    Returns:
        The entry point's JSON-safe result.

    Raises:
        ConfigError: If ``entry`` is unknown.
        UbiqError: The child's error (same class, message and exit code), or, when the
            child died without one, its last line of stderr.
    """
    if entry not in ENTRY_POINTS:
        raise errors.ConfigError(f"entry must be one of {', '.join(ENTRY_POINTS)}, got {entry!r}")
    command = [sys.executable, "-m", MODULE, entry, json.dumps(kwargs or {})]
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=timeout_s
        )
    except subprocess.TimeoutExpired as error:
        raise UbiqError(f"{entry} did not finish within {timeout_s} s") from error
    answer = _answer(completed.stdout)
    if answer is not None and "error" in answer:
        raise _error_from(answer["error"])
    if completed.returncode == 0 and answer is not None:
        return answer["result"]
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    error = UbiqError(lines[-1] if lines else f"{entry} failed: exit {completed.returncode}")
    error.exit_code = completed.returncode or UbiqError.exit_code
    raise error


def bench_in_child(
    name_or_path: str,
    *,
    runs: int = 200,
    warmup: int = 20,
    threads: int | None = None,
    backend: str | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """:func:`~ubiq.models.runtime.bench.bench_model` in a fresh process (its own peak RSS).

    Returns:
        The :class:`~ubiq.models.runtime.bench.BenchResult` as a dict.

    Raises:
        ConfigError, ModelError, BackendUnavailable: As ``bench_model`` raises them.
    """
    options = {
        "name_or_path": str(name_or_path),
        "runs": runs,
        "warmup": warmup,
        "threads": threads,
        "backend": backend,
        "device": str(device),
    }
    return call_in_child("bench", options)


def pull_in_child(name: str, timeout_s: float = 20.0) -> Path:
    """:func:`~ubiq.models.zoo.pull` in a fresh process: the extras a pull may import
    (torch, Ultralytics) stay out of this one.

    Returns:
        The cached model file.

    Raises:
        ZooError: With the child's error message when the pull fails.
    """
    try:
        return Path(call_in_child("pull", {"name": name, "timeout_s": timeout_s}))
    except ZooError:
        raise
    except UbiqError as error:
        raise ZooError(str(error)) from error


def main(argv: Sequence[str] | None = None) -> int:
    """The child's side: ``ENTRY KWARGS_JSON`` in, one JSON line out; returns the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in ENTRY_POINTS:
        entries = ",".join(ENTRY_POINTS)
        sys.stderr.write(f"usage: python -m {MODULE} {{{entries}}} KWARGS_JSON\n")
        return 2
    module_name, _, function_name = ENTRY_POINTS[args[0]].partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    try:
        result = function(**json.loads(args[1]))
    except UbiqError as error:
        attributes = {
            k: v for k, v in vars(error).items() if isinstance(v, (str, int, float, bool))
        }
        payload = {
            "type": type(error).__name__,
            "message": str(error),
            "exit_code": error.exit_code,
            "attributes": attributes,
        }
        sys.stdout.write(json.dumps({"error": payload}) + "\n")
        return error.exit_code
    sys.stdout.write(json.dumps({"result": result}) + "\n")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    raise SystemExit(main())
