"""Platform probe, device listing and `ubiq doctor`, against fake procfs/sysfs trees.

The trees copy what the real files hold: device-tree strings are NUL-terminated (and
``compatible`` NUL-separated), sysfs values end with a newline.
"""

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ubiq.hardware.devices import VideoDevice, list_sound_cards, list_video_devices
from ubiq.hardware.platform import (
    CoralDevice,
    jetpack_for_l4t,
    parse_l4t,
    probe_platform,
)

REPO = Path(__file__).resolve().parents[2]


def write(root: Path, relative: str, content: str | bytes) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode()
    path.write_bytes(content)


def device_tree(root: Path, model: str, compatible: list[str]) -> None:
    write(root, "proc/device-tree/model", model + "\x00")
    write(root, "proc/device-tree/compatible", "".join(entry + "\x00" for entry in compatible))


def make_pi5(root: Path) -> Path:
    device_tree(root, "Raspberry Pi 5 Model B Rev 1.0", ["raspberrypi,5-model-b", "brcm,bcm2712"])
    write(root, "etc/os-release", 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n')
    write(root, "sys/class/thermal/thermal_zone0/temp", "51850\n")
    write(root, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    write(root, "sys/class/video4linux/video0/name", "rp1-cfe\n")
    write(root, "dev/video0", b"")
    write(
        root,
        "proc/asound/cards",
        " 0 [vc4hdmi0       ]: vc4-hdmi - vc4-hdmi-0\n"
        "                      vc4-hdmi-0\n"
        " 2 [Device         ]: USB-Audio - USB PnP Sound Device\n"
        "                      C-Media Electronics Inc. USB PnP Sound Device at usb-xhci\n",
    )
    return root


def make_pi4(root: Path) -> Path:
    device_tree(root, "Raspberry Pi 4 Model B Rev 1.5", ["raspberrypi,4-model-b", "brcm,bcm2711"])
    return root


def make_jetson_orin(root: Path) -> Path:
    device_tree(
        root,
        "NVIDIA Jetson Orin Nano Developer Kit",
        ["nvidia,p3768-0000+p3767-0005", "nvidia,p3767-0005", "nvidia,tegra234"],
    )
    write(
        root,
        "etc/nv_tegra_release",
        "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, "
        "DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\n",
    )
    return root


def make_coral_usb(root: Path, product: str = "9302") -> Path:
    vendor = "18d1" if product == "9302" else "1a6e"
    write(root, "sys/bus/usb/devices/2-1/idVendor", vendor + "\n")
    write(root, "sys/bus/usb/devices/2-1/idProduct", product + "\n")
    write(root, "sys/bus/usb/devices/1-1/idVendor", "046d\n")  # a webcam, not a Coral
    write(root, "sys/bus/usb/devices/1-1/idProduct", "0825\n")
    return root


def test_pi5_probe(tmp_path):
    info = probe_platform(make_pi5(tmp_path))
    assert info.board == "raspberry-pi" and info.is_pi and not info.is_jetson
    assert info.model == "Raspberry Pi 5 Model B Rev 1.0"
    assert info.compatible == ("raspberrypi,5-model-b", "brcm,bcm2712")
    assert info.pi_generation == 5
    assert info.soc == "BCM2712"
    assert info.machine == "aarch64"
    assert info.os_name == "Debian GNU/Linux 12 (bookworm)"
    assert (info.l4t, info.jetpack, info.coral) == (None, None, ())


def test_pi4_probe(tmp_path):
    info = probe_platform(make_pi4(tmp_path))
    assert (info.board, info.pi_generation, info.soc) == ("raspberry-pi", 4, "BCM2711")
    assert info.model == "Raspberry Pi 4 Model B Rev 1.5"


def test_jetson_orin_probe(tmp_path):
    info = probe_platform(make_jetson_orin(tmp_path))
    assert info.board == "jetson" and info.is_jetson
    assert info.model == "NVIDIA Jetson Orin Nano Developer Kit"
    assert info.soc == "Orin"
    assert (info.l4t, info.jetpack) == ("36.4.3", "6.2")
    assert info.pi_generation is None
    assert info.to_dict()["compatible"][-1] == "nvidia,tegra234"


@pytest.mark.parametrize(
    ("product", "state"), [("9302", "usb"), ("089a", "usb (firmware not loaded yet)")]
)
def test_coral_usb_probe(tmp_path, product, state):
    info = probe_platform(make_coral_usb(tmp_path, product))
    assert info.board == "generic"
    assert info.coral == (CoralDevice("usb", "/sys/bus/usb/devices/2-1", state),)


def test_coral_pcie_probe(tmp_path):
    write(tmp_path, "dev/apex_0", b"")
    assert probe_platform(tmp_path).coral == (CoralDevice("pci", "/dev/apex_0", "pci"),)


def test_empty_tree_is_generic(tmp_path):
    info = probe_platform(tmp_path)
    assert (info.board, info.model, info.soc, info.coral) == ("generic", "", None, ())


@pytest.mark.parametrize(
    ("text", "l4t", "jetpack"),
    [
        ("# R36 (release), REVISION: 4.3, GCID: 1", "36.4.3", "6.2"),
        ("# R36 (release), REVISION: 3.0, GCID: 1", "36.3.0", "6.0"),
        ("# R35 (release), REVISION: 6.0, GCID: 1", "35.6.0", "5.1.4"),
        ("# R32 (release), REVISION: 7.1, GCID: 1", "32.7.1", "4.6"),
        ("# R99 (release), REVISION: 1.0, GCID: 1", "99.1.0", None),
    ],
)
def test_l4t_to_jetpack(text, l4t, jetpack):
    assert parse_l4t(text) == l4t
    assert jetpack_for_l4t(l4t) == jetpack


def test_unknown_l4t_keeps_the_string(tmp_path):
    write(tmp_path, "etc/nv_tegra_release", "# R37 (release), REVISION: 0.1, GCID: 1\n")
    info = probe_platform(tmp_path)
    assert (info.board, info.l4t, info.jetpack) == ("jetson", "37.0.1", None)


def test_bad_l4t_names_the_value():
    assert parse_l4t("not a release file") is None
    with pytest.raises(ValueError, match="'R36'"):
        jetpack_for_l4t("R36")


def test_video_devices_and_microphones(tmp_path):
    make_pi5(tmp_path)
    write(tmp_path, "dev/video3", b"")  # a node without a sysfs entry still counts
    assert list_video_devices(tmp_path) == [
        VideoDevice("/dev/video0", 0, "rp1-cfe", ()),
        VideoDevice("/dev/video3", 3, "", ()),
    ]
    microphones = list_sound_cards(tmp_path)
    assert [(m.card, m.id, m.name) for m in microphones] == [
        (0, "vc4hdmi0", "vc4-hdmi-0"),
        (2, "Device", "USB PnP Sound Device"),
    ]


def test_no_devices_in_an_empty_tree(tmp_path):
    assert list_video_devices(tmp_path) == [] and list_sound_cards(tmp_path) == []


def run_doctor(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    began = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "ubiq", "doctor", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
        timeout=60,
    )
    return completed, time.perf_counter() - began


@pytest.mark.skipif(platform.machine() != "x86_64", reason="asserts this x86-64 machine")
def test_doctor_json_on_this_machine():
    completed, elapsed_s = run_doctor("--json")
    assert completed.returncode == 0, completed.stderr
    assert elapsed_s < 2.0, f"ubiq doctor took {elapsed_s:.2f} s"
    report = json.loads(completed.stdout)
    assert report["platform"]["machine"] == "x86_64"
    assert report["platform"]["board"] == "generic"
    assert "CPUExecutionProvider" in report["runtimes"]["onnxruntime"]["providers"]
    assert report["runtimes"]["numpy"]["version"]
    assert report["accelerators"] == []
    speech = report["speech"]  # the dev install has the speech stack
    assert speech["silero_vad"].endswith("silero_vad.onnx") and speech["espeak_ng"]
    engines = {e["name"]: e["installed"] for e in speech["transcribers"]}
    assert engines["pocketsphinx"] is True and set(engines) >= {"faster-whisper", "whisper"}
    for problem in report["problems"]:
        assert set(problem) == {"severity", "problem", "fix"} and problem["fix"]


def test_doctor_on_a_fake_pi5(tmp_path):
    root = make_pi5(tmp_path)
    completed, _ = run_doctor("--json", "--root", str(root))
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["platform"]["model"] == "Raspberry Pi 5 Model B Rev 1.0"
    assert report["platform"]["pi_generation"] == 5
    assert report["cameras"] == [
        {"path": "/dev/video0", "index": 0, "name": "rp1-cfe", "formats": []}
    ]
    assert report["health"]["temperature_c"] == pytest.approx(51.85)
    assert report["health"]["zones"] == {"cpu-thermal": pytest.approx(51.85)}
    assert report["health"]["throttled"] is None  # a fake tree never runs vcgencmd
    if not report["runtimes"]["picamera2"]["importable"]:
        assert any("picamera2" in p["problem"] for p in report["problems"])
    table, _ = run_doctor("--root", str(root))
    assert table.returncode == 0
    assert "Raspberry Pi 5 Model B Rev 1.0" in table.stdout
    assert "51.9 C" in table.stdout


def test_doctor_reports_coral_without_libedgetpu(tmp_path):
    from ubiq.cli.doctor import collect

    report = collect(make_coral_usb(tmp_path, "089a"))
    assert report["accelerators"] == [
        {"name": "coral", "kind": "usb", "path": "/sys/bus/usb/devices/2-1"}
    ]
    problems = " ".join(p["problem"] for p in report["problems"])
    assert "firmware" in problems
    if report["runtimes"]["libedgetpu"]["library"] is None:
        assert "libedgetpu.so.1 is not found" in problems
