"""Where ubiq keeps files (one cache root for models, demo clips and engine caches), and
file checksums."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def ubiq_home() -> Path:
    """Returns ubiq's cache root: ``$UBIQ_HOME``, else ``$XDG_CACHE_HOME/ubiq``, else
    ``~/.cache/ubiq``. The environment is read on every call, never at import."""
    home = os.environ.get("UBIQ_HOME")
    if home:
        return Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "ubiq"


def file_sha256(path: str | Path) -> str:
    """Returns the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def output_path(value: str, position: int, count: int) -> str:
    """The output for source ``position`` of ``count`` when one run writes one per source:
    ``out.jsonl`` -> ``out-2.jsonl`` (unchanged when there is one source)."""
    if count == 1:
        return value
    path = Path(value)
    return str(path.with_name(f"{path.stem}-{position + 1}{path.suffix}"))


def replace_dir(staging: str | Path, out: str | Path) -> None:
    """Puts the complete folder ``staging`` at ``out``, replacing what is there, so a
    reader sees the old folder or the new one, never half of either (an old ``out`` is
    moved aside first and removed once the new one is in place)."""
    staging, out = Path(staging), Path(out)
    if not out.exists():
        os.replace(staging, out)
        return
    backup = out.with_name(f".{out.name}.old")
    if backup.exists():
        shutil.rmtree(backup)
    os.replace(out, backup)
    os.replace(staging, out)
    shutil.rmtree(backup)
