"""``ubiq detect``: run a detection model on a video source."""

from __future__ import annotations

import argparse
import json
import sys

from ubiq.errors import SourceError
from ubiq.paths import output_path

DEFAULT_MODEL = "blazeface"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="run a detection model on a camera, file, folder, URL or the demo clip",
        description="Run a detection model on a video source and write annotated video, "
        "JSONL and a summary.",
    )
    add_pipeline_arguments(parser)
    parser.set_defaults(handler=run)


def add_pipeline_arguments(parser: argparse.ArgumentParser, *, conf: float = 0.25) -> None:
    """The flags every video pipeline command shares (``detect``, ``track``, ...)."""
    from ubiq.models.runtime.backend import BACKENDS

    parser.add_argument(
        "--source",
        action="append",
        default=None,
        help="demo, a camera index or /dev/videoN, a file, folder, glob or "
        "rtsp/http URL (default: demo); give it several times to run one pipeline per "
        "source side by side with the model loaded once (outputs then get -1, -2, ... "
        "before their suffix)",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"zoo name or model file (.onnx, .tflite, .xml) (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--conf", type=float, default=conf, help=f"confidence threshold (default: {conf})"
    )
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
        choices=tuple(BACKENDS),
        default=None,
        help="inference backend (default: by model file type)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda, tensorrt, openvino (onnxruntime's provider; ONNX models), "
        "openvino:CPU|GPU|NPU|AUTO[:bf16|f16|f32] (the openvino backend; ONNX or .xml IR) or "
        "coral[:usb|usb:N|pci|pci:N] (Edge TPU .tflite models) (default: auto, which says "
        "what it chose and why)",
    )
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    add_streams_argument(parser)
    parser.add_argument("--save", default=None, help="write annotated video here (.mp4, .avi)")
    parser.add_argument(
        "--save-images",
        default=None,
        metavar="DIR",
        help="write each annotated frame as an image into DIR (images keep their file name)",
    )
    parser.add_argument("--jsonl", default=None, help="write one JSON line per frame here")
    parser.add_argument(
        "--show",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="show a live window (needs a display)",
    )
    add_run_arguments(parser)


def add_streams_argument(parser: argparse.ArgumentParser) -> None:
    """``--streams N``: frames inferred at once (the commands that load one model)."""
    parser.add_argument(
        "--streams",
        type=int,
        default=None,
        metavar="N",
        help="frames inferred at once, each on its own thread (default: for files and "
        "folders without --threads, one per core up to 4, each with one thread; for cameras "
        "and streams 1, so a frame never waits behind older ones)",
    )


def choose_streams(args: argparse.Namespace, specs: list[str]) -> int:
    """The ``streams`` to load the model with: ``--streams``; else, without ``--threads``,
    one per core when every source is a file or folder, one per camera for several cameras
    (each pipeline's thread then runs its own frame on its own core); else 1."""
    from ubiq.errors import UbiqError
    from ubiq.hardware.sources import open_source
    from ubiq.models.runtime.backend import choose_streams as choose

    if args.streams is not None:
        return args.streams
    try:  # unopened sources only say what they are; opening them comes later
        all_files = not any(open_source(spec, vid_stride=args.vid_stride).is_live for spec in specs)
    except UbiqError:  # the real open reports it, before any output is written
        all_files = False
    return choose(all_files, args.threads, None, sources=len(specs))


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """How a run goes and what it reports, shared by every video command (``detect``,
    ``track``, ``segment``, ``run APP``), then the outputs that leave the machine."""
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
    parser.add_argument(
        "--stages",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="print each stage's p50/p90 time before the summary line (default: yes)",
    )
    from ubiq.pipelines import outputs

    outputs.add_arguments(parser)


_OUTPUTS = ("save", "save_images", "jsonl", "summary_json")


def flag(option: str) -> str:
    """``save_images`` -> ``--save-images``."""
    return "--" + option.replace("_", "-")


def check_arguments(args: argparse.Namespace) -> list[str]:
    """Validates every argument before anything is loaded, opened or written.

    Returns:
        The source specs.

    Raises:
        ConfigError: Naming the flag and the bad value.
    """
    from pathlib import Path

    from ubiq.errors import ConfigError
    from ubiq.pipelines import outputs
    from ubiq.pipelines.sinks import check_video_path

    sources = args.source or ["demo"]
    outputs.check_arguments(args)
    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
    if args.vid_stride < 1:
        raise ConfigError(f"--vid-stride must be >= 1, got {args.vid_stride}")
    for name in ("conf", "iou"):
        value = getattr(args, name)
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"--{name} must be between 0 and 1, got {value}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if getattr(args, "streams", None) is not None and args.streams < 1:
        raise ConfigError(f"--streams must be >= 1, got {args.streams}")
    if args.imgsz is not None and args.imgsz < 1:
        raise ConfigError(
            f"--imgsz must be a positive multiple of the model's stride, got {args.imgsz}"
        )
    if args.classes is not None and not [c for c in args.classes.split(",") if c.strip()]:
        raise ConfigError(f"--classes must name at least one class, got {args.classes!r}")
    if len(set(sources)) != len(sources):
        raise ConfigError(f"--source names the same source twice: {sources}")
    if args.save:
        try:
            check_video_path(args.save)
        except ConfigError as error:
            raise ConfigError(f"--save: {error}") from error
    for position, spec in enumerate(sources):
        source = Path(spec).expanduser()
        for option in _OUTPUTS:
            value = getattr(args, option)
            if not value:
                continue
            value = output_path(value, position, len(sources))
            path = Path(value).expanduser()
            if source.exists() and path.exists() and path.resolve() == source.resolve():
                raise ConfigError(f"{flag(option)} {value} is the source itself; choose another")
            if option == "save_images":
                if path.exists() and not path.is_dir():
                    raise ConfigError(f"--save-images: {value} is a file, not a folder")
                # A folder source, or the folder of an image file or a glob pattern.
                folder = source if source.is_dir() else source.parent
                if folder.exists() and path.exists() and path.resolve() == folder.resolve():
                    raise ConfigError(
                        f"--save-images {value} is the folder the images come from; "
                        "choose another folder so no source image is overwritten"
                    )
                parent = path
            else:
                parent = path.parent if str(path.parent) else Path(".")
            existing = next((p for p in (parent, *parent.parents) if p.exists()), None)
            if existing is None or not existing.is_dir():
                raise ConfigError(
                    f"{flag(option)}: cannot create {value}: {existing} is not a folder"
                )
    return sources


def _device_text(backend) -> str:
    """``litert, cpu`` or, after ``--device auto``, ``onnxruntime, device auto: cpu (...)``."""
    reason = getattr(backend, "fallback_reason", None) or getattr(backend, "device_reason", "")
    streams = getattr(backend, "streams", 1)
    many = f", {streams} frames at once" if isinstance(streams, int) and streams > 1 else ""
    return f"{backend.name}, {reason or getattr(backend, 'device', 'cpu')}{many}"


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


def build_sinks(args: argparse.Namespace, source, position: int, count: int) -> list:
    """The sinks the flags ask for, for source ``position`` of ``count``.

    Raises:
        ConfigError: Naming the flag, if an output cannot be created.
    """
    from ubiq.errors import ConfigError
    from ubiq.pipelines import outputs
    from ubiq.pipelines.sinks import ImageSink, JsonlSink, VideoSink, WindowSink

    sinks = []
    try:
        # Outputs that leave the machine first: their outbox holds an event before the
        # JSONL does, so a crash between the two never leaves an event only in the JSONL.
        sinks += outputs.build_sinks(args, source, position, count)
        for option, make in (
            ("jsonl", lambda path: JsonlSink(path, relative_time=True)),
            (
                "save",
                lambda path: VideoSink(
                    path, fps=(source.fps or 30.0) / args.vid_stride, frame_size=source.frame_size
                ),
            ),
            ("save_images", ImageSink),
        ):
            value = getattr(args, option)
            if value:
                try:
                    sinks.append(make(output_path(value, position, count)))
                except ConfigError as error:
                    raise ConfigError(f"{flag(option)}: {error}") from error
        if args.show:
            try:
                command = getattr(args, "command", None) or "detect"
                sinks.append(WindowSink(f"ubiq {command}: {source.source_id}"))
            except ConfigError as error:
                raise ConfigError(f"--show: {error}") from error
    except ConfigError:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def write_summary_json(path: str, data) -> None:
    """Writes the summary (a dict, or a list of them for several sources) as JSON.

    Raises:
        ConfigError: Naming ``--summary-json`` if the file cannot be written.
    """
    from pathlib import Path

    from ubiq.errors import ConfigError

    try:
        Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2)
    except OSError as error:
        raise ConfigError(f"--summary-json: cannot write {path}: {error.strerror}") from error


def run(args: argparse.Namespace, command: str = "detect", stages=lambda model: []) -> int:
    """``ubiq detect`` (and ``ubiq track``): ``[Detect(model), *stages(model)]`` per source.

    Args:
        args: The parsed flags of :func:`add_pipeline_arguments`.
        command: The command's name, for messages.
        stages: ``model -> list of stages`` run after detection, once per source.
    """
    import cv2

    from ubiq.hardware.accelerators import parse_device
    from ubiq.models.runtime.model import DetectionModel
    from ubiq.pipelines.stage import Detect

    # OpenCV's own thread pool (resize, colour conversion of one small frame) only fights
    # the inference runtime for the cores; one thread is faster end to end.
    cv2.setNumThreads(1)
    specs = check_arguments(args)
    classes = None
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    model = DetectionModel.load(
        args.model,
        backend=args.backend,
        num_threads=args.threads,
        device=parse_device(args.device),
        confidence_threshold=args.conf,
        iou_threshold=args.iou,
        classes=classes,
        imgsz=args.imgsz,
        streams=choose_streams(args, specs),
    )
    return run_pipeline(
        args,
        command,
        specs,
        model,
        lambda source, position: [Detect(model), *stages(model)],
        lambda source, position, count: build_sinks(args, source, position, count),
        outputs=(args.save, args.save_images, args.jsonl),
        describe=f"{model.manifest.name} ({_device_text(model.backend)})",
    )


def run_pipeline(
    args: argparse.Namespace,
    command: str,
    specs: list[str],
    model,
    stages,
    sinks,
    *,
    outputs: tuple,
    describe: str,
) -> int:
    """Opens every source, builds one pipeline per source, runs them side by side and
    prints each stage line and summary line; what every video command shares.

    Args:
        args: Parsed flags (``vid_stride``, ``reconnect``, ``max_frames``, ``stages``,
            ``summary_json``).
        command: The command's name, for messages (``detect``, ``track``, ``segment``).
        specs: The checked source specs.
        model: The loaded model (its path goes into the summary JSON).
        stages: ``(source, position) -> list of stages`` for the open source at ``position``
            (it may check its settings against the source, such as its frame size).
        sinks: ``(source, position, count) -> list of sinks``.
        outputs: The output flags' values (``None`` when not given), for the summary line.
        describe: The model and device, for the summary line.
    """
    from ubiq.hardware.health import HealthMonitor
    from ubiq.hardware.sources import open_source
    from ubiq.pipelines import outputs as output_flags
    from ubiq.pipelines.pipeline import Pipeline, run_sources

    # Open every source before any output file: a camera or URL that fails must not
    # truncate a JSONL or video that is already there.
    sources, pipelines = [], []

    def close_all() -> None:
        for pipeline in pipelines:
            for sink in pipeline.sinks:
                sink.close()
        for source in sources:
            source.close()

    try:
        for spec in specs:
            source = open_source(spec, vid_stride=args.vid_stride, reconnect=args.reconnect)
            if not _open_interruptibly(source):
                close_all()
                message = f"stopped by signal while opening {source.source_id}"
                print(f"ubiq {command}: {message}", file=sys.stderr)
                return 0
            sources.append(source)
        for position, source in enumerate(sources):
            stage_list = [
                *stages(source, position),
                *output_flags.build_stages(args, source, position, len(sources)),
            ]
            try:
                made = sinks(source, position, len(sources))
            except BaseException:
                for stage in stage_list:
                    close = getattr(stage, "close", None)
                    if callable(close):
                        close()
                raise
            pipelines.append(Pipeline(stage_list, made))
    except BaseException:  # close what is open, then report the error
        close_all()
        raise
    # Temperature and throttling, sampled every few seconds (a Pi that throttles runs slower).
    summaries = run_sources(
        sources,
        lambda source: pipelines[sources.index(source)],
        max_frames=args.max_frames,
        health=HealthMonitor(),
    )
    records = []
    for position, (source, summary) in enumerate(zip(sources, summaries, strict=True)):
        written = [output_path(value, position, len(sources)) for value in outputs if value]
        if args.stages and summary.frames:
            print(
                f"ubiq {command}: {source.source_id}: stages p50/p90: {summary.stages_line()}",
                file=sys.stderr,
            )
        print(
            f"ubiq {command}: {describe} on {source.source_id}: {summary.line()}"
            + (f"; wrote {', '.join(written)}" if written else ""),
            file=sys.stderr,
        )
        records.append(summary.to_dict() | {"model": str(model.path), "source": source.source_id})
    if args.summary_json:
        write_summary_json(args.summary_json, records[0] if len(records) == 1 else records)
    if any(s.frames == 0 and s.stopped_by == "end" for s in summaries):
        print(f"ubiq {command}: error: the source gave no frames", file=sys.stderr)
        return 3
    return 0
