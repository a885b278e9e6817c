"""The doctor's rules: from a report of this machine to problems, each with its fix.

Fixes are commands to run or steps to take; a ``ubiq`` command in a fix is in backticks
and runs as written (the tests run each one).
"""

from __future__ import annotations

import os

from ubiq.hardware.platform import PlatformInfo

_GST_APT = (
    "sudo apt install gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 python3-gi, and in a venv made with "
    "--system-site-packages (or pip install 'pygobject<3.51' on Debian 12)"
)


def _problem(severity: str, problem: str, fix: str) -> dict:
    """One problem as the report holds it."""
    return {"severity": severity, "problem": problem, "fix": fix}


def find_problems(report: dict, platform: PlatformInfo) -> list[dict]:
    """The problems a doctor report shows, each with its fix.

    Args:
        report: The report of :func:`ubiq.deploy.doctor.collect` without ``problems``
            (it reads ``root``, ``runtimes``, ``cameras`` and ``health``).
        platform: The probed platform the report was made from.

    Returns:
        Dicts with ``severity`` (``error``, ``warning`` or ``info``), ``problem`` and ``fix``,
        errors first as found.
    """
    runtimes, problems = report["runtimes"], []
    opencv, ort = runtimes["opencv"], runtimes["onnxruntime"]
    if opencv["version"] is None:
        problems.append(
            _problem("error", "OpenCV is missing", "pip install opencv-python-headless")
        )
    if ort["version"] is None and not (
        runtimes["ai-edge-litert"]["version"] or runtimes["tflite-runtime"]["version"]
    ):
        problems.append(
            _problem(
                "error",
                "no inference runtime (onnxruntime or LiteRT) is installed",
                "pip install onnxruntime ai-edge-litert",
            )
        )
    if opencv["version"] is not None and not opencv["gstreamer"]:
        if runtimes["gstreamer"]["available"]:
            problems.append(
                _problem(
                    "info",
                    "OpenCV has no GStreamer: csi/gst sources use PyGObject (found)",
                    "nothing to do; JetPack's system OpenCV has GStreamer built in",
                )
            )
        else:
            problems.append(
                _problem(
                    "warning" if platform.is_jetson else "info",
                    "OpenCV has no GStreamer and PyGObject (gi.repository.Gst) is missing: "
                    "csi/gst sources cannot run",
                    _GST_APT,
                )
            )
    if platform.is_jetson:
        jetpack = platform.jetpack or f"L4T {platform.l4t}"
        if "TensorrtExecutionProvider" not in ort["providers"]:
            problems.append(
                _problem(
                    "warning",
                    "onnxruntime has no TensorRT/CUDA provider: inference runs on the CPU",
                    f"pip uninstall onnxruntime; install the onnxruntime-gpu wheel for JetPack "
                    f"{jetpack} from NVIDIA's Jetson index (not PyPI)",
                )
            )
        if platform.jetpack is None and platform.l4t:
            problems.append(
                _problem(
                    "info",
                    f"L4T {platform.l4t} is not in ubiq's JetPack table",
                    "check the JetPack release notes for the matching wheels",
                )
            )
    if platform.is_pi and not runtimes["picamera2"]["importable"]:
        problems.append(
            _problem(
                "warning",
                "picamera2 is not importable: the Pi camera (source picam) cannot be used",
                "sudo apt install python3-picamera2 and make the venv with "
                "python3 -m venv --system-site-packages",
            )
        )
    if platform.coral:
        if runtimes["libedgetpu"]["library"] is None:
            problems.append(
                _problem(
                    "error",
                    "an Edge TPU is attached but libedgetpu.so.1 is not found",
                    "add Coral's apt repository (packages.cloud.google.com/apt "
                    "coral-edgetpu-stable) and sudo apt install libedgetpu1-std",
                )
            )
        if not (runtimes["ai-edge-litert"]["version"] or runtimes["tflite-runtime"]["version"]):
            problems.append(
                _problem(
                    "error",
                    "an Edge TPU is attached but no LiteRT runtime is installed",
                    "pip install ai-edge-litert (its version must match libedgetpu's)",
                )
            )
        if any(device.state.startswith("usb (firmware") for device in platform.coral):
            problems.append(
                _problem(
                    "info",
                    "the Coral USB accelerator has not loaded its firmware yet (1a6e:089a)",
                    "nothing to do: it loads on first use and re-appears as 18d1:9302",
                )
            )
    if not report["cameras"]:
        fix = (
            "plug in a USB camera, or give a video file or an rtsp:// URL as --source "
            "(`ubiq detect --source demo` runs on the built-in clip)"
        )
        if platform.is_pi:
            fix += "; a Pi camera module is read through picamera2: `ubiq detect --source picam`"
        problems.append(_problem("info", "no V4L2 camera found", fix))
    elif report["root"] == "/":
        node = report["cameras"][0]["path"]
        if os.path.exists(node) and not os.access(node, os.R_OK | os.W_OK):
            problems.append(
                _problem(
                    "warning",
                    f"{node} is not readable by this user",
                    "sudo usermod -aG video $USER, then log in again",
                )
            )
    problems.extend(_health_problems(report["health"], platform))
    return problems


def _health_problems(health: dict, platform: PlatformInfo) -> list[dict]:
    """Under-voltage, throttling and temperature problems of ``health``."""
    problems = []
    throttled = health.get("throttled")
    if throttled:
        for when, flags in (("now", throttled["now"]), ("since boot", throttled["since_boot"])):
            if flags["under_voltage"]:
                supply = "5 V 5 A (27 W)" if platform.pi_generation == 5 else "5 V 3 A"
                problems.append(
                    _problem(
                        "warning",
                        f"under-voltage {when} ({throttled['hex']})",
                        f"use the official {supply} power supply and a short, thick cable",
                    )
                )
            if flags["throttled"] or flags["soft_temperature_limit"]:
                problems.append(
                    _problem(
                        "warning",
                        f"thermal throttling {when} ({throttled['hex']})",
                        "add a heatsink and fan (the Pi 5 Active Cooler) or improve airflow",
                    )
                )
    temperature = health.get("temperature_c")
    if temperature is not None and temperature >= 80.0:
        problems.append(
            _problem(
                "warning",
                f"temperature is {temperature:.1f} C (throttling starts near 80-85 C)",
                "improve cooling before long runs",
            )
        )
    return problems
