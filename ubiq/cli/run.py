"""``ubiq run APP`` (a ready-made app) and ``ubiq apps list``.

```
ubiq run counter --source clip.mp4 --model person --line 0.5,0,0.5,1 --jsonl out.jsonl
ubiq run zone-alert --config my-zones.yaml --set cameras.0.source=0
ubiq run voice-control --source 0 --audio mic
ubiq apps list
```

Flags override the app's YAML (its shipped default, then ``--config``, then ``--set``).
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    from ubiq.cli.detect import add_run_arguments, add_streams_argument

    parser = subparsers.add_parser(
        "run",
        help="run a ready-made app: counter, zone-alert, privacy-cam, voice-control",
        description="Run a ready-made app (ubiq apps list) on its YAML config; flags override "
        "the config.",
    )
    parser.add_argument("app", metavar="APP", help="the app (ubiq apps list)")
    parser.add_argument("--config", default=None, help="an app YAML (default: the app's own)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one setting by dotted path, e.g. --set cameras.0.source=0 (repeatable)",
    )
    parser.add_argument(
        "--source",
        action="append",
        default=None,
        help="replace the cameras' sources (give it once per camera)",
    )
    parser.add_argument("--model", default=None, help="zoo name or model file")
    parser.add_argument("--classes", default=None, help="comma-separated labels to count")
    parser.add_argument("--conf", type=float, default=None, help="detector confidence threshold")
    parser.add_argument(
        "--line",
        action="append",
        default=None,
        metavar="X1,Y1,X2,Y2",
        help="a counting line for every camera (pixels or frame fractions; repeatable)",
    )
    parser.add_argument(
        "--zone",
        action="append",
        default=None,
        metavar="X1,Y1,X2,Y2,X3,Y3,...",
        help="a zone for every camera (pixels or frame fractions; repeatable)",
    )
    parser.add_argument(
        "--audio",
        default=None,
        help="voice-control: mic[:N|NAME], arecord[:DEVICE] or a sound file to listen to",
    )
    parser.add_argument("--jsonl", default=None, help="write frames and events here")
    parser.add_argument("--save", default=None, help="write the annotated video here")
    parser.add_argument(
        "--show", action=argparse.BooleanOptionalAction, default=None, help="show a window"
    )
    add_streams_argument(parser)
    add_run_arguments(parser)
    parser.set_defaults(handler=run)

    apps = subparsers.add_parser("apps", help="list the ready-made apps")
    apps.add_argument("action", choices=("list",), help="list: name, what it does, its YAML")
    apps.set_defaults(handler=list_apps)


def list_apps(args: argparse.Namespace) -> int:
    from ubiq.apps.app import APPS, default_config_path

    for name, (_, description) in APPS.items():
        print(f"{name:14s} {description}  ({default_config_path(name)})")
    return 0


def _overrides(args: argparse.Namespace) -> list[str]:
    """The flags as ``--set`` assignments (applied after the YAML and ``--set``)."""
    from ubiq.errors import ConfigError

    sets = list(args.set)
    if args.model is not None:
        sets.append(f"model={args.model}")
    if args.conf is not None:
        sets.append(f"conf={args.conf}")
    if args.classes is not None:
        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        if not classes:
            raise ConfigError(f"--classes must name at least one class, got {args.classes!r}")
        sets.append(f"classes=[{', '.join(classes)}]")
    for option in ("jsonl", "save"):
        if getattr(args, option) is not None:
            sets.append(f"outputs.{option}={getattr(args, option)}")
    if args.show is not None:
        sets.append(f"outputs.show={str(args.show).lower()}")
    if args.audio is not None:
        sets.append(f"audio={json.dumps(args.audio)}")  # quoted: "-" or "0" stay text
    return sets


def _apply_shapes(app, args: argparse.Namespace) -> None:
    """``--source``, ``--line`` and ``--zone`` rewrite the cameras."""
    from ubiq.apps.config import CameraConfig, LineConfig, ZoneConfig
    from ubiq.pipelines.rules.geometry import Line, Zone

    config = app.config
    cameras = list(config.cameras)
    if args.source:
        template = cameras[0]
        cameras = [
            (cameras[i] if i < len(cameras) else template).model_copy(update={"source": source})
            for i, source in enumerate(args.source)
        ]
    if args.line:
        lines = []
        for number, text in enumerate(args.line, start=1):
            name = "line" if len(args.line) == 1 else f"line{number}"
            line = Line.parse(text, name)
            lines.append(LineConfig(name=name, points=[*line.a, *line.b]))
        cameras = [c.model_copy(update={"lines": lines}) for c in cameras]
    if args.zone:
        zones = []
        for number, text in enumerate(args.zone, start=1):
            name = "zone" if len(args.zone) == 1 else f"zone{number}"
            zone = Zone.parse(text, name)
            old = next((z for c in cameras for z in c.zones), None)
            zones.append(
                ZoneConfig(
                    name=name,
                    points=[v for point in zone.points for v in point],
                    dwell_s=old.dwell_s if old else None,
                    forbidden=old.forbidden if old else [],
                )
            )
        cameras = [c.model_copy(update={"zones": zones}) for c in cameras]
    app.config = config.model_copy(
        update={"cameras": [CameraConfig(**c.model_dump()) for c in cameras]}
    )
    app.check()


def run(args: argparse.Namespace) -> int:
    from ubiq.apps.app import App, app_class, config_names, output_options
    from ubiq.cli import detect
    from ubiq.errors import ConfigError

    if args.max_frames is not None and args.max_frames < 1:
        raise ConfigError(f"--max-frames must be >= 1, got {args.max_frames}")
    app_class(args.app)  # an unknown app is one line before anything else
    if args.audio is not None and not getattr(app_class(args.app), "uses_audio", False):
        raise ConfigError(f"--audio: {args.app} does not listen (voice-control does)")
    app = App.from_yaml(args.config, _overrides(args), app=args.app)
    _apply_shapes(app, args)
    config = app.config
    # The checks and outputs of `ubiq detect`, fed from the app's config; an output flag
    # (--mqtt, --clips, ...) wins over its outputs key, and an error names where it came from.
    namespace, from_config = output_options(config.outputs, args)
    namespace.source = [camera.source for camera in config.cameras]
    namespace.save = config.outputs.save
    namespace.jsonl = config.outputs.jsonl
    namespace.show = config.outputs.show
    namespace.save_images = None
    namespace.conf, namespace.iou = config.conf, config.iou
    namespace.threads, namespace.imgsz = config.threads, config.imgsz
    namespace.classes = ",".join(config.classes) if config.classes else None
    with config_names(from_config):
        specs = detect.check_arguments(namespace)
    model = app.load_model(streams=detect.choose_streams(namespace, specs))
    app.check_model(model)

    def sinks(source, position, count):
        from ubiq.pipelines import outputs

        made = app.sinks(source, position, count)
        try:
            with config_names(from_config):
                made += outputs.build_sinks(namespace, source, position, count)
        except BaseException:
            for sink in made:
                sink.close()
            raise
        return made

    cameras = config.cameras
    return detect.run_pipeline(
        namespace,
        f"run {app.name}",
        specs,
        model,
        lambda source, position: app.stages(model, cameras[position], source, position),
        sinks,
        outputs=(config.outputs.save, config.outputs.jsonl),
        describe=model.manifest.name
        if model.backend is None  # voice-control with model: none
        else f"{model.manifest.name} ({detect._device_text(model.backend)})",
    )
