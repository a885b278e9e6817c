"""The YAML schema every app shares, checked with pydantic (a typo names its path).

```yaml
model: person              # zoo name or model file
classes: [person]          # labels the rules count (null: all)
conf: 0.1                  # detector threshold: the tracker keeps low-score boxes
tracker: bytetrack
anchor: bottom             # center | bottom: the point of a box the rules test
min_frames: 3              # frames on the new side before a crossing/entry counts
classify: {model: my-pets, classes: [cat]}   # learned labels on tracks (ubiq learn --out)
outputs: {jsonl: runs/counter/events.jsonl, save: runs/counter/counter.mp4,
          mqtt: mqtt://broker.local/ubiq/door, webhook: https://hooks.example/ubiq,
          clips: runs/counter/clips, serve: 8080}
cameras:
  - source: demo
    lines: [{name: door, points: [0.5, 0.0, 0.5, 1.0]}]     # pixels or frame fractions
    zones: [{name: yard, points: [0.1, 0.5, 0.9, 0.5, 0.9, 0.95, 0.1, 0.95], dwell_s: 10}]
```

``--set key=value`` edits a loaded config by dotted path before it is checked
(``--set cameras.0.source=clip.mp4``, ``--set conf=0.2``); the value is read as YAML.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ubiq.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LineConfig(_Strict):
    name: str = "line"
    points: list[float] = Field(description="X1, Y1, X2, Y2 in pixels or frame fractions")

    @field_validator("points")
    @classmethod
    def _four(cls, value: list[float]) -> list[float]:
        if len(value) != 4:
            raise ValueError(f"a line needs X1,Y1,X2,Y2 (4 numbers), got {len(value)}")
        return value


class ZoneConfig(_Strict):
    name: str = "zone"
    points: list[float] = Field(description="X1, Y1, X2, Y2, X3, Y3, ... (3 points or more)")
    dwell_s: float | None = Field(None, gt=0, description="seconds inside that make zone.dwell")
    forbidden: list[str] = Field(default_factory=list, description="labels that intrude")

    @field_validator("points")
    @classmethod
    def _pairs(cls, value: list[float]) -> list[float]:
        if len(value) % 2:
            raise ValueError(f"zone points come in x,y pairs, got {len(value)} numbers")
        return value


class CameraConfig(_Strict):
    source: str = "demo"
    name: str | None = None
    lines: list[LineConfig] = Field(default_factory=list)
    zones: list[ZoneConfig] = Field(default_factory=list)


class OutputsConfig(_Strict):
    """Where results go. Past the files, the keys are the flags of every pipeline command
    (``mqtt`` is ``--mqtt``, ``webhook_batch`` is ``--webhook-batch``); a flag given to
    ``ubiq run`` wins over its key. Passwords and secrets never go here: name a file
    (``mqtt_password_file``, ``webhook_secret_file``) or set ``$UBIQ_MQTT_PASSWORD`` /
    ``$UBIQ_WEBHOOK_SECRET``."""

    jsonl: str | None = None
    save: str | None = None
    show: bool = False
    snapshots: str | None = Field(None, description="folder for a JPEG of each alert")
    recordings: str | None = Field(
        None, description="voice-control: folder for the MP4 of each spoken recording"
    )
    mqtt: str | None = Field(
        None, description="publish events to mqtt[s]://[USER@]HOST[:PORT][/PREFIX]"
    )
    mqtt_tls_ca: str | None = Field(None, description="CA bundle for the broker (PEM)")
    mqtt_tls_cert: str | None = Field(None, description="client certificate (PEM)")
    mqtt_tls_key: str | None = Field(None, description="client certificate's key (PEM)")
    mqtt_password_file: str | None = Field(None, description="file holding the MQTT password")
    webhook: str | None = Field(None, description="POST events as JSON to this http(s) URL")
    webhook_secret_file: str | None = Field(
        None, description="file holding the webhook's HMAC-SHA256 secret"
    )
    webhook_batch: int | None = Field(
        None, ge=1, le=1000, description="events per request, as a JSON array (null: 1)"
    )
    webhook_batch_s: float | None = Field(
        None, ge=0, le=3600, description="longest wait for a batch to fill (null: 1 s)"
    )
    outbox: str | None = Field(
        None, description="folder of the durable outboxes (null: $UBIQ_HOME/outbox)"
    )
    clips: str | None = Field(None, description="folder for a snapshot and clip of each alert")
    clip_pre: float | None = Field(None, ge=0, le=60, description="seconds before (null: 5)")
    clip_post: float | None = Field(None, ge=0, le=60, description="seconds after (null: 5)")
    clip_kinds: list[str] | None = Field(
        None, min_length=1, description="event kinds that get a clip, * as a wildcard"
    )
    serve: str | None = Field(None, description="live view on [HOST:]PORT (127.0.0.1 if no HOST)")
    token_file: str | None = Field(None, description="file holding the live view's token")

    @field_validator("serve", mode="before")
    @classmethod
    def _port_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class VoiceConfig(_Strict):
    """voice-control: how commands are heard (the settings of ``ubiq listen``)."""

    commands: str | None = Field(
        None, description="commands file (.txt or .yaml); null: the app's own phrases"
    )
    engine: Literal["auto", "model", "phones", "pocketsphinx"] = Field(
        "auto",
        description="auto: the model if one is named, else phones (the shipped phone "
        "recogniser, no training)",
    )
    model: str | None = Field(None, description="command classifier (zoo name or file)")
    threshold: float | None = Field(None, ge=0, le=1, description="lowest confidence accepted")
    wake: str | None = Field(None, description="a wake phrase said before each command")
    wake_window_s: float = Field(8.0, gt=0, description="seconds a wake phrase lasts")
    vad_threshold: float = Field(0.5, gt=0, lt=1, description="Silero speech threshold")


class ClassifyConfig(_Strict):
    """Learned labels on tracks (``ubiq track --classify``): each track's crops go through
    the classifier and the track takes the label they vote for, so the rules count and
    ``classes`` may name the learned labels (``my cat``)."""

    model: str | None = Field(
        None, description="a ubiq learn --out folder or a classify model; null: off"
    )
    classes: list[str] | None = Field(
        None, description="detector labels whose tracks are classified (null: all)"
    )
    every_n_frames: int = Field(3, ge=1, description="classify a track at most every N frames")
    settle_votes: int = Field(
        5, ge=1, description="known answers after which a track is no longer classified"
    )
    min_confidence: float = Field(
        0.5, ge=0, le=1, description="answers less probable than this count for nothing"
    )


class AppConfig(_Strict):
    app: str | None = None
    model: str = "ubiq-det-mnv2"
    classes: list[str] | None = None
    conf: float = Field(0.1, ge=0, le=1)
    iou: float = Field(0.45, ge=0, le=1)
    imgsz: int | None = Field(None, gt=0)
    backend: str | None = None
    device: str = "auto"
    threads: int | None = Field(None, ge=1)
    tracker: str = "bytetrack"
    lost_buffer_s: float = Field(1.0, ge=0)
    track: dict[str, Any] = Field(
        default_factory=dict, description="more tracker settings (TrackerConfig fields)"
    )
    class_aware: bool = Field(
        False, description="track per class (off: the label is the track's majority)"
    )
    anchor: str = "center"
    min_frames: int = Field(3, ge=1)
    label_s: float | None = Field(
        2.0, gt=0, description="a track's label: its majority over its last seconds (null: life)"
    )
    join_s: float = Field(
        1.5,
        ge=0,
        description="a track broken at a line or in a zone joins its other half within "
        "seconds; the untracked boxes leading to a new track date its crossing or entry",
    )
    stationary_s: float | None = Field(None, gt=0)
    blur: str | None = Field(None, description="privacy-cam: faces, person or background")
    audio: str | None = Field(
        None, description="voice-control: mic[:N|NAME], arecord[:DEVICE] or a sound file"
    )
    voice: VoiceConfig | None = Field(None, description="voice-control: commands and engine")
    classify: ClassifyConfig | None = Field(
        default_factory=ClassifyConfig, description="learned labels on tracks (model: OUT)"
    )
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    cameras: list[CameraConfig] = Field(default_factory=lambda: [CameraConfig()], min_length=1)


def _describe(error: ValidationError, origin: str) -> str:
    """The first problem as one line: ``app.yaml: cameras.0.lines.0.pointz: unknown key``."""
    first = error.errors()[0]
    path = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "missing"
    else:
        message = first["msg"]
        if first.get("input") is not None and first["type"] not in ("value_error",):
            message += f", got {first['input']!r}"
    return f"{origin}: {path}: {message}"


def set_path(data: dict, assignment: str) -> None:
    """Applies one ``key.sub.0=value`` to a loaded YAML mapping (value read as YAML).

    Raises:
        ConfigError: If it has no ``=``, or the path goes through something that is not a
            mapping or a list, or a list index is out of range.
    """
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node: Any = data
    for position, part in enumerate(parts):
        last = position == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"--set {key}: {'.'.join(parts[:position]) or key} has "
                    f"{len(node)} item(s); {part!r} is not one of them"
                )
            index = int(part)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:position])} is not a mapping")


def load_config(path: str | Path | None, overrides: list[str] = (), base: dict | None = None):
    """Reads an app YAML (or starts from ``base``), applies ``--set`` overrides, checks it.

    Raises:
        ConfigError: One line naming the file and the bad key's path.
    """
    data: dict = dict(base or {})
    origin = "config"
    if path is not None:
        path = Path(path)
        origin = str(path)
        if not path.is_file():
            raise ConfigError(f"app config not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}:{where} not valid YAML") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"{path}: expected a mapping of settings, got {type(loaded).__name__}"
            )
        data.update(loaded)
    for assignment in overrides:
        set_path(data, assignment)
    try:
        return AppConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, origin)) from None
