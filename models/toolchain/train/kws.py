"""The ``kws`` training task: keyword spotting on log-mel spectrograms of one-second clips.

Data: a keyword folder (``root/{train,val}/<class>/*.wav``, see
:mod:`ubiq.models.datasets.speech`), loaded into memory as one-second 16 kHz float32 clips
(resampled when needed, shorter clips centred in zeros, longer ones cropped around their
centre).

Model input, exactly as the runtime must compute it: :func:`~ubiq.models.runtime.
audio_features.log_mel_spectrogram` of the one-second clip with the task's
:class:`~ubiq.models.runtime.audio_features.LogMelOptions` (defaults: 16 kHz, 40 HTK mels
from 20 to 7600 Hz, 30 ms periodic Hann windows every 10 ms, 512-point FFT power,
``log(mel + 1e-6)``), laid out as float32 ``(1, 1, 40, 98)``. Nothing is normalised beyond
the log; the model's first batch norm takes care of scale. The settings are stored in the
model config under ``extra["features"]`` for the export manifest.

Training augments the waveform (playback speed 0.85-1.15x, which moves tempo and pitch
together like another speaker, time shift up to +-100 ms, a simulated room with probability
0.25 (:func:`~ubiq.models.datasets.speech.room_impulse_response`, as the shipped phone
model was trained), gain -20 to +4 dB, background noise at 5-30 dB SNR with probability
0.8), then the features (SpecAugment: two time masks of up to 8 frames and two frequency
masks of up to 4 bands, filled with the clip's mean).
Validation features are computed once, without augmentation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from scipy.signal import fftconvolve
from tqdm import tqdm

from ubiq.errors import ConfigError, DatasetError
from ubiq.models.datasets.speech import room_impulse_response
from ubiq.models.runtime.audio_features import LogMelOptions, fixed_length, read_wav, resample
from ubiq.models.toolchain.nets import ModelConfig

UNKNOWN = "_unknown_"
SILENCE = "_silence_"

__all__ = ["KeywordClips", "KwsTask", "augment_waveforms", "spec_augment"]

log = logging.getLogger(__name__)

SPEED_RANGE = (0.85, 1.15)
SHIFT_SECONDS = 0.1
GAIN_DB = (-20.0, 4.0)
NOISE_PROBABILITY = 0.8
REVERB_PROBABILITY = 0.25
SNR_DB = (5.0, 30.0)
TIME_MASKS, TIME_MASK_FRAMES = 2, 8
FREQUENCY_MASKS, FREQUENCY_MASK_BANDS = 2, 4


@dataclass
class KeywordClips:
    """The clips of one split, in memory.

    Attributes:
        samples: ``(N, clip_samples)`` float32 in ``[-1, 1]``.
        labels: ``(N,)`` int64 indices into ``names``.
        names: Class names, sorted (``_silence_``, ``_unknown_`` first).
    """

    samples: np.ndarray
    labels: np.ndarray
    names: list[str]

    @classmethod
    def load(
        cls, root: Path, split: str, features: LogMelOptions, progress: bool = True
    ) -> KeywordClips:
        """Reads a split of a keyword folder as fixed-length clips at the feature rate.

        Raises:
            DatasetError: For a missing split, an empty class or an unreadable WAV file.
        """
        from ubiq.models.datasets.speech import load_keyword_folder

        paths, labels, names = load_keyword_folder(Path(root), split)
        length = features.clip_samples
        samples = np.zeros((len(paths), length), np.float32)
        for row, path in enumerate(tqdm(paths, desc=f"loading {split}", disable=not progress)):
            clip, rate = read_wav(path)
            if rate != features.sample_rate:
                clip = resample(clip, rate, features.sample_rate)
            samples[row] = fixed_length(
                clip, features.sample_rate, features.clip_seconds, (length - len(clip)) // 2
            )
        return cls(samples, labels, list(names))

    def __len__(self) -> int:
        return len(self.labels)


def _noise_bank(train: KeywordClips, length: int, seed: int) -> np.ndarray:
    """Unit-RMS background clips: the training ``_silence_`` clips plus coloured noise."""
    from ubiq.models.datasets.speech import SILENCE, colored_noise

    rng = np.random.default_rng(seed)
    clips = [colored_noise(kind, length, rng) for kind in ("white", "pink", "brown") * 8]
    if SILENCE in train.names:
        for clip in train.samples[train.labels == train.names.index(SILENCE)]:
            rms = float(np.sqrt(np.mean(clip**2)))
            if rms > 1e-5:
                clips.append(clip / rms)
    return np.stack(clips).astype(np.float32)


def _change_speed(clip: np.ndarray, factor: float) -> np.ndarray:
    """Plays ``clip`` ``factor`` times faster (tempo and pitch together), same length, centred."""
    length = len(clip)
    positions = np.arange(0.0, length - 1, factor)
    faster = np.interp(positions, np.arange(length), clip).astype(np.float32)
    return fixed_length(faster, 1, length, (length - len(faster)) // 2)


def augment_waveforms(
    samples: np.ndarray,
    rng: np.random.Generator,
    noise_bank: np.ndarray,
    sample_rate: int,
    *,
    speed: tuple[float, float] | None = None,
) -> np.ndarray:
    """Random speed, time shift, room, gain and background noise (see the module
    docstring).

    Args:
        samples: ``(B, L)`` float32 clips (not modified).
        rng: Random generator.
        noise_bank: ``(M, L)`` unit-RMS background clips.
        sample_rate: Samples per second.
        speed: Range of playback-speed factors (tempo and pitch change together, a cheap
            stand-in for other speakers), or ``None`` to keep the speed.

    Returns:
        ``(B, L)`` float32 clips, clipped to ``[-1, 1]``.
    """
    batch, length = samples.shape
    shift = int(SHIFT_SECONDS * sample_rate)
    out = np.empty_like(samples)
    for row in range(batch):
        offset = int(rng.integers(-shift, shift + 1))
        clip = samples[row]
        if speed is not None:
            clip = _change_speed(clip, float(rng.uniform(*speed)))
        out[row] = fixed_length(clip, sample_rate, length / sample_rate, offset)
    for row in np.flatnonzero(rng.random(batch) < REVERB_PROBABILITY):
        room = room_impulse_response(rng, sample_rate)
        out[row] = fftconvolve(out[row], room)[:length]
    out *= (10 ** (rng.uniform(*GAIN_DB, size=(batch, 1)) / 20)).astype(np.float32)
    for row in np.flatnonzero(rng.random(batch) < NOISE_PROBABILITY):
        noise = np.roll(noise_bank[rng.integers(len(noise_bank))], int(rng.integers(length)))
        signal_rms = max(float(np.sqrt(np.mean(out[row] ** 2))), 1e-5)
        noise_rms = signal_rms / 10 ** (rng.uniform(*SNR_DB) / 20)
        out[row] += noise * np.float32(noise_rms)
    return np.clip(out, -1.0, 1.0)


def spec_augment(features: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SpecAugment-style masks: time and frequency stripes set to each clip's mean.

    Args:
        features: ``(B, n_mels, frames)`` log-mel features (modified in place).
        rng: Random generator.

    Returns:
        ``features``.
    """
    batch, bands, frames = features.shape
    means = features.mean(axis=(1, 2))
    for row in range(batch):
        for _ in range(TIME_MASKS):
            width = int(rng.integers(TIME_MASK_FRAMES + 1))
            start = int(rng.integers(frames - width + 1))
            features[row, :, start : start + width] = means[row]
        for _ in range(FREQUENCY_MASKS):
            width = int(rng.integers(FREQUENCY_MASK_BANDS + 1))
            start = int(rng.integers(bands - width + 1))
            features[row, start : start + width, :] = means[row]
    return features


def _as_input(features: np.ndarray) -> torch.Tensor:
    """``(B, n_mels, frames)`` to the ``(B, 1, n_mels, frames)`` float32 model input."""
    tensor = torch.from_numpy(np.ascontiguousarray(features, np.float32))[:, None]
    return tensor.contiguous(memory_format=torch.channels_last)


class KwsTask:
    """Keyword spotting for ``ubiq train --task kws`` (the trainer's task interface).

    Args:
        options: The run's ``TrainOptions``: ``data`` is the keyword folder root;
            ``imgsz`` is unused (the input is ``(n_mels, frames)`` of the features);
            ``extra["features"]`` may override :class:`LogMelOptions` fields.

    Raises:
        ConfigError: For unknown feature settings.
        DatasetError: For a malformed keyword folder, or ``val`` classes that differ
            from ``train``.
    """

    metric_names = ("top1",)

    def __init__(self, options) -> None:
        overrides = dict(options.extra.get("features", {})) if options.extra else {}
        known = {f.name for f in fields(LogMelOptions)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown kws feature settings {unknown}; known: {sorted(known)}")
        root = Path(options.data)
        description = root / "dataset.yaml"
        if "clip_seconds" not in overrides and description.is_file():
            # a command set records the clip length its longest phrase needs
            seconds = (yaml.safe_load(description.read_text(encoding="utf-8")) or {}).get(
                "clip_seconds"
            )
            if isinstance(seconds, (int, float)) and seconds > 0:
                overrides["clip_seconds"] = float(seconds)
        self.features = LogMelOptions(**overrides)
        self.train = KeywordClips.load(root, "train", self.features, options.progress)
        self.val = KeywordClips.load(root, "val", self.features, options.progress)
        if self.val.names != self.train.names:
            raise DatasetError(
                f"{root}: val classes {self.val.names} differ from train classes {self.train.names}"
            )
        if len(self.train.names) < 2:
            raise DatasetError(f"{root}: kws needs at least 2 classes, got {self.train.names}")
        self.root = root
        self.names = self.train.names
        self.noise_bank = _noise_bank(self.train, self.features.clip_samples, options.seed)
        self.val_features = self.features(self.val.samples)  # (N, n_mels, frames)
        log.info(
            "kws: %d train and %d val clips, classes %s, input (1, 1, %d, %d)",
            len(self.train),
            len(self.val),
            ", ".join(self.names),
            self.features.n_mels,
            self.features.frames,
        )

    def config(self, options) -> ModelConfig:
        """The model config: DS-CNN unless a backbone is named."""
        backbone = "dscnn" if options.backbone == "auto" else options.backbone
        return ModelConfig(
            task="kws",
            backbone=backbone,
            labels=tuple(self.names),
            width=options.width,
            imgsz=(self.features.n_mels, self.features.frames),
            in_channels=1,
            extra={"features": self.features.to_dict()},
        )

    def setup(self, model) -> None:
        pass

    def batch_features(self, indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augmented ``(B, n_mels, frames)`` features of training clips ``indices``."""
        waveforms = augment_waveforms(
            self.train.samples[indices],
            rng,
            self.noise_bank,
            self.features.sample_rate,
            speed=SPEED_RANGE,
        )
        return spec_augment(self.features(waveforms), rng)

    def step(self, model, indices: np.ndarray, rng: np.random.Generator):
        """One training step's loss (cross-entropy, label smoothing 0.1) and its parts."""
        inputs = _as_input(self.batch_features(indices, rng))
        labels = torch.from_numpy(self.train.labels[indices])
        loss = F.cross_entropy(model(inputs), labels, label_smoothing=0.1)
        return loss, {"ce": float(loss.detach())}

    @torch.no_grad()
    def validate(self, model, batch: int) -> dict[str, float]:
        """Top-1 accuracy on the ``val`` clips (held-out voices for an espeak-ng set)."""
        from ubiq.models.runtime.metrics import top1_accuracy

        logits = [
            model(_as_input(self.val_features[start : start + batch])).numpy()
            for start in range(0, len(self.val), batch)
        ]
        return {"top1": top1_accuracy(np.concatenate(logits), self.val.labels)}

    @staticmethod
    def fitness(metrics: dict[str, float]) -> float:
        return metrics["top1"]

    def _phone_check(self):
        """``(verify, calibration)``: ``(N, L)`` waveforms -> ``(N, classes)`` phone-check
        scores of each class's phrase (the second stage of
        :mod:`~ubiq.models.toolchain.train.kws_calibrate`), and the zero-wait path's
        calibration for these phrases (its threshold and rule, cached by the list as
        ``ubiq listen --commands`` caches it): the trained model's recogniser lets the
        phone recogniser hear commands at that threshold too. ``(None, None)`` where the
        check cannot run (no espeak-ng, no phone model)."""
        from ubiq.errors import BackendUnavailable, ModelError
        from ubiq.pipelines.speech.commands import CommandSet
        from ubiq.pipelines.speech.phone_commands import PhoneCommandRecognizer

        phrases = [n for n in self.names if n not in (UNKNOWN, SILENCE)]
        description = self.root / "dataset.yaml"
        # a commands file's own spellings, recorded by command_training: checked as
        # `ubiq listen` will check them; and its phrases in the file's order, which the
        # zero-wait calibration's draws follow (so it is the one `ubiq listen` makes)
        pronunciations = {}
        if description.is_file():
            data = yaml.safe_load(description.read_text(encoding="utf-8")) or {}
            pronunciations = data.get("pronunciations") or {}
            recorded = [str(p) for p in data.get("phrases") or []]
            if sorted(recorded) == sorted(phrases):
                phrases = recorded
        try:
            checker = PhoneCommandRecognizer(
                CommandSet.from_phrases(
                    phrases, pronunciations=pronunciations, source="the model's classes"
                ),
                threshold=None,  # calibrated as the zero-wait path does it (seconds, cached)
                progress=False,
            )
        except (BackendUnavailable, ConfigError, ModelError) as error:
            log.warning("kws: no phone check chosen: %s", error)
            return None, None
        columns = np.array([checker.phrases.index(n) if n in phrases else -1 for n in self.names])

        def verify(waveforms: np.ndarray) -> np.ndarray:
            out = np.zeros((len(waveforms), len(self.names)))
            for row, clip in enumerate(waveforms):
                scores = checker.scores(clip)
                out[row] = np.where(columns >= 0, scores[columns], 0.0)
            return out

        return verify, checker.calibration

    @torch.no_grad()
    def finish(self, model, batch: int) -> dict:
        """Config entries the best weights add after training: the acceptance threshold of
        a command model (:mod:`~ubiq.models.toolchain.train.kws_calibrate`); nothing for a
        model without an ``_unknown_`` class."""
        from ubiq.models.toolchain.train.kws_calibrate import calibrate_threshold

        if UNKNOWN not in self.names or len(self.names) < 3:
            return {}
        model.eval()

        def predict(waveforms: np.ndarray) -> np.ndarray:
            features = self.features(waveforms)
            logits = [
                model(_as_input(features[start : start + batch])).numpy()
                for start in range(0, len(features), batch)
            ]
            return torch.softmax(torch.from_numpy(np.concatenate(logits)), dim=1).numpy()

        verify, heard = self._phone_check()
        try:
            chosen = calibrate_threshold(
                self.val.samples, self.val.labels, self.names, predict, verify=verify
            )
        except ValueError as error:  # no phrase or no _unknown_ clip in val
            log.warning("kws: no threshold chosen: %s", error)
            return {}
        if heard is not None:  # the zero-wait recogniser, as it is calibrated for the list
            chosen["phone_threshold"] = heard.threshold
            chosen["phone_threshold_chosen"] = heard.rule
        return chosen
