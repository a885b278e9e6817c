"""Cameras, sound cards and microphones this machine exposes.

:func:`list_video_devices` and :func:`list_sound_cards` read sysfs and procfs; they take a
``root`` so tests (and ``ubiq doctor --root``) can point them at a fake tree.
:func:`list_microphones` lists the audio inputs PortAudio sees (what ``mic:N`` opens); it
lives beside the microphone source in :mod:`ubiq.hardware.sources.audio_live` and is
re-exported here. Nothing is read at import time.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ubiq.hardware.sources.audio_live import list_microphones

__all__ = [
    "SoundCard",
    "VideoDevice",
    "list_microphones",
    "list_sound_cards",
    "list_video_devices",
]

logger = logging.getLogger(__name__)

_VIDEO_NAME = re.compile(r"^video(\d+)$")
_CARD_LINE = re.compile(r"^\s*(\d+)\s+\[([^\]]*)\]\s*:\s*(.*)$")
_FORMAT_LINE = re.compile(r"\[\d+\]:\s*'([^']+)'")


@dataclass(frozen=True)
class VideoDevice:
    """One V4L2 video node.

    Attributes:
        path: Device node, such as ``"/dev/video0"`` (always the path on the device,
            not under the probed root).
        index: The ``N`` of ``videoN``; pass it to ``cv2.VideoCapture(N)``.
        name: The driver's name for it (``/sys/class/video4linux/videoN/name``).
        formats: Pixel formats from ``v4l2-ctl --list-formats`` (empty when unknown).
    """

    path: str
    index: int
    name: str
    formats: tuple[str, ...] = ()


@dataclass(frozen=True)
class SoundCard:
    """One ALSA sound card (it may be capture-only, playback-only or both).

    Attributes:
        card: ALSA card number (``hw:N``).
        id: Short card id, such as ``"Device"``.
        name: Long card name.
    """

    card: int
    id: str
    name: str


def _read_text(path: Path) -> str:
    """Returns a sysfs/procfs file's text without NUL terminators or trailing space."""
    try:
        return path.read_bytes().replace(b"\x00", b"\n").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def _list_formats(device_path: str) -> tuple[str, ...]:
    tool = shutil.which("v4l2-ctl")
    if tool is None:
        return ()
    try:
        completed = subprocess.run(
            [tool, "-d", device_path, "--list-formats"],
            capture_output=True,
            text=True,
            timeout=2.0,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.debug("v4l2-ctl failed on %s: %s", device_path, error)
        return ()
    return tuple(dict.fromkeys(_FORMAT_LINE.findall(completed.stdout)))


def list_video_devices(root: Path = Path("/")) -> list[VideoDevice]:
    """Lists V4L2 video nodes, sorted by index.

    A node counts when ``<root>/sys/class/video4linux/videoN`` exists or
    ``<root>/dev/videoN`` does. Formats are asked of ``v4l2-ctl`` only when ``root`` is
    ``/`` and the tool is installed.

    Args:
        root: Filesystem root to read (``/`` on a device, a fake tree in tests).

    Returns:
        One :class:`VideoDevice` per node. Note that one USB camera often exposes two
        nodes (video and metadata); only the first usually delivers frames.
    """
    root = Path(root)
    indices: set[int] = set()
    for folder in (root / "sys/class/video4linux", root / "dev"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            match = _VIDEO_NAME.match(entry.name)
            if match:
                indices.add(int(match.group(1)))
    probe_formats = root.resolve() == Path("/")
    devices = []
    for index in sorted(indices):
        path = f"/dev/video{index}"
        name = _read_text(root / f"sys/class/video4linux/video{index}/name")
        formats = _list_formats(path) if probe_formats else ()
        devices.append(VideoDevice(path=path, index=index, name=name, formats=formats))
    return devices


def list_sound_cards(root: Path = Path("/")) -> list[SoundCard]:
    """Lists ALSA sound cards from ``<root>/proc/asound/cards``.

    A card may have no capture device (HDMI audio): :func:`list_microphones` lists the
    inputs that can be recorded from.

    Args:
        root: Filesystem root to read.

    Returns:
        One :class:`SoundCard` per card; empty when ALSA is absent.
    """
    cards = []
    for line in _read_text(Path(root) / "proc/asound/cards").splitlines():
        match = _CARD_LINE.match(line)
        if match:
            card, card_id, rest = match.groups()
            name = rest.split(" - ", 1)[-1].strip()
            cards.append(SoundCard(card=int(card), id=card_id.strip(), name=name))
    return cards
