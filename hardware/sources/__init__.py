"""Video sources: files, image folders and globs, cameras, network streams and the demo clip.

``open_source(spec)`` turns what a user types (``0``, ``/dev/video0``, ``usb:C920``,
``picam``, ``csi:0``, ``gst:videotestsrc``, ``clip.mp4``, ``photos/``, ``"shots/*.jpg"``,
``rtsp://...``, ``demo``) into a :class:`Source`::

    with open_source("demo") as source:
        for frame in source:
            ...

Opening happens in ``__enter__``, never at import or construction.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ubiq.errors import ConfigError, SourceError

from .base import IMAGE_EXTENSIONS, CaptureLike, PrefetchingSource, Source, check_positive
from .demo import (
    DemoSource,
    demo_clip_path,
    demo_ground_truth,
    load_ground_truth,
    make_pan_zoom_clip,
)
from .gstreamer import CsiSource, GStreamerSource
from .images import GLOB_CHARACTERS, ImageSource, glob_images, is_image_path, list_images
from .picam import PicamSource
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
    "CsiSource",
    "GStreamerSource",
    "DemoSource",
    "ImageSource",
    "LiveSource",
    "PicamSource",
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

logger = logging.getLogger(__name__)

_URL_PATTERN = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
_CAMERA_SPEC = re.compile(r"^(picam|csi)(?::(\d+))?(?:\?(.*))?$")
_SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")


def _parse_camera_options(spec: str, query: str, allowed: tuple[str, ...]) -> dict[str, object]:
    """Parses ``size=WxH&fps=F&...`` after a ``picam``/``csi`` spec into keyword arguments."""
    options: dict[str, object] = {}
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key not in allowed:
            raise ConfigError(
                f"unknown option {key!r} in source {spec!r}; expected {', '.join(allowed)}"
            )
        if key == "size":
            size = _SIZE_PATTERN.match(value)
            if size is None:
                raise ConfigError(f"size in source {spec!r} must be WIDTHxHEIGHT, got {value!r}")
            options["size"] = (int(size.group(1)), int(size.group(2)))
        elif key == "format":
            options["stream_format"] = value
        else:
            try:
                number = float(value) if key == "fps" else int(value)
            except ValueError as error:
                raise ConfigError(
                    f"{key} in source {spec!r} must be a number, got {value!r}"
                ) from error
            options["flip_method" if key == "flip" else key] = number
    return options


def camera_by_name(name: str) -> str:
    """Finds a V4L2 camera by its driver name (``usb:C920``).

    An exact (case-insensitive) name wins; else a unique substring. A camera exposing
    several nodes (video and metadata) resolves to its lowest-numbered node.

    Args:
        name: The name or part of it, as in ``ubiq devices`` / ``v4l2-ctl --list-devices``.

    Returns:
        The device path, such as ``"/dev/video0"``.

    Raises:
        SourceError: If no camera or several differently named cameras match, listing the
            names found.
    """
    from ubiq.hardware.devices import list_video_devices

    devices = list_video_devices()
    wanted = name.strip().lower()
    matches = [device for device in devices if device.name.strip().lower() == wanted]
    if not matches:
        matches = [device for device in devices if wanted in device.name.lower()]
    names = sorted({device.name for device in matches})
    if len(names) == 1:
        return min(matches, key=lambda device: device.index).path
    found = sorted({f"{device.name} ({device.path})" for device in (matches or devices)})
    if not devices:
        raise SourceError(f"no camera named {name!r}: no cameras found")
    if not matches:
        raise SourceError(f"no camera named {name!r}; cameras found: {'; '.join(found)}")
    raise SourceError(
        f"camera name {name!r} is ambiguous: {'; '.join(found)}; use a longer name or the path"
    )


def _looks_like_camera_name(spec: str) -> bool:
    """Whether a spec that names no file could be a camera name rather than a typo'd path."""
    suffix = Path(spec).suffix.lower()
    return (
        "/" not in spec
        and not any(character in spec for character in GLOB_CHARACTERS)
        and suffix not in VIDEO_EXTENSIONS
        and suffix not in IMAGE_EXTENSIONS
    )


_FINITE_GST = re.compile(r"\bnum-buffers\s*=\s*\d|\b(?:multi)?filesrc\b")


def is_finite_pipeline(pipeline: str) -> bool:
    """Whether a GStreamer pipeline ends by itself: a ``filesrc``/``multifilesrc`` or a
    source with ``num-buffers=N``. Such a pipeline is played once, not restarted."""
    return _FINITE_GST.search(pipeline) is not None


def _camera_source(
    spec: str, *, vid_stride: int, reconnect: bool | None, stale_after_s: float
) -> Source | None:
    """Builds a ``picam[:N]``, ``csi[:N]``, ``gst:PIPELINE`` or ``usb:NAME`` source, else None."""
    if spec.startswith("gst:"):
        pipeline = spec[len("gst:") :]
        if reconnect is None:
            reconnect = not is_finite_pipeline(pipeline)
        return GStreamerSource(
            pipeline, vid_stride=vid_stride, reconnect=reconnect, stale_after_s=stale_after_s
        )
    reconnect = True if reconnect is None else reconnect
    live = {"vid_stride": vid_stride, "reconnect": reconnect, "stale_after_s": stale_after_s}
    if spec.startswith("usb:"):
        name = spec[len("usb:") :].strip()
        if not name:
            raise SourceError(
                "usb: needs a camera name, e.g. usb:C920; list them with ls /dev/video*"
            )
        return WebcamSource(camera_by_name(name), **live)
    match = _CAMERA_SPEC.match(spec)
    if match is None:
        return None
    kind, index, query = match.group(1), int(match.group(2) or 0), match.group(3) or ""
    if kind == "picam":
        options = _parse_camera_options(spec, query, ("size", "fps", "format"))
        return PicamSource(index, **options, **live)
    options = _parse_camera_options(spec, query, ("size", "fps", "flip"))
    return CsiSource(index, **options, **live)


def _use_jetson_decoder(rtsp_decoder: str, platform_root: Path) -> bool:
    """Whether an rtsp:// source goes through GStreamer's nvv4l2decoder (Jetson hardware
    decode) instead of FFmpeg: ``"nvv4l2"`` forces it, ``"ffmpeg"`` never, ``"auto"`` on a
    Jetson (``/etc/nv_tegra_release`` present).

    Raises:
        ConfigError: If ``rtsp_decoder`` is not one of those.
    """
    if rtsp_decoder not in ("auto", "ffmpeg", "nvv4l2"):
        raise ConfigError(f"rtsp_decoder must be auto, ffmpeg or nvv4l2, got {rtsp_decoder!r}")
    if rtsp_decoder == "auto":
        return (platform_root / "etc" / "nv_tegra_release").is_file()
    return rtsp_decoder == "nvv4l2"


def open_source(
    spec: str,
    *,
    vid_stride: int = 1,
    reconnect: bool | None = None,
    open_timeout_s: float = 5.0,
    read_timeout_s: float = 5.0,
    stale_after_s: float = 10.0,
    rtsp_decoder: str = "auto",
    platform_root: Path = Path("/"),
) -> Source:
    """Builds the source a spec names; it opens when entered (``with``) or iterated.

    Spec forms, checked in this order: ``demo``; a camera index (``0``) or ``/dev/...``
    path (V4L2); ``picam[:N]`` (Raspberry Pi camera through picamera2); ``csi[:N]`` (Jetson
    CSI camera through nvarguscamerasrc); both take ``?size=WxH&fps=F`` and ``format=``
    (picam) or ``flip=`` (csi); ``gst:PIPELINE`` (GStreamer); ``usb:NAME`` (a V4L2 camera
    by name); an ``rtsp``/``rtmp``/``http(s)`` URL (FFmpeg); an existing folder (its images,
    sorted); an existing file (an image by extension, else a video); a pattern with ``*``,
    ``?`` or ``[`` (matching images, sorted); finally a camera name (as ``usb:NAME``).

    Args:
        spec: What to read, as typed by a user.
        vid_stride: Keep every ``vid_stride``-th frame of videos and live sources.
        reconnect: Reopen a dropped camera or stream with backoff (live sources). ``None``
            (the default) reopens every live source except a ``gst:`` pipeline that ends
            by itself (:func:`is_finite_pipeline`), which is played once.
        open_timeout_s: How long a stream may take to connect.
        read_timeout_s: How long one stream read may block.
        stale_after_s: Seconds without a frame after which a live source counts as dropped.
        rtsp_decoder: ``"auto"`` (nvv4l2decoder on a Jetson, else FFmpeg), ``"ffmpeg"`` or
            ``"nvv4l2"``.
        platform_root: Where to look for ``/etc/nv_tegra_release`` (tests use fake trees).

    Returns:
        An unopened :class:`Source`.

    Raises:
        ConfigError: If a numeric option is out of range, naming it.
        SourceError: If ``spec`` names no existing file or camera, or a folder or pattern
            holds no image.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise SourceError(f"source spec must be a non-empty string, got {spec!r}")
    check_positive("vid_stride", vid_stride, integer=True)
    check_positive("open_timeout_s", open_timeout_s)
    check_positive("read_timeout_s", read_timeout_s)
    check_positive("stale_after_s", stale_after_s)
    spec = spec.strip()
    gst_reconnect, reconnect = reconnect, True if reconnect is None else reconnect

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
    camera = _camera_source(
        spec, vid_stride=vid_stride, reconnect=gst_reconnect, stale_after_s=stale_after_s
    )
    if camera is not None:
        return camera
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
        if scheme.group(1).lower() == "rtsp" and _use_jetson_decoder(rtsp_decoder, platform_root):
            from .gstreamer import GStreamerSource, jetson_rtsp_pipeline

            safe = redact_url(spec)
            return GStreamerSource(
                jetson_rtsp_pipeline(spec),
                read_timeout_s=read_timeout_s,
                source_id=safe,
                description=f"stream {safe} (nvv4l2decoder)",
                vid_stride=vid_stride,
                reconnect=reconnect,
                stale_after_s=stale_after_s,
            )
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
    if _looks_like_camera_name(spec):
        try:
            device_path = camera_by_name(spec)
        except SourceError as error:
            logger.debug("%r is no camera name either: %s", spec, error)
        else:
            return WebcamSource(
                device_path, vid_stride=vid_stride, reconnect=reconnect, stale_after_s=stale_after_s
            )
    raise SourceError(f"source file not found: {spec}")
