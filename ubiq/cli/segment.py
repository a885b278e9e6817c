"""``ubiq segment``: run a segmentation model on a video source, and blur what it finds."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_MODEL = "selfie-seg"
FACE_MODEL = "blazeface"


def add_parser(subparsers) -> None:
    from ubiq.models.runtime.backend import BACKENDS

    # Segmenter's INTERPOLATIONS, written out: importing it would import OpenCV before
    # quiet_native_logs() configures it (tests/test_cli.py checks they agree).
    interpolations = ("nearest", "linear")

    parser = subparsers.add_parser(
        "segment",
        help="run a segmentation model (semantic, person or instance masks) on a source",
        description="Run a segmentation model on a video source and write a colour overlay "
        "video, one label PNG per frame, JSONL with each class's pixel fraction, or blur the "
        "background, a class or faces.",
    )
    parser.add_argument(
        "--source",
        action="append",
        default=None,
        help="demo, a camera index or /dev/videoN, a file, folder, glob or rtsp/http URL "
        "(default: demo); give it several times to run one pipeline per source (outputs "
        "then get -1, -2, ... before their suffix)",
    )
    parser.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"zoo name or model file (.onnx, .tflite) (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "--blur",
        default=None,
        metavar="WHAT",
        help="blur the background, a class of the model (person, cat, ...) or faces (found "
        f"by {FACE_MODEL}) in every output",
    )
    parser.add_argument(
        "--interpolation",
        choices=interpolations,
        default="nearest",
        help="how masks reach frame size: nearest (fast) or linear (smoother edges)",
    )
    parser.add_argument("--conf", type=float, default=0.25, help="instance confidence threshold")
    parser.add_argument("--iou", type=float, default=0.45, help="instance NMS IoU threshold")
    parser.add_argument(
        "--backend",
        choices=tuple(BACKENDS),
        default=None,
        help="inference backend (default: by model file type)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda, tensorrt, openvino (ONNX models) or coral[:usb|pci] (Edge TPU "
        ".tflite models) (default: auto)",
    )
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    from ubiq.cli.detect import add_run_arguments, add_streams_argument

    add_streams_argument(parser)
    parser.add_argument(
        "--save", default=None, help="write the colour overlay (or blurred) video here (.mp4)"
    )
    parser.add_argument(
        "--masks",
        default=None,
        metavar="DIR",
        help="write one PNG per frame into DIR: pixel value = class id, with a palette",
    )
    parser.add_argument(
        "--jsonl",
        default=None,
        help="write one JSON line per frame here: each class's pixel fraction (and each "
        "instance's box, class, score and RLE mask for instance models)",
    )
    parser.add_argument(
        "--show",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="show a live window (needs a display)",
    )
    add_run_arguments(parser)
    # What ``ubiq detect``'s shared checks read and this command does not set.
    parser.set_defaults(handler=run, imgsz=None, classes=None, save_images=None)


def check_arguments(args: argparse.Namespace) -> list[str]:
    """Validates every argument before anything is loaded, opened or written.

    Returns:
        The source specs.

    Raises:
        ConfigError: Naming the flag and the bad value.
    """
    from ubiq.cli.detect import check_arguments as check_shared
    from ubiq.errors import ConfigError
    from ubiq.paths import output_path

    sources = check_shared(args)
    if args.blur is not None and not args.blur.strip():
        raise ConfigError("--blur must name background, faces or a class, got ''")
    if not args.masks:
        return sources
    for position, spec in enumerate(sources):
        value = output_path(args.masks, position, len(sources))
        path = Path(value).expanduser()
        source = Path(spec).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--masks: {value} is a file, not a folder")
        folder = source if source.is_dir() else source.parent
        if folder.exists() and path.exists() and path.resolve() == folder.resolve():
            raise ConfigError(
                f"--masks {value} is the folder the images come from; choose another folder"
            )
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None or not existing.is_dir():
            raise ConfigError(f"--masks: cannot create {value}: {existing} is not a folder")
        import os

        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"--masks: cannot create {value}: {existing} is not writable")
    return sources


def build_sinks(args: argparse.Namespace, source, position: int, count: int) -> list:
    """The sinks the flags ask for, for source ``position`` of ``count``.

    Raises:
        ConfigError: Naming the flag, if an output cannot be created.
    """
    from ubiq.cli.detect import flag
    from ubiq.errors import ConfigError
    from ubiq.paths import output_path
    from ubiq.pipelines import outputs
    from ubiq.pipelines.sinks import BoxAnnotator, MaskAnnotator, VideoSink, WindowSink
    from ubiq.pipelines.sinks.masks import MaskSink, SegmentJsonlSink

    # A blurred frame is the picture; an overlay would show what the blur hides.
    annotators = [] if args.blur else [MaskAnnotator(), BoxAnnotator()]
    sinks = []
    try:
        for option, make in (
            ("jsonl", lambda path: SegmentJsonlSink(path, relative_time=True)),
            (
                "save",
                lambda path: VideoSink(
                    path,
                    fps=(source.fps or 30.0) / args.vid_stride,
                    frame_size=source.frame_size,
                    annotators=annotators,
                ),
            ),
            ("masks", MaskSink),
        ):
            value = getattr(args, option)
            if value:
                try:
                    sinks.append(make(output_path(value, position, count)))
                except ConfigError as error:
                    raise ConfigError(f"{flag(option)}: {error}") from error
        sinks += outputs.build_sinks(args, source, position, count)
        if args.show:
            try:
                sinks.append(WindowSink(f"ubiq segment: {source.source_id}", annotators=annotators))
            except ConfigError as error:
                raise ConfigError(f"--show: {error}") from error
    except ConfigError:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def _blur_stage(args: argparse.Namespace, model):
    """The ``Blur`` stage ``--blur`` asks for (``None`` without it).

    Raises:
        ConfigError: Naming ``--blur`` if the class is not one of the model's.
    """
    from ubiq.errors import ConfigError
    from ubiq.pipelines.segment import Blur

    if args.blur is None:
        return None
    target = args.blur.strip()
    detector = None
    if target == "faces":
        from ubiq.models.runtime.model import DetectionModel

        detector = DetectionModel.load(FACE_MODEL, num_threads=args.threads)
    labels = tuple(model.labels)
    is_class = target in labels or (target.isdigit() and int(target) < len(labels))
    if target not in ("background", "faces") and not is_class:
        raise ConfigError(
            f"--blur {target!r} is not a class of {model.path.name} (classes: "
            f"{', '.join(labels)}); give background, faces or one of them"
        )
    return Blur(target, labels=labels, detector=detector)


def run(args: argparse.Namespace) -> int:
    import cv2

    from ubiq.cli.detect import _device_text, choose_streams, run_pipeline
    from ubiq.hardware.accelerators import parse_device
    from ubiq.models.runtime.segment import Segmenter
    from ubiq.pipelines.segment import Segment

    cv2.setNumThreads(1)  # as in ubiq detect: OpenCV's pool only fights the runtime
    specs = check_arguments(args)
    model = Segmenter.load(
        args.model,
        backend=args.backend,
        num_threads=args.threads,
        device=parse_device(args.device),
        interpolation=args.interpolation,
        confidence_threshold=args.conf,
        iou_threshold=args.iou,
        streams=choose_streams(args, specs),
    )
    blur = _blur_stage(args, model)
    return run_pipeline(
        args,
        "segment",
        specs,
        model,
        lambda source, position: [Segment(model)] + ([blur] if blur is not None else []),
        lambda source, position, count: build_sinks(args, source, position, count),
        outputs=(args.save, args.masks, args.jsonl),
        describe=f"{model.manifest.name} ({model.decoder}; {_device_text(model.backend)})",
    )
