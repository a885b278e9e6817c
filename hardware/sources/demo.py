"""The offline demo clip: a smooth pan and zoom over a real photograph, with ground truth.

``ubiq detect demo`` needs a video that exists without a camera or a download. The clip
is generated once, deterministically, from ``ubiq/data/astronaut.jpg`` (512x512 BGR):
640x480, 150 frames at 30 fps, written as MP4 to ``$UBIQ_HOME/demo/astronaut_pan.mp4``
(``UBIQ_HOME`` defaults to ``~/.cache/ubiq``) with ``astronaut_pan.json`` beside it
holding the face box of every frame (the photo's face box mapped through that frame's
affine transform). :func:`make_pan_zoom_clip` makes such clips from any image and box.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import cv2
import numpy as np

import ubiq.errors
from ubiq.errors import ConfigError, SourceError
from ubiq.paths import ubiq_home

from .base import check_positive
from .video import VideoFileSource

logger = logging.getLogger(__name__)

# Located through a core module rather than ``ubiq.__file__``, which is None when a
# ``tests/ubiq`` folder on sys.path makes ``ubiq`` a namespace package.
ASTRONAUT_PATH = Path(ubiq.errors.__file__).parent / "data" / "astronaut.jpg"
"""The bundled photograph (512x512)."""

ASTRONAUT_FACE_XYXY = (177.0, 66.0, 272.0, 161.0)
"""The face in :data:`ASTRONAUT_PATH`, as found by OpenCV's frontal-face Haar cascade."""

DEMO_CLIP_NAME = "astronaut_pan.mp4"
DEMO_FRAMES = 150
DEMO_SIZE = (640, 480)
DEMO_FPS = 30.0
DEMO_SEED = 7
_CLIP_FORMAT_VERSION = 1


def _smooth_unit(times: np.ndarray, rng: np.random.Generator, cycles: float) -> np.ndarray:
    """A smooth curve in [0, 1] over ``times`` in [0, 1]: two sines with random phases."""
    phase_a, phase_b = rng.uniform(0.0, 2.0 * math.pi, size=2)
    wave = 0.7 * np.sin(2.0 * math.pi * cycles * times + phase_a)
    wave += 0.3 * np.sin(2.0 * math.pi * 2.0 * cycles * times + phase_b)
    return 0.5 + 0.5 * wave


def _offset(
    scale: float, low: float, high: float, image_extent: int, frame_extent: int, position: float
) -> float:
    """Translation along one axis keeping ``[low, high]`` inside the frame.

    It also keeps the frame covered by the image when that is possible, and places the
    box at ``position`` (0..1) within the allowed range.
    """
    margin = 0.03 * frame_extent
    box_low = margin - scale * low
    box_high = frame_extent - margin - scale * high
    lowest = max(box_low, frame_extent - scale * image_extent)
    highest = min(box_high, 0.0)
    if lowest > highest:  # the image cannot cover the frame here: borders are reflected
        lowest, highest = box_low, box_high
    return lowest + position * (highest - lowest)


def make_pan_zoom_clip(
    image_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    box_xyxy: tuple[float, float, float, float] | np.ndarray,
    *,
    frames: int = DEMO_FRAMES,
    size: tuple[int, int] = DEMO_SIZE,
    fps: float = DEMO_FPS,
    seed: int = DEMO_SEED,
    box_width_fraction: tuple[float, float] = (0.27, 0.40),
) -> np.ndarray:
    """Writes a deterministic pan-and-zoom MP4 over an image and returns its box track.

    Each frame is ``cv2.warpAffine`` of the image by ``[[s, 0, tx], [0, s, ty]]``, with
    the scale ``s`` and offsets moving smoothly so that the box stays wholly inside the
    frame and its width stays within ``box_width_fraction`` of the frame width. The clip
    (``mp4v``) is written atomically, and ``out_path.with_suffix(".json")`` gets
    ``{"width", "height", "fps", "frames", "boxes": [{"frame": i, "xyxy": [...]}, ...]}``.

    Args:
        image_path: The source image.
        out_path: Where to write the ``.mp4``; its folder is created.
        box_xyxy: The box to track, ``(x1, y1, x2, y2)`` in image pixels.
        frames: Number of frames.
        size: ``(width, height)`` of the clip.
        fps: Frames per second.
        seed: Seeds the camera path; the same arguments give the same clip.
        box_width_fraction: ``(low, high)`` share of the frame width the box spans.

    Returns:
        ``(frames, 4)`` float32 boxes ``x1, y1, x2, y2`` in clip pixels, one per frame.

    Raises:
        ConfigError: If an argument is out of range, naming it.
        SourceError: If the image cannot be read or the clip cannot be written.
    """
    check_positive("frames", frames, integer=True)
    check_positive("fps", fps)
    width, height = (int(value) for value in size)
    if width < 16 or height < 16:
        raise ConfigError(f"size must be (width, height) of at least 16 pixels, got {size}")
    low_fraction, high_fraction = box_width_fraction
    if not 0.0 < low_fraction <= high_fraction < 1.0:
        raise ConfigError(
            f"box_width_fraction must satisfy 0 < low <= high < 1, got {box_width_fraction}"
        )
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"cannot read image {image_path}")
    image_height, image_width = image.shape[:2]
    x1, y1, x2, y2 = (float(value) for value in np.asarray(box_xyxy, np.float64).reshape(4))
    if not (0.0 <= x1 < x2 <= image_width and 0.0 <= y1 < y2 <= image_height):
        raise ConfigError(
            f"box_xyxy must lie inside the {image_width}x{image_height} image with x1 < x2 "
            f"and y1 < y2, got {[x1, y1, x2, y2]}"
        )
    box_width, box_height = x2 - x1, y2 - y1
    scale_low = low_fraction * width / box_width
    scale_high = min(high_fraction * width / box_width, 0.94 * height / box_height)
    if scale_high < scale_low:
        raise ConfigError(
            f"box_xyxy {[x1, y1, x2, y2]} is too tall to span {box_width_fraction} of the "
            f"width of a {width}x{height} frame"
        )

    rng = np.random.default_rng(seed)
    times = np.arange(frames, dtype=np.float64) / max(frames - 1, 1)
    cycles = max(frames / 150.0, 1.0)
    scales = scale_low + (scale_high - scale_low) * _smooth_unit(times, rng, cycles)
    pan_x = 0.05 + 0.9 * _smooth_unit(times, rng, cycles)
    pan_y = 0.05 + 0.9 * _smooth_unit(times, rng, cycles)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temporary_video = out_path.with_name(f".{out_path.stem}.{os.getpid()}.tmp{out_path.suffix}")
    writer = cv2.VideoWriter(
        str(temporary_video), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width, height)
    )
    if not writer.isOpened():
        raise SourceError(f"cannot write video {temporary_video} (mp4v encoder unavailable?)")
    boxes = np.zeros((frames, 4), np.float32)
    try:
        for index in range(frames):
            scale = float(scales[index])
            offset_x = _offset(scale, x1, x2, image_width, width, float(pan_x[index]))
            offset_y = _offset(scale, y1, y2, image_height, height, float(pan_y[index]))
            matrix = np.array([[scale, 0.0, offset_x], [0.0, scale, offset_y]], np.float64)
            frame = cv2.warpAffine(
                image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT_101,
            )  # fmt: skip
            writer.write(frame)
            boxes[index] = [
                scale * x1 + offset_x,
                scale * y1 + offset_y,
                scale * x2 + offset_x,
                scale * y2 + offset_y,
            ]
    finally:
        writer.release()
    if not temporary_video.is_file() or temporary_video.stat().st_size == 0:
        temporary_video.unlink(missing_ok=True)
        raise SourceError(f"writing video {temporary_video} produced no file")

    record = {
        "version": _CLIP_FORMAT_VERSION,
        "image": Path(image_path).name,
        "source_box_xyxy": [x1, y1, x2, y2],
        "width": width,
        "height": height,
        "fps": float(fps),
        "frames": frames,
        "seed": seed,
        "boxes": [
            {"frame": index, "xyxy": [round(float(value), 3) for value in box]}
            for index, box in enumerate(boxes)
        ],
    }
    json_path = out_path.with_suffix(".json")
    temporary_json = json_path.with_name(f".{json_path.stem}.{os.getpid()}.tmp.json")
    temporary_json.write_text(json.dumps(record, indent=1))
    os.replace(temporary_video, out_path)
    os.replace(temporary_json, json_path)  # last: a readable JSON marks a complete clip
    logger.info("wrote %d-frame clip %s and %s", frames, out_path, json_path.name)
    return boxes


def load_ground_truth(json_path: str | os.PathLike[str]) -> list[np.ndarray]:
    """Reads the per-frame boxes written by :func:`make_pan_zoom_clip`.

    Returns:
        One ``(1, 4)`` float32 array ``x1, y1, x2, y2`` per frame, in frame order.

    Raises:
        SourceError: If the file is missing or malformed.
    """
    json_path = Path(json_path)
    try:
        record = json.loads(json_path.read_text())
        boxes = sorted(record["boxes"], key=lambda entry: entry["frame"])
        return [np.asarray([entry["xyxy"]], np.float32).reshape(1, 4) for entry in boxes]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SourceError(f"cannot read ground truth {json_path}: {error}") from error


def _is_complete(video_path: Path, json_path: Path) -> bool:
    if not (video_path.is_file() and json_path.is_file()):
        return False
    try:
        record = json.loads(json_path.read_text())
    except (OSError, ValueError) as error:
        logger.warning("regenerating the demo clip: %s is unreadable (%s)", json_path, error)
        return False
    return (
        isinstance(record, dict)
        and record.get("version") == _CLIP_FORMAT_VERSION
        and record.get("frames") == DEMO_FRAMES
        and record.get("seed") == DEMO_SEED
    )


def demo_clip_path(regenerate: bool = False) -> Path:
    """Returns the demo clip, generating it (about a second) when missing or stale.

    Args:
        regenerate: Rewrite the clip even if a complete one exists.

    Returns:
        Path of ``$UBIQ_HOME/demo/astronaut_pan.mp4``.

    Raises:
        SourceError: If the clip cannot be written, naming the path.
    """
    video_path = ubiq_home() / "demo" / DEMO_CLIP_NAME
    json_path = video_path.with_suffix(".json")
    if regenerate or not _is_complete(video_path, json_path):
        try:
            make_pan_zoom_clip(ASTRONAUT_PATH, video_path, ASTRONAUT_FACE_XYXY)
        except OSError as error:
            raise SourceError(f"cannot write the demo clip to {video_path}: {error}") from error
    return video_path


def demo_ground_truth() -> list[np.ndarray]:
    """Returns the face box of every demo clip frame (generating the clip when needed).

    Returns:
        :data:`DEMO_FRAMES` arrays of shape ``(1, 4)`` float32, ``x1, y1, x2, y2`` in pixels.

    Raises:
        SourceError: If the clip cannot be generated or its JSON cannot be read.
    """
    return load_ground_truth(demo_clip_path().with_suffix(".json"))


class DemoSource(VideoFileSource):
    """Plays the demo clip like a video file; the clip is generated when first opened.

    Args:
        vid_stride: Yield every ``vid_stride``-th frame.
        queue_size: How many decoded frames may wait for the consumer.
    """

    def __init__(self, *, vid_stride: int = 1, queue_size: int = 4) -> None:
        video_path = ubiq_home() / "demo" / DEMO_CLIP_NAME
        super().__init__(video_path, vid_stride=vid_stride, source_id="demo", queue_size=queue_size)

    def _open(self) -> None:
        self.path = demo_clip_path()
        super()._open()
