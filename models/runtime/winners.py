"""Which backend and device ran a model fastest on this machine, as ``ubiq bench --devices
all`` measured it.

The record lives in ``$UBIQ_HOME/bench/winners.json``, keyed by the model file's sha256
and a fingerprint of the machine (CPU model, core count, architecture and the inference
runtimes' versions), so a record made on another box, or before a runtime upgrade, is never
used. ``--device auto`` reads it (see :func:`~ubiq.models.runtime.backend.load_backend`);
nothing is read or hashed when no record exists.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
from pathlib import Path

from ubiq.paths import file_sha256, ubiq_home

logger = logging.getLogger(__name__)

RUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "openvino", "ai-edge-litert")


def winners_path() -> Path:
    """``$UBIQ_HOME/bench/winners.json``."""
    return ubiq_home() / "bench" / "winners.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_fingerprint() -> dict[str, str]:
    """What identifies this machine for speed: CPU, cores, architecture, runtime versions."""
    fingerprint = {
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": str(os.cpu_count()),
    }
    for distribution in RUNTIME_DISTRIBUTIONS:
        try:
            fingerprint[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return fingerprint


def fingerprint_key(fingerprint: dict[str, str] | None = None) -> str:
    """A short hash of :func:`machine_fingerprint`."""
    fingerprint = fingerprint or machine_fingerprint()
    text = json.dumps(fingerprint, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _record_key(model_path: Path) -> str:
    return f"{file_sha256(model_path)[:16]}@{fingerprint_key()}"


def _load() -> dict:
    path = winners_path()
    if not path.is_file():
        return {}
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        logger.warning("ignoring unreadable %s: %s", path, error)
        return {}
    return records if isinstance(records, dict) else {}


def record_winner(model_path: str | Path, winner: dict) -> Path:
    """Stores the winner of a device sweep for this model on this machine.

    Args:
        model_path: The model file that was measured.
        winner: At least ``backend`` and ``device`` (``--device`` text), plus what to show
            (``latency_p50_ms``, ``reference_latency_p50_ms``, ``agreement``).

    Returns:
        The winners file.
    """
    model_path = Path(model_path)
    records = _load()
    records[_record_key(model_path)] = {
        **winner,
        "model": str(model_path),
        "fingerprint": machine_fingerprint(),
    }
    path = winners_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(records, indent=2))
    temporary.replace(path)
    return path


def recorded_winner(model_path: str | Path) -> dict | None:
    """The recorded winner for this model on this machine, or ``None``."""
    if not winners_path().is_file():
        return None
    records = _load()
    if not records:
        return None
    return records.get(_record_key(Path(model_path)))
