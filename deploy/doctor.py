"""The doctor: what this machine is, what ubiq can use on it, and what to fix.

:func:`collect` reads files and asks Python packages for their versions; it loads no model
and opens no camera. Heavy imports (OpenCV, onnxruntime, PyGObject) happen only when it
runs. The rules that turn a report into problems and fixes are in
:mod:`ubiq.deploy.problems`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from .problems import find_problems


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


def _openvino() -> dict:
    """OpenVINO's version and devices (CPU, GPU, NPU), when it is installed."""
    if importlib.util.find_spec("openvino") is None:
        return {"version": None, "devices": []}
    from ubiq.errors import BackendUnavailable
    from ubiq.hardware.accelerators import openvino_devices

    try:
        devices = openvino_devices()
    except (BackendUnavailable, RuntimeError) as error:
        return {"version": _version("openvino"), "devices": [], "error": str(error)}
    return {
        "version": _version("openvino"),
        "devices": [{"name": name, "full_name": full} for name, full in devices],
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
        "openvino": _openvino(),
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
    for device in runtimes.get("openvino", {}).get("devices", []):
        if device["name"] != "CPU":
            kind = f"OpenVINO device, --device openvino:{device['name']}"
            found.append({"name": device["full_name"], "kind": kind, "path": None})
    return found


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
    from ubiq.hardware.devices import list_sound_cards, list_video_devices
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
            {"card": m.card, "id": m.id, "name": m.name} for m in list_sound_cards(root)
        ],
        "runtimes": runtimes,
        "speech": _speech(),
        "accelerators": _accelerators(platform, runtimes),
        "health": read_health(root).to_dict(),
    }
    report["problems"] = find_problems(report, platform)
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
        ("openvino", _openvino_line(runtimes.get("openvino", {}))),
        ("ai-edge-litert", runtimes["ai-edge-litert"]["version"] or missing),
        ("tflite-runtime", runtimes["tflite-runtime"]["version"] or missing),
        ("libedgetpu", runtimes["libedgetpu"]["library"] or "not found"),
        ("picamera2", "importable" if runtimes["picamera2"]["importable"] else missing),
        ("gstreamer (gi)", gst["version"] if gst["available"] else missing),
    ]


def _openvino_line(openvino: dict) -> str:
    if not openvino.get("version"):
        return "not installed (pip install 'ubiq[openvino]' for --backend openvino)"
    devices = ", ".join(f"{d['name']}: {d['full_name']}" for d in openvino.get("devices", []))
    return f"{openvino['version']} ({devices or openvino.get('error', 'no devices')})"


def format_report(report: dict) -> str:
    """Returns the report of :func:`collect` as a table, then the problems and their fixes."""
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
