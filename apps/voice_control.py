"""``voice-control``: spoken commands drive the camera: "take a picture" saves a JPEG of the
annotated frame, "start recording" and "stop recording" open and close an MP4.

Two pipelines run side by side. The camera's (the video source, the detector's boxes when
``model`` is not ``none``, then :class:`VoiceActions`) runs on the runner like every
app; the speech pipeline of ``ubiq listen`` (Silero VAD, then PocketSphinx on a grammar
of the commands, or a command model) runs on the ``audio`` source in a thread of its own
(:class:`VoiceListener`). The commands it hears wait in a locked queue until
:class:`VoiceActions` takes them on the camera's thread, appends each as the
``speech.command`` event it came from, and acts on it:

* ``voice.snapshot`` ``{path}``: a JPEG of the current frame with the boxes drawn;
* ``recording.start`` ``{path}``: an MP4 of the annotated frames from this one on (H.264
  where an encoder exists, else MPEG-4 Part 2);
* ``recording.stop`` ``{path, seconds, frames}``: the recording closed (also when the run
  ends while recording).

Which command does what: the intent ``picture`` takes a picture; the intent
``recording`` with the slot ``action`` (``start`` or ``stop``) starts or stops a
recording (the intents of the shipped ``ubiq-commands-demo`` YAML); in a plain-text
commands file the lines ``take a picture``, ``start recording`` and ``stop recording``. With
no commands file the app listens for :data:`COMMANDS`.

Timing: when the audio and the video are both files, the video waits until the audio has
been heard up to the frame's time, so a command said at 3.2 s of the WAV acts on the
first frame at or after the moment it was recognised (the end of the audio chunk that
closed it), whatever the speeds of the two threads. A sound file beside a live camera is
replayed at real time; a microphone's commands act on the next frame. The listener stops
with the camera's run, and the run ends when the video does. Defaults:
``voice_control.yaml``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np

from ubiq.apps.app import App
from ubiq.apps.config import VoiceConfig
from ubiq.errors import ConfigError, UbiqError
from ubiq.types import Event, FrameResult

logger = logging.getLogger(__name__)

COMMANDS = {"picture": "take a (picture|photo)", "recording": "{action:start|stop} recording"}
"""The app's own commands (intent -> pattern) when ``voice.commands`` is null."""

NO_DETECTOR = "none"
"""``model: none``: the video alone, no boxes."""

FOLDERS = {
    "snapshots": "runs/voice-control/pictures",
    "recordings": "runs/voice-control/recordings",
}
"""Where pictures and recordings go when ``outputs`` names no folder."""

HEARD_KINDS = ("speech.wake", "speech.command")
"""Speech events handed to the camera's pipeline (the voice activity stays in the thread)."""

_JOIN_TIMEOUT_S = 5.0


def _write_errors() -> tuple[type[BaseException], ...]:
    """What a failing video writer raises: OSError (a full disk), ValueError, PyAV's errors."""
    try:
        import av
    except ImportError:
        return (OSError, ValueError)
    return (OSError, ValueError, av.FFmpegError)


def action_of(event: Event) -> str | None:
    """What a ``speech.command`` asks for: ``"picture"``, ``"start"``, ``"stop"`` or
    ``None`` (a command this app does not act on)."""
    if event.kind != "speech.command":
        return None
    payload = event.payload
    intent, text = payload.get("intent"), payload.get("text", "")
    if intent == "picture" or text == "take a picture":
        return "picture"
    if intent == "recording":
        action = payload.get("slots", {}).get("action")
        return action if action in ("start", "stop") else None
    if text in ("start recording", "stop recording"):
        return text.split()[0]
    return None


def _acts(phrase) -> bool:
    fields = {"intent": phrase.intent, "text": phrase.text, "slots": dict(phrase.slots)}
    return action_of(Event("speech.command", 0, "0", fields)) is not None


def load_voice_commands(voice: VoiceConfig):
    """The command set: ``voice.commands``, else :data:`COMMANDS` (and ``voice.wake``).

    Raises:
        ConfigError: If the file cannot be read, or none of its phrases is a picture or
            recording command.
    """
    from ubiq.pipelines.speech.commands import (
        CommandPhrase,
        CommandSet,
        expand_pattern,
        load_commands,
    )

    if voice.commands:
        commands = load_commands(voice.commands)
    else:
        phrases = [
            CommandPhrase(text, intent, slots)
            for intent, pattern in COMMANDS.items()
            for text, slots in expand_pattern(pattern, where="voice-control commands")
        ]
        commands = CommandSet(tuple(phrases), source="voice-control commands")
    if not any(_acts(phrase) for phrase in commands.phrases):
        raise ConfigError(
            f"voice.commands: {commands.source} has no picture or recording command "
            "(intent picture, or intent recording with {action:start|stop})"
        )
    return commands.with_wake(voice.wake)


class VoiceListener:
    """The speech pipeline on an audio source, run in a thread of its own; the commands it
    hears wait in a locked queue for :meth:`take`.

    Args:
        source: An open audio source (it is closed by :meth:`stop`).
        pipeline: The :class:`~ubiq.pipelines.speech.listen.SpeechPipeline`.
        sync: Whether :meth:`take` waits for the audio to reach the asked time (an audio
            file beside a video file); otherwise it takes what is there.
    """

    def __init__(self, source, pipeline, *, sync: bool) -> None:
        self.source = source
        self.pipeline = pipeline
        self.sync = bool(sync)
        self._condition = threading.Condition()
        self._pending: deque[tuple[float, Event]] = deque()
        self._heard_s = 0.0
        self._done = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Starts listening (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="ubiq-voice", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        try:
            for chunk in self.source:
                self._publish(self.pipeline.feed(chunk), chunk.end_s)
            if not self.source.stopped:  # the file ended: an utterance still open counts
                self._publish(self.pipeline.flush(), self._heard_s)
        except BaseException as error:  # noqa: BLE001 - raised on the camera's thread
            self._error = error
        finally:
            with self._condition:
                self._done = True
                self._condition.notify_all()

    def _publish(self, events: list[Event], heard_s: float) -> None:
        with self._condition:
            for event in events:
                if event.kind in HEARD_KINDS:
                    self._pending.append((heard_s, event))
            self._heard_s = heard_s
            self._condition.notify_all()

    def take(self, until_s: float | None = None) -> list[Event]:
        """The commands heard so far, in order.

        Args:
            until_s: With ``sync``, wait until the audio is heard up to this many seconds
                (or ends) and take only what was ready by then.

        Raises:
            UbiqError: What stopped the listener (a device lost, a decoding error).
        """
        with self._condition:
            if self.sync and until_s is not None:
                while not self._done and self._heard_s < until_s:
                    self._condition.wait(0.5)
            if self._error is not None:
                error, self._error = self._error, None
                if isinstance(error, UbiqError):
                    raise error
                raise UbiqError(f"audio {self.source.source_id}: {error}") from error
            taken = []
            while self._pending and (
                not self.sync or until_s is None or self._pending[0][0] <= until_s
            ):
                taken.append(self._pending.popleft()[1])
        return taken

    def stop(self) -> None:
        """Stops the thread and closes the audio source. Safe to call twice."""
        self.source.stop()
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                logger.warning("the audio thread did not stop within %.0f s", _JOIN_TIMEOUT_S)
        self.source.close()


class _Recording:
    def __init__(self, path: Path, writer, size: tuple[int, int], started_s: float) -> None:
        self.path, self.writer, self.size, self.started_s = path, writer, size, started_s
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        width, height = self.size
        self.writer.write(np.ascontiguousarray(image[:height, :width]))
        self.frames += 1


class VoiceActions:
    """The stage that acts on the commands of a :class:`VoiceListener`.

    Each frame it takes the commands heard by the frame's time (files) or by now (live),
    appends them to the frame's events, and acts on them (module docstring); while
    recording it writes the annotated frame.

    Args:
        listener: Where the commands come from (started on the first frame, stopped by
            :meth:`close`).
        snapshots: Folder of the pictures (created).
        recordings: Folder of the recordings (created).
        annotators: What is drawn on pictures and recordings.
        fps: Frame rate of the recordings (the source's; default 30).

    Raises:
        ConfigError: If a folder cannot be created.
    """

    name = "voice"

    def __init__(
        self,
        listener: VoiceListener,
        *,
        snapshots: str | Path,
        recordings: str | Path,
        annotators=(),
        fps: float | None = None,
    ) -> None:
        self.listener = listener
        self.folders = {}
        for option, folder in (("snapshots", snapshots), ("recordings", recordings)):
            path = Path(folder)
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise ConfigError(
                    f"outputs.{option}: cannot create {path}: {error.strerror}"
                ) from None
            self.folders[option] = path
        self.annotators = list(annotators)
        self.fps = fps if fps and fps > 0 else 30.0
        self.recording: _Recording | None = None
        self.pictures = 0
        self.recordings = 0
        self._first_ns: int | None = None
        self._last: tuple[int, str] = (0, "0")  # the last frame's timestamp_ns and source
        self._last_s = 0.0

    def __call__(self, result: FrameResult) -> FrameResult:
        frame = result.frame
        if self._first_ns is None:
            self._first_ns = frame.timestamp_ns
            self.listener.start()
        now_s = self._last_s = (frame.timestamp_ns - self._first_ns) / 1e9
        self._last = (frame.timestamp_ns, result.source_id)
        image = None
        for event in self.listener.take(now_s):
            event = dataclasses.replace(
                event, timestamp_ns=frame.timestamp_ns, source_id=result.source_id
            )
            result.events.append(event)
            action = action_of(event)
            if action is None:
                continue
            if image is None:
                image = self._draw(result)
            made = self._act(action, result, image, now_s)
            if made is not None:
                result.events.append(made)
        if self.recording is not None:
            stopped = self._record(self._draw(result) if image is None else image, now_s)
            if stopped is not None:
                result.events.append(stopped)
        return result

    def _draw(self, result: FrameResult) -> np.ndarray:
        from ubiq.pipelines.sinks.annotate import draw

        return draw(result, self.annotators)

    def _name(self, result: FrameResult, folder: str, kind: str, suffix: str) -> Path:
        """A new file name (an earlier run's files are never overwritten)."""
        source = "".join(c if c.isalnum() else "_" for c in result.source_id)[:32]
        stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{source}-{result.index:06d}-{kind}"
        path = self.folders[folder] / f"{stem}{suffix}"
        number = 1
        while path.exists():
            path = self.folders[folder] / f"{stem}-{number}{suffix}"
            number += 1
        return path

    def _act(self, action: str, result: FrameResult, image, now_s: float) -> Event | None:
        frame = result.frame
        if action == "picture":
            path = self._name(result, "snapshots", "picture", ".jpg")
            if not self._write_picture(path, image):
                return None
            self.pictures += 1
            return Event(
                "voice.snapshot", frame.timestamp_ns, result.source_id, {"path": str(path)}
            )
        if action == "start":
            if self.recording is not None:
                logger.info("already recording to %s", self.recording.path)
                return None
            path = self._name(result, "recordings", "recording", ".mp4")
            if not self._open_recording(path, image, now_s):
                return None
            return Event(
                "recording.start", frame.timestamp_ns, result.source_id, {"path": str(path)}
            )
        if self.recording is None:
            logger.info("not recording: nothing to stop")
            return None
        return self._close_recording(frame.timestamp_ns, result.source_id, now_s)

    def _write_picture(self, path: Path, image: np.ndarray) -> bool:
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        partial = path.with_name(f".{path.stem}.partial.jpg")
        try:
            if not ok:
                raise OSError("JPEG encoding failed")
            partial.write_bytes(data.tobytes())
            os.replace(partial, path)
        except OSError as error:
            partial.unlink(missing_ok=True)
            logger.error("cannot write picture %s: %s", path, error.strerror or error)
            return False
        return True

    def _open_recording(self, path: Path, image: np.ndarray, now_s: float) -> bool:
        from ubiq.pipelines.sinks.clips import open_video_writer

        height, width = image.shape[:2]
        size = (width - width % 2, height - height % 2)  # H.264 needs even sides
        try:
            writer = open_video_writer(path, self.fps, size)
        except _write_errors() as error:
            logger.error("cannot record to %s: %s", path, getattr(error, "strerror", None) or error)
            return False
        self.recording = _Recording(path, writer, size, now_s)
        return True

    def _record(self, image: np.ndarray, now_s: float) -> Event | None:
        """Writes one frame; a writer that fails (a full disk) ends the recording, keeping
        what is written, with its ``recording.stop``."""
        try:
            self.recording.write(image)
        except _write_errors() as error:
            logger.error("recording %s stopped: %s", self.recording.path, error)
            return self._close_recording(*self._last, now_s)
        return None

    def _finish_recording(self) -> _Recording | None:
        recording, self.recording = self.recording, None
        if recording is None:
            return None
        try:
            recording.writer.close()
        except _write_errors() as error:
            logger.error("cannot finish recording %s: %s", recording.path, error)
        self.recordings += 1
        logger.info("wrote recording %s (%d frames)", recording.path, recording.frames)
        return recording

    def _close_recording(self, timestamp_ns: int, source_id: str, stop_s: float) -> Event | None:
        recording = self._finish_recording()
        if recording is None:
            return None
        payload = {
            "path": str(recording.path),
            "seconds": round(max(stop_s - recording.started_s, 0.0), 3),
            "frames": recording.frames,
        }
        return Event("recording.stop", timestamp_ns, source_id, payload)

    def finish(self) -> list[Event]:
        """Closes a recording still open when the video ends (its ``recording.stop``)."""
        if self.recording is None:
            return []
        event = self._close_recording(*self._last, self._last_s + 1.0 / self.fps)
        return [] if event is None else [event]

    def close(self) -> None:
        """Closes a recording still open and stops the listener."""
        self._finish_recording()
        self.listener.stop()


class NoDetector:
    """``model: none``: stands in for the detector; nothing is detected or drawn."""

    labels: tuple[str, ...] = ()
    path = Path(NO_DETECTOR)
    manifest = SimpleNamespace(name="no detector")
    backend = None


class VoiceControlApp(App):
    name = "voice-control"
    uses_audio = True

    def check(self) -> None:
        config = self.config
        if len(config.cameras) != 1:
            raise ConfigError(
                f"cameras: voice-control drives one camera, got {len(config.cameras)}"
            )
        if any(camera.lines or camera.zones for camera in config.cameras):
            raise ConfigError("voice-control has no lines or zones: remove them from cameras")
        if not config.audio:
            raise ConfigError(
                "audio: voice-control needs an audio source (mic[:N|NAME], arecord[:DEVICE] or "
                "a sound file; --audio)"
            )
        self.voice = config.voice or VoiceConfig()
        self.listener: VoiceListener | None = None

    @property
    def detects(self) -> bool:
        """Whether a detector runs (``model`` is not ``none``)."""
        return self.config.model.lower() != NO_DETECTOR

    def load_model(self, streams: int = 1):
        if not self.detects:
            return NoDetector()
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
            classes=config.classes,
            imgsz=config.imgsz,
            streams=streams,
        )

    def open_listener(self, *, video_live: bool) -> VoiceListener:
        """Builds the speech pipeline and opens the audio source (before any output, so a
        missing file or microphone fails first).

        Raises:
            ConfigError: For a bad commands file or setting.
            BackendUnavailable: If PocketSphinx (the ``[speech]`` extra) is missing.
            SourceError: If the audio source cannot be opened, or a file has no samples.
        """
        from ubiq.hardware.sources.audio import open_audio_source
        from ubiq.pipelines.speech.listen import SpeechPipeline
        from ubiq.pipelines.speech.recognize import open_recognizer
        from ubiq.pipelines.speech.vad import SileroVad, VadOptions, VadSegmenter

        voice, audio = self.voice, self.config.audio
        recognizer = open_recognizer(
            load_voice_commands(voice),
            engine=voice.engine,
            model=voice.model,
            threshold=voice.threshold,
            threads=1,
        )
        segmenter = VadSegmenter(VadOptions(threshold=voice.vad_threshold), SileroVad(threads=1))
        pipeline = SpeechPipeline(
            segmenter, recognizer, wake_window_s=voice.wake_window_s, source_id=audio
        )
        # A sound file beside a live camera is replayed at the pace of a microphone.
        source = open_audio_source(audio, realtime=video_live)
        source.open()
        return VoiceListener(source, pipeline, sync=not video_live and not source.is_live)

    def stages(self, model, camera, source, position: int) -> list:
        from ubiq.pipelines.stage import Detect

        listener = self.open_listener(video_live=bool(getattr(source, "is_live", False)))
        try:
            actions = VoiceActions(
                listener,
                snapshots=self.config.outputs.snapshots or FOLDERS["snapshots"],
                recordings=self.config.outputs.recordings or FOLDERS["recordings"],
                annotators=self.annotators(position),
                fps=getattr(source, "fps", None),
            )
        except BaseException:
            listener.stop()
            raise
        self.listener = listener
        return [Detect(model), actions] if self.detects else [actions]

    def annotators(self, position: int) -> list:
        from ubiq.pipelines.sinks import BoxAnnotator

        return [BoxAnnotator()] if self.detects else []

    def sinks(self, source, position: int, count: int, **outputs) -> list:
        try:
            return super().sinks(source, position, count, **outputs)
        except BaseException:  # the run never starts: stop listening
            if self.listener is not None:
                self.listener.stop()
            raise
