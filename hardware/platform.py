"""What machine this is: Raspberry Pi model, Jetson L4T/JetPack, Coral Edge TPUs.

:func:`probe_platform` reads files only (device tree, ``/etc/nv_tegra_release``, sysfs
USB ids, ``/dev/apex_*``) under a ``root`` so tests use fake trees. It runs no tools
and is never called at import time.
"""

from __future__ import annotations

import platform as _platform
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

# L4T (major, minor) or (major, minor, patch) -> JetPack, from NVIDIA's release notes.
# A full three-part match wins over a (major, minor) one.
_JETPACK = {
    (36, 4, 3): "6.2",
    (36, 4, 4): "6.2.1",
    (36, 4, 0): "6.1",
    (36, 3): "6.0",
    (36, 2): "6.0 DP",
    (35, 6): "5.1.4",
    (35, 5): "5.1.3",
    (35, 4): "5.1.2",
    (35, 3): "5.1.1",
    (35, 2): "5.1",
    (35, 1): "5.0.2",
    (32, 7): "4.6",
    (32, 6): "4.6",
    (32, 5): "4.5",
}

_TEGRA_RELEASE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?")

_SOCS = {
    "nvidia,tegra234": "Orin",
    "nvidia,tegra194": "Xavier",
    "nvidia,tegra186": "TX2",
    "nvidia,tegra210": "Nano/TX1",
    "brcm,bcm2712": "BCM2712",
    "brcm,bcm2711": "BCM2711",
    "brcm,bcm2837": "BCM2837",
}

_PI_GENERATIONS = {"brcm,bcm2712": 5, "brcm,bcm2711": 4, "brcm,bcm2837": 3}

# (vendor, product) -> state, from the Edge TPU docs.
_CORAL_USB = {("1a6e", "089a"): "usb (firmware not loaded yet)", ("18d1", "9302"): "usb"}


@dataclass(frozen=True)
class CoralDevice:
    """One Edge TPU.

    Attributes:
        kind: ``"usb"`` or ``"pci"``.
        path: The sysfs USB device folder or the ``/dev/apex_N`` node (device paths).
        state: ``"usb"``, ``"usb (firmware not loaded yet)"`` or ``"pci"``.
    """

    kind: str
    path: str
    state: str


@dataclass(frozen=True)
class PlatformInfo:
    """What :func:`probe_platform` found.

    Attributes:
        machine: CPU architecture (``"x86_64"``, ``"aarch64"``).
        system: OS name and release (``"Linux 6.6.51"``).
        os_name: ``PRETTY_NAME`` from ``/etc/os-release`` (empty when absent).
        python: Python version (``"3.11.2"``).
        board: ``"raspberry-pi"``, ``"jetson"`` or ``"generic"``.
        model: Device-tree model string (``"Raspberry Pi 5 Model B Rev 1.0"``), or empty.
        compatible: Device-tree compatible strings, most specific first.
        soc: SoC name from ``compatible`` (``"BCM2712"``, ``"Orin"``), or ``None``.
        pi_generation: 3, 4 or 5 on a Raspberry Pi, else ``None``.
        l4t: L4T version (``"36.4.3"``) on a Jetson, else ``None``.
        jetpack: JetPack version for ``l4t``; ``None`` when the L4T is not in the table.
        coral: Edge TPUs found (USB and PCIe).
    """

    machine: str
    system: str
    os_name: str
    python: str
    board: str = "generic"
    model: str = ""
    compatible: tuple[str, ...] = ()
    soc: str | None = None
    pi_generation: int | None = None
    l4t: str | None = None
    jetpack: str | None = None
    coral: tuple[CoralDevice, ...] = field(default_factory=tuple)

    @property
    def is_pi(self) -> bool:
        return self.board == "raspberry-pi"

    @property
    def is_jetson(self) -> bool:
        return self.board == "jetson"

    def to_dict(self) -> dict:
        """Returns the probe as JSON-safe values."""
        data = asdict(self)
        data["compatible"] = list(self.compatible)
        data["coral"] = [asdict(device) for device in self.coral]
        return data


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "replace")
    except OSError:
        return ""


def _read_nul_list(path: Path) -> tuple[str, ...]:
    """Device-tree string lists are NUL-separated and NUL-terminated."""
    return tuple(part.strip() for part in _read_text(path).split("\x00") if part.strip())


def parse_l4t(text: str) -> str | None:
    """Returns the L4T version in ``/etc/nv_tegra_release`` text.

    Args:
        text: The file's content, e.g. ``"# R36 (release), REVISION: 4.3, GCID: ..."``.

    Returns:
        ``"36.4.3"`` for that example, or ``None`` when the line is not there.
    """
    match = _TEGRA_RELEASE.search(text)
    if not match:
        return None
    major, minor, patch = match.groups()
    return f"{major}.{minor}.{patch}" if patch is not None else f"{major}.{minor}"


def jetpack_for_l4t(l4t: str) -> str | None:
    """Returns the JetPack release that ships L4T ``l4t``, or ``None`` when unknown.

    Args:
        l4t: Version such as ``"36.4.3"`` or ``"35.6"``.

    Raises:
        ValueError: If ``l4t`` is not dotted numbers.
    """
    try:
        parts = tuple(int(part) for part in l4t.split("."))
    except ValueError as error:
        raise ValueError(f"l4t must look like '36.4.3', got {l4t!r}") from error
    if len(parts) >= 3 and parts[:3] in _JETPACK:
        return _JETPACK[parts[:3]]
    return _JETPACK.get(parts[:2])


def _os_name(root: Path) -> str:
    for line in _read_text(root / "etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return ""


def find_coral(root: Path = Path("/")) -> tuple[CoralDevice, ...]:
    """Finds Edge TPUs: USB ids under ``<root>/sys/bus/usb/devices`` and ``<root>/dev/apex_*``.

    Args:
        root: Filesystem root to read.

    Returns:
        The devices found, USB first; empty when none.
    """
    root = Path(root)
    found = []
    usb = root / "sys/bus/usb/devices"
    if usb.is_dir():
        for device in sorted(usb.iterdir()):
            vendor = _read_text(device / "idVendor").strip().lower()
            product = _read_text(device / "idProduct").strip().lower()
            state = _CORAL_USB.get((vendor, product))
            if state:
                found.append(CoralDevice("usb", f"/sys/bus/usb/devices/{device.name}", state))
    dev = root / "dev"
    if dev.is_dir():
        for node in sorted(dev.glob("apex_*")):
            found.append(CoralDevice("pci", f"/dev/{node.name}", "pci"))
    return tuple(found)


def probe_platform(root: Path = Path("/")) -> PlatformInfo:
    """Describes this machine from files under ``root``.

    Architecture, kernel and Python come from the running interpreter when ``root`` is
    ``/``; with a fake tree the architecture is guessed from the board (``aarch64`` for a
    Pi 4/5 or a Jetson) so tests get the same answer on any host.

    Args:
        root: Filesystem root to read (``/`` on a device, a fake tree in tests).

    Returns:
        A :class:`PlatformInfo`.
    """
    root = Path(root)
    model = _read_text(root / "proc/device-tree/model").replace("\x00", "").strip()
    compatible = _read_nul_list(root / "proc/device-tree/compatible")
    soc = next((_SOCS[entry] for entry in compatible if entry in _SOCS), None)
    pi_generation = next(
        (_PI_GENERATIONS[entry] for entry in compatible if entry in _PI_GENERATIONS), None
    )
    tegra_release = _read_text(root / "etc/nv_tegra_release")
    l4t = parse_l4t(tegra_release) if tegra_release else None
    if l4t is not None or any(entry.startswith("nvidia,tegra") for entry in compatible):
        board = "jetson"
    elif model.startswith("Raspberry Pi") or pi_generation is not None:
        board = "raspberry-pi"
    else:
        board = "generic"
    on_host = root.resolve() == Path("/")
    if on_host:
        machine = _platform.machine()
        system = f"{_platform.system()} {_platform.release()}"
    else:
        machine = "aarch64" if board != "generic" else _platform.machine()
        system = "Linux"
    return PlatformInfo(
        machine=machine,
        system=system,
        os_name=_os_name(root),
        python=".".join(str(part) for part in sys.version_info[:3]),
        board=board,
        model=model,
        compatible=compatible,
        soc=soc,
        pi_generation=pi_generation if board == "raspberry-pi" else None,
        l4t=l4t,
        jetpack=jetpack_for_l4t(l4t) if l4t else None,
        coral=find_coral(root),
    )
