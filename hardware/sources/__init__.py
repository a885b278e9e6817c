"""Video sources: files, image folders and globs, webcams, network streams and the demo clip.

``open_source(spec)`` turns what a user types (``0``, ``/dev/video0``, ``clip.mp4``,
``photos/``, ``"shots/*.jpg"``, ``rtsp://...``, ``demo``) into a :class:`Source`::

    with open_source("demo") as source:
        for frame in source:
            ...

Opening happens in ``__enter__``, never at import or construction.
"""

from __future__ import annotations

import re
from pathlib import Path

from ubiq.errors import SourceError

from .base import IMAGE_EXTENSIONS, CaptureLike, PrefetchingSource, Source, check_positive
from .demo import (
    DemoSource,
    demo_clip_path,
    demo_ground_truth,
    load_ground_truth,
    make_pan_zoom_clip,
)
from .images import GLOB_CHARACTERS, ImageSource, glob_images, is_image_path, list_images
from .video import (
    STREAM_SCHEMES,
    CaptureFactory,
    LiveSource,
    StreamSource,
    VideoFileSource,
    WebcamSource,
    redact_url,
)

# Suffixes of http(s) URLs read as remote files (every frame, ending at the end), not streams.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".ts", ".mpg", ".mpeg")

__all__ = [
    "IMAGE_EXTENSIONS",
    "CaptureFactory",
    "CaptureLike",
    "DemoSource",
    "ImageSource",
    "LiveSource",
    "PrefetchingSource",
    "Source",
    "StreamSource",
    "VideoFileSource",
    "WebcamSource",
    "demo_clip_path",
    "demo_ground_truth",
    "load_ground_truth",
    "make_pan_zoom_clip",
    "open_source",
    "redact_url",
]

_URL_PATTERN = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def open_source(
    spec: str,
    *,
    vid_stride: int = 1,
    reconnect: bool = True,
    open_timeout_s: float = 5.0,
    read_timeout_s: float = 5.0,
    stale_after_s: float = 10.0,
) -> Source:
    """Builds the source a spec names; it opens when entered (``with``) or iterated.

    Spec forms, checked in this order: ``demo``; a camera index (``0``) or ``/dev/...``
    path (V4L2); an ``rtsp``/``rtmp``/``http(s)`` URL (FFmpeg); an existing folder (its
    images, sorted); an existing file (an image by extension, else a video); a pattern
    with ``*``, ``?`` or ``[`` (matching images, sorted).

    Args:
        spec: What to read, as typed by a user.
        vid_stride: Keep every ``vid_stride``-th frame of videos and live sources.
        reconnect: Reopen a dropped camera or stream with backoff (live sources).
        open_timeout_s: How long a stream may take to connect.
        read_timeout_s: How long one stream read may block.
        stale_after_s: Seconds without a frame after which a live source counts as dropped.

    Returns:
        An unopened :class:`Source`.

    Raises:
        ConfigError: If a numeric option is out of range, naming it.
        SourceError: If ``spec`` names no existing file, or a folder or pattern holds no
            image.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SourceError(f"source spec must be a non-empty string, got {spec!r}")
    check_positive("vid_stride", vid_stride, integer=True)
    check_positive("open_timeout_s", open_timeout_s)
    check_positive("read_timeout_s", read_timeout_s)
    check_positive("stale_after_s", stale_after_s)
    spec = spec.strip()

    if spec == "demo":
        return DemoSource(vid_stride=vid_stride)
    if spec.isdigit():
        return WebcamSource(
            int(spec), vid_stride=vid_stride, reconnect=reconnect, stale_after_s=stale_after_s
        )
    if spec.startswith("/dev/"):
        return WebcamSource(
            spec, vid_stride=vid_stride, reconnect=reconnect, stale_after_s=stale_after_s
        )
    scheme = _URL_PATTERN.match(spec)
    if scheme is not None:
        if scheme.group(1).lower() not in STREAM_SCHEMES:
            raise SourceError(
                f"unsupported stream scheme in {redact_url(spec)!r}; "
                f"expected one of {', '.join(STREAM_SCHEMES)}"
            )
        url_path = spec.split("?", 1)[0].lower()
        if scheme.group(1).lower() in ("http", "https") and url_path.endswith(VIDEO_EXTENSIONS):
            remote = VideoFileSource(spec, vid_stride=vid_stride, source_id=redact_url(spec))
            remote.timeout_ms = round(max(open_timeout_s, read_timeout_s) * 1000)
            return remote
        return StreamSource(
            spec,
            open_timeout_s=open_timeout_s,
            read_timeout_s=read_timeout_s,
            vid_stride=vid_stride,
            reconnect=reconnect,
            stale_after_s=stale_after_s,
        )

    path = Path(spec).expanduser()
    try:
        path.stat()
    except FileNotFoundError:
        pass
    except OSError as error:
        raise SourceError(f"cannot open source {spec[:200]!r}: {error.strerror}") from error
    if path.is_dir():
        return ImageSource(list_images(path)[::vid_stride], source_id=spec)
    if path.is_file():
        if is_image_path(path):
            return ImageSource([path], source_id=spec)
        return VideoFileSource(path, vid_stride=vid_stride, source_id=spec)
    if any(character in spec for character in GLOB_CHARACTERS):
        return ImageSource(glob_images(spec)[::vid_stride], source_id=spec)
    raise SourceError(f"source file not found: {spec}")
