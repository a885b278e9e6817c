"""``ubiq track``: detection plus multi-object tracking, or tracking of MOTChallenge
public detections (``--detections det.txt --out result.txt``)."""

from __future__ import annotations

import argparse
import sys

from ubiq.cli import detect
from ubiq.cli.detect import add_pipeline_arguments


def add_parser(subparsers) -> None:
    from ubiq.pipelines.track import TRACKERS

    parser = subparsers.add_parser(
        "track",
        help="detect and track objects (ids, trails, track events), or track MOTChallenge "
        "detections",
        description="Detect and track objects on a video source: every output of ubiq detect, "
        "with a track id per box, trails on the video and track.start/track.end events in "
        "the JSONL. With --detections, track a MOTChallenge det.txt into a result file.",
    )
    add_pipeline_arguments(parser, conf=0.1)
    parser.add_argument(
        "--tracker",
        choices=TRACKERS,
        default="bytetrack",
        help="bytetrack: two-stage association with OC-SORT recovery (default); sort: one "
        "association of confident boxes",
    )
    parser.add_argument(
        "--camera-motion",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="compensate a moving camera's motion (sparse optical flow; default: no)",
    )
    parser.add_argument(
        "--lost-buffer",
        type=float,
        default=None,
        metavar="SECONDS",
        help="keep a lost track this long for re-identification (default: 1.0)",
    )
    parser.add_argument(
        "--detections",
        default=None,
        metavar="DET_TXT",
        help="public-detection mode: a MOTChallenge detection file (frame,-1,x,y,w,h,score,...)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="RESULT_TXT",
        help="public-detection mode: write MOTChallenge results here (frame,id,x,y,w,h,score,...)",
    )
    parser.add_argument(
        "--fps", type=float, default=30.0, help="public-detection mode: frame rate (default: 30)"
    )
    parser.add_argument(
        "--classify",
        default=None,
        metavar="OUT",
        help="label each track with a learned classifier's classes (a ubiq learn --out "
        "folder, or any classify model), voting over the track's crops; tracks it does not "
        "know keep the detector's label",
    )
    parser.add_argument(
        "--classify-classes",
        default=None,
        metavar="A,B",
        help="with --classify: classify only tracks of these detector classes, e.g. cat "
        "(default: all)",
    )
    parser.set_defaults(handler=run)


def _settings(args: argparse.Namespace) -> dict:
    from ubiq.errors import ConfigError

    settings: dict = {"camera_motion": args.camera_motion}
    if args.lost_buffer is not None:
        if args.lost_buffer < 0:
            raise ConfigError(f"--lost-buffer must be >= 0 seconds, got {args.lost_buffer}")
        settings["lost_buffer_s"] = args.lost_buffer
    return settings


def _classify_classes(args: argparse.Namespace) -> list[str] | None:
    from ubiq.errors import ConfigError

    if args.classify_classes is None:
        return None
    if args.classify is None:
        raise ConfigError("--classify-classes needs --classify (the learned classifier)")
    classes = [c.strip() for c in args.classify_classes.split(",") if c.strip()]
    if not classes:
        raise ConfigError(
            f"--classify-classes must name at least one class, got {args.classify_classes!r}"
        )
    return classes


def load_classifier(spec: str, *, option: str = "--classify", threads: int | None = None):
    """Opens the classifier of ``--classify`` (a ``ubiq learn`` folder or a classify model).

    Raises:
        ModelError: Naming the flag, if ``spec`` is missing, corrupt or not a classifier.
    """
    from ubiq.errors import ModelError
    from ubiq.models.runtime.tasks import Classifier

    try:
        return Classifier.load(spec, num_threads=threads)
    except ModelError as error:
        raise ModelError(f"{option} {spec}: {error}") from error


def check_classify_classes(classes: list[str] | None, model, option: str) -> None:
    """Every class named must be one of the detector's.

    Raises:
        ConfigError: Naming the flag, the class and the detector's classes.
    """
    from pathlib import Path

    from ubiq.errors import ConfigError

    labels = tuple(getattr(model, "labels", ()) or ())
    missing = [c for c in classes or () if labels and c not in labels]
    if missing:
        raise ConfigError(
            f"{option}: {missing[0]!r} is not a class of {Path(str(model.path)).name} "
            f"(classes: {', '.join(labels)})"
        )


def run(args: argparse.Namespace) -> int:

    settings = _settings(args)
    if args.detections is not None or args.out is not None:
        if args.classify is not None:
            from ubiq.errors import ConfigError

            raise ConfigError("--classify needs frames: it does not apply to --detections")
        return run_public(args, settings)
    from ubiq.pipelines.track.stage import Track

    Track(args.tracker, **settings)  # a bad setting fails before the model loads
    classify_classes = _classify_classes(args)
    if args.classify is None:
        return detect.run(args, "track", lambda model: [Track(args.tracker, **settings)])
    detect.check_arguments(args)  # bad flags before the classifier loads
    classifier = load_classifier(args.classify, threads=args.threads)

    def stages(model) -> list:
        from ubiq.pipelines.classify import ClassifyTracks

        check_classify_classes(classify_classes, model, "--classify-classes")
        return [
            Track(args.tracker, **settings),
            ClassifyTracks(classifier, classes=classify_classes),
        ]

    return detect.run(args, "track", stages)


def run_public(args: argparse.Namespace, settings: dict) -> int:
    """Tracks a MOTChallenge detection file into a result file."""
    from pathlib import Path

    from ubiq.errors import ConfigError
    from ubiq.pipelines.track.evaluate import track_frames
    from ubiq.pipelines.track.mot import read_detections, write_atomically
    from ubiq.pipelines.track.tracker import TrackerConfig

    if args.detections is None:
        raise ConfigError("--out needs --detections (a MOTChallenge det.txt to track)")
    if args.out is None:
        raise ConfigError("--detections needs --out (where to write the MOTChallenge results)")
    if args.source:
        raise ConfigError("--detections replaces --source: give one or the other")
    if not args.fps > 0:
        raise ConfigError(f"--fps must be > 0, got {args.fps}")
    if settings["camera_motion"]:
        raise ConfigError("--camera-motion needs frames: it does not apply to --detections")
    out = Path(args.out)
    detections = Path(args.detections)
    if out.exists() and detections.exists() and out.resolve() == detections.resolve():
        raise ConfigError(f"--out {args.out} is the detections file itself; choose another")
    if out.is_dir():
        raise ConfigError(f"--out {args.out} is a folder, not a file")
    try:
        config = TrackerConfig.preset(args.tracker, **settings)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    frames = read_detections(detections)
    lines, times = track_frames(frames, config, fps=args.fps)
    write_atomically(out, lines)
    ids = {line.split(",", 2)[1] for line in lines}
    mean_ms = sum(times) / len(times)
    print(
        f"ubiq track: {len(frames)} frames, {sum(len(f.scores) for f in frames)} detections -> "
        f"{len(ids)} tracks, {len(lines)} boxes, {mean_ms:.3f} ms/frame; wrote {out}",
        file=sys.stderr,
    )
    return 0
