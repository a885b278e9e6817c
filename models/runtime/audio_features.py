"""Log-mel features of speech, WAV reading and writing, and resampling: numpy and stdlib only.

The keyword-spotting models are trained on, and run on, exactly what
:func:`log_mel_spectrogram` computes, so a Raspberry Pi computes the same input as the
training host without torch:

1. samples as float32 in ``[-1, 1]`` (int16 is divided by 32768);
2. frames of ``window_ms`` every ``hop_ms``, no padding: ``frames = 1 + (N - window) // hop``;
3. each frame times a periodic Hann window, zero-padded to ``n_fft`` (the next power of two
   of the window) and ``|rfft|**2`` (no scaling);
4. an HTK mel filterbank (``mel = 2595 log10(1 + f / 700)``, triangles of peak 1 between
   mel-spaced edges from ``fmin`` to ``fmax``, no area normalisation);
5. ``log(mel + 1e-6)`` (natural log), nothing else: no mean or variance normalisation.

For one second at 16 kHz with the defaults (40 mels, 30 ms window, 10 ms hop) the result
is ``(40, 98)`` float32, between ``log(1e-6) = -13.8`` (digital silence) and about 10 (a
full-scale tone). :class:`LogMelOptions` holds these settings for a model manifest.
"""

from __future__ import annotations

import functools
import math
import wave
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ubiq.errors import DatasetError

__all__ = [
    "LOG_FLOOR",
    "LogMelOptions",
    "fixed_length",
    "log_mel_spectrogram",
    "mel_filterbank",
    "read_wav",
    "resample",
    "write_wav",
]

LOG_FLOOR = 1e-6
"""Added to the mel energies before the log: silence gives ``log(1e-6)``."""


@dataclass(frozen=True)
class LogMelOptions:
    """The feature settings of a keyword-spotting model (what its manifest records).

    Attributes:
        sample_rate: Samples per second of the audio the features are computed from.
        clip_seconds: Length of one model input in seconds.
        n_mels: Mel bands (the input height).
        window_ms: Analysis window in milliseconds.
        hop_ms: Step between windows in milliseconds.
        fmin: Lowest filterbank edge in Hz.
        fmax: Highest filterbank edge in Hz.
    """

    sample_rate: int = 16000
    clip_seconds: float = 1.0
    n_mels: int = 40
    window_ms: float = 30.0
    hop_ms: float = 10.0
    fmin: float = 20.0
    fmax: float = 7600.0

    @property
    def clip_samples(self) -> int:
        """Samples in one clip (16000 for the defaults)."""
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """Frames of one clip (98 for the defaults)."""
        window, hop = _window_hop(self.sample_rate, self.window_ms, self.hop_ms)
        return 1 + (self.clip_samples - window) // hop

    def to_dict(self) -> dict[str, Any]:
        """The settings plus the derived ones, JSON-safe, for a manifest."""
        window, hop = _window_hop(self.sample_rate, self.window_ms, self.hop_ms)
        return {
            **asdict(self),
            "frames": self.frames,
            "n_fft": _n_fft(window),
            "window": "hann_periodic",
            "mel_scale": "htk",
            "mel_norm": None,
            "power": 2.0,
            "log": "natural",
            "log_floor": LOG_FLOOR,
            "layout": "NCHW (1, 1, n_mels, frames)",
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogMelOptions:
        """The options a manifest recorded with :meth:`to_dict` (derived keys are checked).

        Raises:
            ValueError: If a setting is missing or the recorded frame count disagrees.
        """
        names = [f.name for f in fields(cls)]
        missing = [name for name in names if name not in data]
        if missing:
            raise ValueError(f"feature settings lack {missing}")
        options = cls(**{name: data[name] for name in names})
        if "frames" in data and int(data["frames"]) != options.frames:
            raise ValueError(
                f"features record {data['frames']} frames, settings give {options.frames}"
            )
        return options

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Log-mel features of ``samples`` with these settings (see :func:`log_mel_spectrogram`)."""
        return log_mel_spectrogram(
            samples,
            self.sample_rate,
            n_mels=self.n_mels,
            window_ms=self.window_ms,
            hop_ms=self.hop_ms,
            fmin=self.fmin,
            fmax=self.fmax,
        )

    def model_input(self, samples: np.ndarray) -> np.ndarray:
        """One utterance as the model's ``(1, 1, n_mels, frames)`` float32 input: centred
        in ``clip_seconds`` (cut or zero-padded), as ``ubiq listen`` and ``ubiq val`` feed it."""
        samples = np.asarray(samples, np.float32)
        offset = (self.clip_samples - len(samples)) // 2
        clip = fixed_length(samples, self.sample_rate, self.clip_seconds, offset)
        return self(clip[None])[:, None].astype(np.float32)


def _window_hop(sample_rate: int, window_ms: float, hop_ms: float) -> tuple[int, int]:
    window = int(round(sample_rate * window_ms / 1000))
    hop = int(round(sample_rate * hop_ms / 1000))
    if window < 2 or hop < 1:
        raise ValueError(
            f"window_ms={window_ms} and hop_ms={hop_ms} at {sample_rate} Hz give a window of "
            f"{window} and a hop of {hop} samples; expected at least 2 and 1"
        )
    return window, hop


def _n_fft(window: int) -> int:
    return 1 << (window - 1).bit_length()


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def _mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(
    sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float
) -> np.ndarray:
    """HTK triangular mel filters over the ``rfft`` bins.

    Filter ``m`` rises linearly (in Hz) from edge ``m`` to 1 at edge ``m + 1`` and falls to 0
    at edge ``m + 2``; the ``n_mels + 2`` edges are equally spaced on the HTK mel scale from
    ``fmin`` to ``fmax``.

    Args:
        sample_rate: Samples per second.
        n_fft: FFT length (``n_fft // 2 + 1`` bins).
        n_mels: Number of filters.
        fmin: Lowest edge in Hz.
        fmax: Highest edge in Hz (at most ``sample_rate / 2``).

    Returns:
        ``(n_mels, n_fft // 2 + 1)`` float32 weights (read-only; cached).

    Raises:
        ValueError: For a frequency range outside ``0 <= fmin < fmax <= sample_rate / 2``.
    """
    if not 0 <= fmin < fmax <= sample_rate / 2:
        raise ValueError(
            f"fmin and fmax must satisfy 0 <= fmin < fmax <= sample_rate / 2 = "
            f"{sample_rate / 2:g}, got fmin={fmin}, fmax={fmax}"
        )
    if n_mels < 1:
        raise ValueError(f"n_mels must be positive, got {n_mels}")
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    bins_hz = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)
    lower, centre, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (bins_hz - lower) / (centre - lower)
    falling = (upper - bins_hz) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    weights.setflags(write=False)
    return weights


def _as_float(samples: np.ndarray, name: str = "samples") -> np.ndarray:
    samples = np.asarray(samples)
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if not np.issubdtype(samples.dtype, np.floating):
        raise ValueError(f"{name} must be float in [-1, 1] or int16, got dtype {samples.dtype}")
    return samples.astype(np.float32, copy=False)


def log_mel_spectrogram(
    samples: np.ndarray,
    sample_rate: int = 16000,
    n_mels: int = 40,
    window_ms: float = 30.0,
    hop_ms: float = 10.0,
    fmin: float = 20.0,
    fmax: float = 7600.0,
) -> np.ndarray:
    """Log-mel spectrogram, exactly as the keyword-spotting models expect it.

    See the module docstring for the steps. Leading dimensions are kept, so a batch of
    clips ``(B, N)`` gives ``(B, n_mels, frames)`` in one call.

    Args:
        samples: ``(N,)`` (or ``(..., N)``) float samples in ``[-1, 1]``, or int16.
        sample_rate: Samples per second.
        n_mels: Mel bands.
        window_ms: Window length in milliseconds (480 samples at 16 kHz for 30 ms).
        hop_ms: Hop in milliseconds (160 samples at 16 kHz for 10 ms).
        fmin: Lowest filterbank edge in Hz.
        fmax: Highest filterbank edge in Hz.

    Returns:
        ``(n_mels, frames)`` float32, ``frames = 1 + (N - window) // hop``.

    Raises:
        ValueError: For a dtype other than float or int16, fewer samples than one window,
            or a bad frequency range.
    """
    samples = _as_float(samples)
    window, hop = _window_hop(sample_rate, window_ms, hop_ms)
    if samples.ndim == 0 or samples.shape[-1] < window:
        raise ValueError(
            f"samples must hold at least one window ({window} samples at {sample_rate} Hz), "
            f"got shape {samples.shape}"
        )
    n_fft = _n_fft(window)
    frames = np.lib.stride_tricks.sliding_window_view(samples, window, axis=-1)[..., ::hop, :]
    hann = _hann(window)
    spectrum = np.fft.rfft(frames * hann, n=n_fft, axis=-1)
    power = spectrum.real**2 + spectrum.imag**2
    filters = mel_filterbank(int(sample_rate), n_fft, int(n_mels), float(fmin), float(fmax))
    mel = np.matmul(power.astype(np.float32), filters.T)  # (..., frames, n_mels)
    return np.log(mel + np.float32(LOG_FLOOR)).swapaxes(-1, -2).astype(np.float32, copy=False)


@functools.lru_cache(maxsize=8)
def _hann(window: int) -> np.ndarray:
    values = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / window)).astype(np.float32)
    values.setflags(write=False)
    return values


def fixed_length(
    samples: np.ndarray, sample_rate: int, seconds: float = 1.0, offset_samples: int = 0
) -> np.ndarray:
    """Pads with zeros or crops to exactly ``seconds``, optionally shifting the content.

    Output sample ``t`` is input sample ``t - offset_samples`` (zero where that is outside
    the input): a positive offset delays the sound, a negative one advances it.

    Args:
        samples: ``(N,)`` samples (any dtype; kept).
        sample_rate: Samples per second.
        seconds: Output length in seconds.
        offset_samples: Shift of the content in samples.

    Returns:
        ``(round(seconds * sample_rate),)`` array of the input's dtype.

    Raises:
        ValueError: For a non-1-D input or a non-positive length.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"samples must have shape (N,), got {samples.shape}")
    length = int(round(seconds * sample_rate))
    if length <= 0:
        raise ValueError(f"seconds * sample_rate must be positive, got {seconds} * {sample_rate}")
    out = np.zeros(length, samples.dtype)
    offset = int(offset_samples)
    start_out, start_in = max(0, offset), max(0, -offset)
    count = min(length - start_out, len(samples) - start_in)
    if count > 0:
        out[start_out : start_out + count] = samples[start_in : start_in + count]
    return out


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling (Kaiser-windowed sinc interpolation).

    Each output sample is a windowed-sinc interpolation of the input at its exact time
    position, with the low-pass cut-off at 95 % of the lower Nyquist frequency, so
    downsampling does not alias. Output length is ``ceil(N * to_rate / from_rate)``.

    Args:
        samples: ``(N,)`` float samples (int16 is converted to float in ``[-1, 1]``).
        from_rate: Input samples per second.
        to_rate: Output samples per second.

    Returns:
        ``(M,)`` float32 samples.

    Raises:
        ValueError: For a non-1-D input or a non-positive rate.
    """
    samples = _as_float(samples)
    if samples.ndim != 1:
        raise ValueError(f"samples must have shape (N,), got {samples.shape}")
    if from_rate <= 0 or to_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {from_rate} -> {to_rate}")
    if from_rate == to_rate or len(samples) == 0:
        return samples.copy()
    divisor = math.gcd(int(from_rate), int(to_rate))
    up, down = int(to_rate) // divisor, int(from_rate) // divisor
    taps, kernels = _resampling_kernels(up, down)
    length = math.ceil(len(samples) * up / down)
    padded = np.pad(samples.astype(np.float64), len(taps))
    out = np.empty(length, np.float32)
    for start in range(0, length, 8192):
        # Output n sits at input position (n * down) / up: a whole part and a phase.
        scaled = np.arange(start, min(start + 8192, length), dtype=np.int64) * down
        base, phase = scaled // up, scaled % up
        kernel = kernels[phase] if kernels is not None else _sinc_kernels(up, down, phase)[1]
        positions = base[:, None] + taps[None, :] + len(taps)
        out[start : start + len(base)] = np.sum(padded[positions] * kernel, axis=1)
    return out


def _sinc_kernels(up: int, down: int, phases: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Taps and ``(P, T)`` Kaiser-windowed sinc weights for output phases ``phases / up``.

    The low-pass cut-off is 95 % of the lower Nyquist frequency; the sinc keeps 16 zero
    crossings on each side.
    """
    cutoff = 0.5 * min(1.0, up / down) * 0.95  # cycles per input sample
    half_width = 16 / (2 * cutoff)  # in input samples
    taps = np.arange(-math.ceil(half_width), math.ceil(half_width) + 1)
    distance = (np.asarray(phases) / up)[:, None] - taps[None, :]
    beta = 8.6
    window = np.i0(beta * np.sqrt(np.clip(1 - (distance / half_width) ** 2, 0, None)))
    kernel = 2 * cutoff * np.sinc(2 * cutoff * distance) * window / np.i0(beta)
    kernel[np.abs(distance) > half_width] = 0.0
    return taps, kernel


@functools.lru_cache(maxsize=8)
def _resampling_kernels(up: int, down: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The taps, and the weights of every phase when there are at most 4096 phases."""
    if up > 4096:
        return _sinc_kernels(up, down, np.zeros(1))[0], None
    taps, kernels = _sinc_kernels(up, down, np.arange(up))
    kernels.setflags(write=False)
    return taps, kernels


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Reads a PCM WAV file as mono float32 (stereo and more channels are averaged).

    Args:
        path: The file (8-, 16-, 24- or 32-bit integer PCM).

    Returns:
        ``(samples (N,) float32 in [-1, 1], sample_rate)``.

    Raises:
        DatasetError: Naming the file, when it is missing, not a PCM WAV, or has no samples.
    """
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as handle:
            channels = handle.getnchannels()
            width = handle.getsampwidth()
            sample_rate = handle.getframerate()
            data = handle.readframes(handle.getnframes())
    except (wave.Error, EOFError, OSError) as error:
        raise DatasetError(f"cannot read WAV file {path}: {error}") from error
    if width not in (1, 2, 3, 4):
        raise DatasetError(f"WAV file {path} has {8 * width}-bit samples; expected integer PCM")
    count = len(data) // (width * channels)
    if count == 0 or sample_rate <= 0:
        raise DatasetError(f"WAV file {path} has no samples")
    raw = np.frombuffer(data[: count * width * channels], np.uint8)
    if width == 1:
        values = (raw.astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        triples = raw.reshape(-1, 3).astype(np.int32)
        ints = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        values = (np.where(ints >= 1 << 23, ints - (1 << 24), ints) / float(1 << 23)).astype(
            np.float32
        )
    else:
        dtype = np.dtype("<i2") if width == 2 else np.dtype("<i4")
        values = np.frombuffer(raw.tobytes(), dtype).astype(np.float32) / float(
            1 << (8 * width - 1)
        )
    samples = values.reshape(count, channels).mean(axis=1, dtype=np.float32)
    return samples.astype(np.float32, copy=False), int(sample_rate)


def write_wav(path: str | Path, samples: np.ndarray, sample_rate: int) -> Path:
    """Writes mono 16-bit PCM (float input is clipped to ``[-1, 1]``).

    Args:
        path: Output file.
        samples: ``(N,)`` float in ``[-1, 1]`` or int16.
        sample_rate: Samples per second.

    Returns:
        ``path``.

    Raises:
        ValueError: For a non-1-D input or a bad dtype.
    """
    samples = np.asarray(samples)
    if samples.ndim != 1:
        raise ValueError(f"samples must have shape (N,), got {samples.shape}")
    if samples.dtype != np.int16:
        floats = _as_float(samples)
        samples = np.round(np.clip(floats, -1.0, 1.0) * 32767.0).astype(np.int16)
    path = Path(path)
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(int(sample_rate))
        handle.writeframes(samples.astype("<i2").tobytes())
    return path
