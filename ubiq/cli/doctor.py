"""``ubiq doctor``: what this machine is, what ubiq can use on it, and what to fix.

Reads files and asks Python packages for their versions; loads no model and opens no
camera. Heavy imports (OpenCV, onnxruntime, PyGObject) happen only when it runs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path

_GST_APT = (
    "sudo apt install gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
    "gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 python3-gi, and in a venv made with "
    "--system-site-packages (or pip install 'pygobject<3.51' on Debian 12)"
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check this machine: platform, cameras, runtimes, accelerators, temperature",
        description="Reports the platform, cameras, microphones, inference runtimes and "
        "accelerators ubiq can use here, temperatures and throttling, and each problem "
        "found with its fix. Loads no model and opens no device.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--root", type=Path, default=Path("/"), help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _opencv() -> dict:
    try:
        import cv2
    except ImportError as error:
        return {"version": None, "gstreamer": False, "error": str(error)}
    gstreamer = any(
        line.strip().startswith("GStreamer:") and "YES" in line
        for line in cv2.getBuildInformation().splitlines()
    )
    return {"version": cv2.__version__, "gstreamer": gstreamer}


def _onnxruntime() -> dict:
    try:
        import onnxruntime
    except ImportError as error:
        return {"version": None, "providers": [], "error": str(error)}
    return {
        "version": onnxruntime.__version__,
        "providers": list(onnxruntime.get_available_providers()),
    }


def _gstreamer() -> dict:
    if importlib.util.find_spec("gi") is None:
        return {"available": False, "version": None}
    try:
        import gi

        gi.require_version("Gst", "1.0")
        from gi.repository import Gst
    except (ImportError, ValueError) as error:
        return {"available": False, "version": None, "error": str(error)}
    return {"available": True, "version": Gst.version_string()}


def _runtimes() -> dict:
    import ctypes.util
    import platform as platform_module

    import numpy

    return {
        "python": {"version": platform_module.python_version()},
        "numpy": {"version": numpy.__version__},
        "opencv": _opencv(),
        "onnxruntime": _onnxruntime(),
        "ai-edge-litert": {"version": _version("ai-edge-litert")},
        "tflite-runtime": {"version": _version("tflite-runtime")},
        "libedgetpu": {"library": ctypes.util.find_library("edgetpu")},
        "picamera2": {
            "importable": importlib.util.find_spec("picamera2") is not None
            and importlib.util.find_spec("libcamera") is not None
        },
        "gstreamer": _gstreamer(),
    }


def _accelerators(platform, runtimes: dict) -> list[dict]:
    found = [{"name": "coral", "kind": d.kind, "path": d.path} for d in platform.coral]
    gpu_providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
    for provider in runtimes["onnxruntime"]["providers"]:
        if provider in gpu_providers:
            found.append({"name": provider, "kind": "onnxruntime provider", "path": None})
    return found


def _problem(severity: str, problem: str, fix: str) -> dict:
    return {"severity": severity, "problem": problem, "fix": fix}


def _problems(report: dict, platform) -> list[dict]:
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
                "picamera2 is not importable: the Pi camera (csi source) cannot be used",
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
        fix = "plug in a USB camera, or use a file or rtsp:// source"
        if platform.is_pi:
            fix += "; a Pi camera module uses picamera2 (source csi:0)"
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


def _health_problems(health: dict, platform) -> list[dict]:
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


def _speech() -> dict:
    """What the speech pipeline can use: VAD model, PortAudio, espeak-ng, engines."""
    import ctypes.util
    import shutil

    from ubiq.errors import BackendUnavailable
    from ubiq.pipelines.speech.transcribe import available_engines
    from ubiq.pipelines.speech.vad import find_silero_model

    try:
        vad = str(find_silero_model())
    except BackendUnavailable:
        vad = None
    return {
        "silero_vad": vad,
        "portaudio": ctypes.util.find_library("portaudio"),
        "sounddevice": _version("sounddevice"),
        "espeak_ng": shutil.which("espeak-ng"),
        "transcribers": available_engines(),
    }


def collect(root: Path = Path("/")) -> dict:
    """Builds the doctor report.

    Args:
        root: Filesystem root for the platform, device and temperature probes (a fake tree
            in tests). Python runtimes are always this interpreter's.

    Returns:
        JSON-safe dict with ``platform``, ``cameras``, ``microphones``, ``runtimes``, ``speech``,
        ``accelerators``, ``health`` and ``problems``.
    """
    from ubiq.hardware.devices import list_microphones, list_video_devices
    from ubiq.hardware.health import read_health
    from ubiq.hardware.platform import probe_platform

    platform = probe_platform(root)
    runtimes = _runtimes()
    report = {
        "root": str(root),
        "platform": platform.to_dict(),
        "cameras": [
            {"path": d.path, "index": d.index, "name": d.name, "formats": list(d.formats)}
            for d in list_video_devices(root)
        ],
        "microphones": [
            {"card": m.card, "id": m.id, "name": m.name} for m in list_microphones(root)
        ],
        "runtimes": runtimes,
        "speech": _speech(),
        "accelerators": _accelerators(platform, runtimes),
        "health": read_health(root).to_dict(),
    }
    report["problems"] = _problems(report, platform)
    return report


def _platform_line(platform: dict) -> str:
    text = f"{platform['machine']}, {platform['os_name'] or platform['system']}"
    if platform["model"]:
        text += f", {platform['model']}"
    if platform["l4t"]:
        text += f", L4T {platform['l4t']} (JetPack {platform['jetpack'] or 'unknown'})"
    return text


def _runtime_lines(runtimes: dict) -> list[tuple[str, str]]:
    opencv, ort = runtimes["opencv"], runtimes["onnxruntime"]
    gst = runtimes["gstreamer"]
    missing = "not installed"
    return [
        ("python", runtimes["python"]["version"]),
        ("numpy", runtimes["numpy"]["version"]),
        (
            "opencv",
            f"{opencv['version']} (GStreamer: {'YES' if opencv['gstreamer'] else 'NO'})"
            if opencv["version"]
            else missing,
        ),
        (
            "onnxruntime",
            f"{ort['version']} ({', '.join(ort['providers'])})" if ort["version"] else missing,
        ),
        ("ai-edge-litert", runtimes["ai-edge-litert"]["version"] or missing),
        ("tflite-runtime", runtimes["tflite-runtime"]["version"] or missing),
        ("libedgetpu", runtimes["libedgetpu"]["library"] or "not found"),
        ("picamera2", "importable" if runtimes["picamera2"]["importable"] else missing),
        ("gstreamer (gi)", gst["version"] if gst["available"] else missing),
    ]


def format_report(report: dict) -> str:
    """Returns the report as a human table."""
    rows: list[tuple[str, str]] = [("platform", _platform_line(report["platform"]))]
    cameras = report["cameras"]
    rows.append(("cameras", "none" if not cameras else ""))
    for camera in cameras:
        formats = f" [{', '.join(camera['formats'])}]" if camera["formats"] else ""
        rows.append((f"  {camera['path']}", f"{camera['name']}{formats}"))
    microphones = report["microphones"]
    rows.append(("sound cards", "none" if not microphones else ""))
    for mic in microphones:
        rows.append((f"  hw:{mic['card']}", f"{mic['id']}: {mic['name']}"))
    rows.append(("runtimes", ""))
    rows.extend((f"  {name}", value) for name, value in _runtime_lines(report["runtimes"]))
    speech = report["speech"]
    missing = "not installed"
    rows.append(("speech", ""))
    rows.append(
        ("  silero VAD", speech["silero_vad"] or "not found (pip install --no-deps silero-vad)")
    )
    rows.append(
        ("  portaudio", speech["portaudio"] or "not found (sudo apt-get install libportaudio2)")
    )
    rows.append(("  sounddevice", speech["sounddevice"] or missing))
    rows.append(
        ("  espeak-ng", speech["espeak_ng"] or "not found (sudo apt-get install espeak-ng)")
    )
    for engine in speech["transcribers"]:
        rows.append((f"  {engine['name']}", engine["detail"]))
    accelerators = report["accelerators"]
    rows.append(
        (
            "accelerators",
            ", ".join(f"{a['name']} ({a['path'] or a['kind']})" for a in accelerators) or "none",
        )
    )
    health = report["health"]
    temperature = health["temperature_c"]
    rows.append(("temperature", "unknown" if temperature is None else f"{temperature:.1f} C"))
    throttled = health["throttled"]
    rows.append(("throttled", "unknown (no vcgencmd)" if throttled is None else throttled["hex"]))
    width = max(len(name) for name, _ in rows) + 2
    lines = [f"{name:<{width}}{value}".rstrip() for name, value in rows]
    problems = report["problems"]
    lines.append("")
    lines.append(f"{len(problems)} problem(s)" if problems else "no problems found")
    for problem in problems:
        lines.append(f"  [{problem['severity']}] {problem['problem']}")
        lines.append(f"      fix: {problem['fix']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    report = collect(args.root)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0
