"""What every app is: a config (:mod:`.config`) turned into a stage list per camera, the
sinks its outputs ask for, and a run over all its cameras on one shared model.

Product code starts the same way the CLI does::

    app = ubiq.App.from_yaml("counter.yaml", overrides=["cameras.0.source=0"])
    app.run(on_event=lambda event: print(event.kind, dict(event.payload)))

An app's own module subclasses :class:`App` and adds its stages (snapshots of alerts, a
blur) or its checks (a counter needs a line).

The outputs that leave the machine (``outputs.mqtt``, ``webhook``, ``clips``, ``serve``, ...)
are the flags every pipeline command has, under the same names: :func:`output_options`
turns them into those flags' values, and the same code as ``ubiq detect --mqtt ...``
(:mod:`ubiq.pipelines.outputs`) checks them and builds the sinks and the clip recorder, so a YAML
key and a flag behave alike; an error names the key (``outputs.mqtt: ...``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from ubiq.apps.config import AppConfig, CameraConfig, load_config
from ubiq.errors import ConfigError

APPS: dict[str, tuple[str, str]] = {
    "counter": ("ubiq.apps.counter:CounterApp", "counts objects crossing a line, per class"),
    "zone-alert": (
        "ubiq.apps.zone_alert:ZoneAlertApp",
        "intrusion and loitering in polygons, with a snapshot of each alert",
    ),
    "privacy-cam": (
        "ubiq.apps.privacy_cam:PrivacyCamApp",
        "blurs faces or people before anything is saved or streamed",
    ),
    "voice-control": (
        "ubiq.apps.voice_control:VoiceControlApp",
        "spoken commands take pictures and start/stop recordings",
    ),
}
"""Ready-made apps: name -> (class, one-line description)."""

APPS_DIR = Path(__file__).resolve().parent

OUTPUT_OPTIONS = (
    "mqtt",
    "mqtt_tls_ca",
    "mqtt_tls_cert",
    "mqtt_tls_key",
    "mqtt_password_file",
    "webhook",
    "webhook_secret_file",
    "webhook_batch",
    "webhook_batch_s",
    "outbox",
    "clips",
    "clip_pre",
    "clip_post",
    "clip_kinds",
    "serve",
    "token_file",
)
"""``outputs`` keys that are flags of every pipeline command (``--mqtt``, ``--clip-pre``)."""


def output_options(
    outputs, flags: argparse.Namespace | None = None
) -> tuple[argparse.Namespace, set[str]]:
    """The values of the output flags (:data:`OUTPUT_OPTIONS`): each flag given in
    ``flags`` (not ``None``), else the config's key.

    Args:
        outputs: An :class:`~ubiq.apps.config.OutputsConfig`.
        flags: Parsed flags of ``ubiq run`` (default: none; every value from the config).

    Returns:
        ``(namespace, names)``: ``flags`` (copied) with the values filled in, and the names
        whose value came from the config.
    """
    namespace = argparse.Namespace(**vars(flags)) if flags is not None else argparse.Namespace()
    from_config = set()
    for name in OUTPUT_OPTIONS:
        value = getattr(namespace, name, None)
        if value is None:
            value = getattr(outputs, name)
            if value is not None:
                from_config.add(name)
            if name == "clip_kinds" and value is not None:
                value = ",".join(value)
        setattr(namespace, name, value)
    return namespace, from_config


@contextlib.contextmanager
def config_names(names: set[str]) -> Iterator[None]:
    """Re-raises a :class:`ConfigError` that names the flag of a value taken from the
    config (``--mqtt: ...``) with the config's key instead (``outputs.mqtt: ...``)."""
    try:
        yield
    except ConfigError as error:
        message = str(error)
        for name in sorted(names, key=len, reverse=True):
            flag = "--" + name.replace("_", "-")
            message = re.sub(rf"{re.escape(flag)}(?![\w-])", f"outputs.{name}", message)
        if message == str(error):
            raise
        raise type(error)(message) from error


def app_class(name: str) -> type[App]:
    """The class of a ready-made app.

    Raises:
        ConfigError: If ``name`` is not one of :data:`APPS`.
    """
    if name not in APPS:
        raise ConfigError(f"unknown app {name!r}: ready-made apps are {', '.join(APPS)}")
    module_name, class_name = APPS[name][0].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def default_config_path(name: str) -> Path:
    """The documented YAML default shipped beside the app's module."""
    return APPS_DIR / f"{name.replace('-', '_')}.yaml"


class App:
    """An app: stages per camera built from a checked config.

    Args:
        config: The checked config.

    Raises:
        ConfigError: If the config lacks what this app needs.
    """

    name: ClassVar[str] = "app"

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.rules: dict[int, Any] = {}
        self._classifier: Any = None
        self.check()

    # --- building ---------------------------------------------------------------------

    @staticmethod
    def from_yaml(
        path: str | Path | None = None, overrides: list[str] = (), *, app: str | None = None
    ) -> App:
        """Loads an app config. The app is ``app``, else the file's ``app:`` key; a
        ready-made app starts from its shipped defaults, which the file then overrides.

        Raises:
            ConfigError: One line naming the bad key's path, or the unknown app.
        """
        name = app
        if name is None and path is not None:
            import yaml

            try:
                data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError):
                data = {}
            name = data.get("app") if isinstance(data, dict) else None
        if name is None:
            raise ConfigError(f"name the app: app: {'|'.join(APPS)} in the YAML")
        cls = app_class(name)
        base = load_config(default_config_path(name)).model_dump()
        config = load_config(path, list(overrides), base=base)
        return cls(config.model_copy(update={"app": name}))

    def check(self) -> None:
        """App-specific checks of the config (override)."""

    def load_model(self, streams: int = 1):
        """The detector every camera shares (``streams``: frames run at once, as
        ``ubiq detect --streams``)."""
        from ubiq.hardware.accelerators import parse_device
        from ubiq.models.runtime.model import DetectionModel

        config = self.config
        return DetectionModel.load(
            config.model,
            backend=config.backend,
            num_threads=config.threads,
            device=parse_device(config.device),
            confidence_threshold=config.conf,
            iou_threshold=config.iou,
            imgsz=config.imgsz,
            streams=streams,
        )

    def load_classifier(self):
        """The classifier of ``classify.model`` (loaded once, shared by every camera), or
        ``None`` when the config has none.

        Raises:
            ModelError: Naming ``classify.model``, if it is missing, corrupt or not a
                classifier.
        """
        classify = self.config.classify
        if classify is None or classify.model is None:
            return None
        if self._classifier is None:
            from ubiq.errors import ModelError
            from ubiq.models.runtime.tasks import Classifier

            try:
                self._classifier = Classifier.load(classify.model, num_threads=self.config.threads)
            except ModelError as error:
                raise ModelError(f"classify.model {classify.model}: {error}") from error
        return self._classifier

    def check_model(self, model) -> None:
        """Every class the config names must be one of the model's (or, with ``classify``,
        one of the learned classes); loads the classifier.

        Raises:
            ConfigError: Naming the class and the model's classes.
            ModelError: If ``classify.model`` names no classifier.
        """
        labels = tuple(getattr(model, "labels", ()) or ())
        classifier = self.load_classifier()
        if classifier is not None:
            classify_classes = self.config.classify.classes or []
            missing = [c for c in classify_classes if labels and c not in labels]
            if missing:
                raise ConfigError(
                    f"classify.classes: {missing[0]!r} is not a class of "
                    f"{Path(str(model.path)).name} (classes: {', '.join(labels)})"
                )
            learned = tuple(getattr(classifier, "labels", ()) or ())
            labels = labels + tuple(x for x in learned if x not in labels) if labels else ()
        wanted = list(self.config.classes or [])
        for camera in self.config.cameras:
            for zone in camera.zones:
                wanted += zone.forbidden
        missing = [c for c in wanted if labels and c not in labels]
        if missing:
            raise ConfigError(
                f"classes: {missing[0]!r} is not a class of {Path(str(model.path)).name} "
                f"{'or the classifier ' if classifier is not None else ''}"
                f"(classes: {', '.join(labels)})"
            )

    def rules_for(self, camera: CameraConfig):
        from ubiq.pipelines.rules.geometry import Line, Zone
        from ubiq.pipelines.rules.rules import Rules

        config = self.config
        lines = [
            Line(line.name, tuple(line.points[:2]), tuple(line.points[2:])) for line in camera.lines
        ]
        zones = [
            Zone(zone.name, tuple(zip(zone.points[::2], zone.points[1::2], strict=True)))
            for zone in camera.zones
        ]
        return Rules(
            lines,
            zones,
            anchor=config.anchor,
            min_frames=config.min_frames,
            classes=config.classes,
            zone_options={
                zone.name: {"dwell_s": zone.dwell_s, "forbidden": zone.forbidden}
                for zone in camera.zones
            },
            stationary_s=config.stationary_s,
            label_s=config.label_s,
            join_s=config.join_s,
        )

    def track_stage(self):
        """The app's Track stage, as its config sets it (tracker, lost buffer, class
        awareness, ``track`` settings)."""
        from ubiq.pipelines.track.stage import Track

        return Track(
            self.config.tracker,
            lost_buffer_s=self.config.lost_buffer_s,
            class_aware=self.config.class_aware,
            **self.config.track,
        )

    def stages(self, model, camera: CameraConfig, source, position: int) -> list:
        """Detect, track, classify (with ``classify.model``), rules, then
        :meth:`extra_stages`. The rules are checked against the source's frame size here,
        before any output is opened."""
        from ubiq.pipelines.stage import Detect

        rules = self.rules_for(camera)
        size = getattr(source, "frame_size", None)
        if size:
            rules.resolve(tuple(size))
        self.rules[position] = rules
        track = self.track_stage()
        classify = []
        classifier = self.load_classifier()
        if classifier is not None:
            from ubiq.pipelines.classify import ClassifyTracks

            options = self.config.classify
            classify.append(
                ClassifyTracks(
                    classifier,
                    classes=options.classes,
                    every_n_frames=options.every_n_frames,
                    settle_votes=options.settle_votes,
                    min_confidence=options.min_confidence,
                )
            )
        return [Detect(model), track, *classify, rules, *self.extra_stages(camera, position)]

    def extra_stages(self, camera: CameraConfig, position: int) -> list:
        """Stages after the rules (override)."""
        return []

    def annotators(self, position: int) -> list:
        from ubiq.pipelines.rules.draw import RulesAnnotator
        from ubiq.pipelines.sinks import BoxAnnotator
        from ubiq.pipelines.sinks.trail import TrailAnnotator

        drawn = [TrailAnnotator(), BoxAnnotator()]
        if position in self.rules:
            drawn.insert(0, RulesAnnotator(self.rules[position]))
        return drawn

    def sinks(self, source, position: int, count: int, *, jsonl=None, save=None, show=None):
        """JSONL, video and window sinks for the camera at ``position`` of ``count``."""
        from ubiq.paths import output_path
        from ubiq.pipelines.sinks import JsonlSink, VideoSink, WindowSink

        outputs = self.config.outputs
        jsonl = outputs.jsonl if jsonl is None else jsonl
        save = outputs.save if save is None else save
        show = outputs.show if show is None else show
        sinks = []
        try:
            if jsonl:
                sinks.append(JsonlSink(output_path(jsonl, position, count), relative_time=True))
            if save:
                sinks.append(
                    VideoSink(
                        output_path(save, position, count),
                        fps=getattr(source, "fps", None) or 30.0,
                        frame_size=getattr(source, "frame_size", None),
                        annotators=self.annotators(position),
                    )
                )
            if show:
                sinks.append(
                    WindowSink(
                        f"ubiq {self.name}: {source.source_id}",
                        annotators=self.annotators(position),
                    )
                )
        except BaseException:
            for sink in sinks:
                sink.close()
            raise
        return sinks

    # --- running from Python -------------------------------------------------------------

    def run(
        self,
        *,
        max_frames: int | None = None,
        on_event: Callable | None = None,
        on_result: Callable | None = None,
    ) -> list:
        """Runs every camera side by side on the shared model until the sources end (or
        ``max_frames`` each, or Ctrl-C); returns one summary per camera.

        Every output of the config is opened: files, the window, MQTT, webhooks, clips and
        the live view.

        Raises:
            ConfigError: One line naming the bad ``outputs`` key, a class or the camera.
        """
        from ubiq.hardware.sources import open_source
        from ubiq.pipelines import outputs as output_flags
        from ubiq.pipelines.pipeline import Pipeline, run_sources

        options, from_config = output_options(self.config.outputs)
        options.command = f"run {self.name}"
        with config_names(from_config):
            output_flags.check_arguments(options)
        model = self.load_model()
        self.check_model(model)
        cameras = self.config.cameras
        sources: list = []
        built: list[tuple[list, list]] = []  # (stages, sinks) per camera, closed on failure
        try:
            for camera in cameras:
                source = open_source(camera.source)
                source.open()
                sources.append(source)
            count = len(cameras)
            for position, (camera, source) in enumerate(zip(cameras, sources, strict=True)):
                stages: list = []
                sinks: list = []
                built.append((stages, sinks))
                stages += self.stages(model, camera, source, position)
                with config_names(from_config):
                    stages += output_flags.build_stages(options, source, position, count)
                    sinks += self.sinks(source, position, count)
                    sinks += output_flags.build_sinks(options, source, position, count)
        except BaseException:
            for stages, sinks in built:
                for item in (*sinks, *stages):
                    close = getattr(item, "close", None)
                    if callable(close):
                        close()
            for source in sources:
                source.close()
            raise
        pipelines = [
            Pipeline(stages, sinks, on_event=on_event, on_result=on_result)
            for stages, sinks in built
        ]
        return run_sources(
            sources, lambda source: pipelines[sources.index(source)], max_frames=max_frames
        )
