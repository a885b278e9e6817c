"""``ubiq detect``: run a detection model on a video source."""

from __future__ import annotations

import argparse
import json
import sys

from ubiq.errors import SourceError

DEFAULT_MODEL = "blazeface"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="run a detection model on a camera, file, folder, URL or the demo clip",
        description="Run a detection model on a video source and write annotated video, "
        "JSONL and a summary.",
    )
    parser.add_argument(
        "--source",
        default="demo",
        help="demo, a camera index or /dev/videoN, a file, folder, glob or "
        "rtsp/http URL (default: demo)",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"zoo name or model file (.onnx, .tflite) (default: {DEFAULT_MODEL})",
    )
    parser.add_argument("--conf", type=float, default=0.25, help="confidence threshold")
    parser.add_argument("--iou", type=float, default=0.45, help="NMS IoU threshold")
    parser.add_argument(
        "--classes",
        default=None,
        help="comma-separated class names or ids to keep, e.g. person,car",
    )
    parser.add_argument(
        "--imgsz", type=int, default=None, help="input size for models with a dynamic input"
    )
    parser.add_argument(
        "--backend",
        choices=("onnxruntime", "litert"),
        default=None,
        help="inference backend (default: by model file type)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda, tensorrt, openvino (ONNX models) or "
        "coral[:usb|usb:N|pci|pci:N] (Edge TPU .tflite models) (default: auto, which says "
        "what it chose and why)",
    )
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    parser.add_argument("--save", default=None, help="write annotated video here (.mp4, .avi)")
    parser.add_argument("--jsonl", default=None, help="write one JSON line per frame here")
    parser.add_argument(
        "--show",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="show a live window (needs a display)",
    )
    parser.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    parser.add_argument(
        "--reconnect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="reopen a dropped camera or stream (default: yes, except a gst: pipeline that "
        "ends by itself, such as filesrc or num-buffers=N, which plays once)",
    )
    parser.add_argument(
        "--vid-stride", type=int, default=1, help="process every Nth frame of a file"
    )
    parser.add_argument(
        "--summary-json", default=None, help="also write the run summary as JSON here"
    )
    parser.set_defaults(handler=run)


def _check_output_paths(args: argparse.Namespace) -> None:
    """Fails before any work when an output could not be written or would clobber the input.

    Raises:
        ConfigError: Naming the option and the path.
    """
    from pathlib import Path

    from ubiq.errors import ConfigError

    source = Path(args.source).expanduser()
    for option in ("save", "jsonl", "summary_json"):
        value = getattr(args, option)
        if not value:
            continue
        path = Path(value).expanduser()
        flag = "--" + option.replace("_", "-")
        if source.exists() and path.exists() and path.resolve() == source.resolve():
            raise ConfigError(f"{flag} {value} is the source itself; choose another file")
        parent = path.parent if str(path.parent) else Path(".")
        existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
        if existing is None or not existing.is_dir():
            raise ConfigError(f"{flag}: cannot create {value}: {existing} is not a folder")


def _device_text(backend) -> str:
    """``litert, cpu`` or, after ``--device auto``, ``onnxruntime, device auto: cpu (...)``."""
    reason = getattr(backend, "fallback_reason", None) or getattr(backend, "device_reason", "")
    return f"{backend.name}, {reason or getattr(backend, 'device', 'cpu')}"


def _open_interruptibly(source) -> bool:
    """Opens ``source``; a SIGINT or SIGTERM meanwhile closes it cleanly instead of killing
    the process mid-open (which can leave a camera daemon such as nvargus wedged).

    A camera blocked in its first read notices the signal when that read returns (at most
    its read timeout).

    Returns:
        ``False`` when a signal arrived (the source is closed again), else ``True``.

    Raises:
        SourceError: If the source cannot be opened and no signal arrived.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        source.open()
        return True
    received: list[int] = []

    def handle(signum, _frame) -> None:
        received.append(signum)
        source.stop()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        source.open()
    except SourceError:
        if not received:
            raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        source.close()
        return False
    return True


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import cv2

    from ubiq.errors import ConfigError
    from ubiq.hardware.accelerators import parse_device
    from ubiq.hardware.health import HealthMonitor
    from ubiq.hardware.sources import open_source
    from ubiq.models.runtime.model import DetectionModel
    from ubiq.pipelines.detect import DetectPipeline
    from ubiq.pipelines.runner import Runner
    from ubiq.pipelines.sinks import JsonlSink, VideoSink, WindowSink

    # OpenCV's own thread pool (resize, colour conversion of one small frame) only fights
    # the inference runtime for the cores; one thread is faster end to end.
    cv2.setNumThreads(1)
    if args.vid_stride < 1:
        raise ConfigError(f"--vid-stride must be >= 1, got {args.vid_stride}")
    classes = None
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        if not classes:
            raise ConfigError(f"--classes must name at least one class, got {args.classes!r}")
    _check_output_paths(args)
    device = parse_device(args.device)
    model = DetectionModel.load(
        args.model,
        backend=args.backend,
        num_threads=args.threads,
        device=device,
        confidence_threshold=args.conf,
        iou_threshold=args.iou,
        classes=classes,
        imgsz=args.imgsz,
    )
    source = open_source(args.source, vid_stride=args.vid_stride, reconnect=args.reconnect)
    sinks = []
    # Open the source before any output file: a camera or URL that fails must not
    # truncate a JSONL or video that is already there.
    if not _open_interruptibly(source):
        print(f"ubiq detect: stopped by signal while opening {source.source_id}", file=sys.stderr)
        return 0
    try:
        if args.jsonl:
            sinks.append(JsonlSink(args.jsonl, relative_time=True))
        if args.save:
            sinks.append(
                VideoSink(
                    args.save,
                    fps=(source.fps or 30.0) / args.vid_stride,
                    frame_size=source.frame_size,
                )
            )
        if args.show:
            sinks.append(WindowSink(f"ubiq detect: {source.source_id}"))
    except ConfigError:
        for sink in sinks:
            sink.close()
        source.close()
        raise
    # Temperature and throttling, sampled every few seconds (a Pi that throttles runs slower).
    summary = Runner(
        source, DetectPipeline(model), sinks, max_frames=args.max_frames, health=HealthMonitor()
    ).run()
    outputs = [p for p in (args.save, args.jsonl) if p]
    print(
        f"ubiq detect: {model.manifest.name} ({_device_text(model.backend)}) "
        f"on {source.source_id}: "
        f"{summary.line()}" + (f"; wrote {', '.join(outputs)}" if outputs else ""),
        file=sys.stderr,
    )
    if args.summary_json:
        data = summary.to_dict() | {"model": str(model.path), "source": source.source_id}
        try:
            Path(args.summary_json).expanduser().parent.mkdir(parents=True, exist_ok=True)
            with open(args.summary_json, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2)
        except OSError as error:
            raise ConfigError(
                f"--summary-json: cannot write {args.summary_json}: {error.strerror}"
            ) from error
    if summary.frames == 0 and summary.stopped_by == "end":
        print("ubiq detect: error: the source gave no frames", file=sys.stderr)
        return 3
    return 0
