"""``ubiq bench MODEL --devices all``: time every backend and device that can run a model on
this machine, check that each agrees with the reference, and record the winner.

The reference is the plain CPU path of the model's format (onnxruntime CPU fp32 for
``.onnx``, LiteRT CPU for ``.tflite``, OpenVINO CPU f32 for IR). Agreement is the cosine
similarity of every output against the reference's on real images (the shipped photograph,
flipped and cropped), and, for a detector, the mAP50 of its decoded detections with the
reference's detections as ground truth: the reference's at the model's threshold, the
candidate's ranked down to :data:`CANDIDATE_CONFIDENCE` as mAP is computed (COCO,
Ultralytics ``val``), so a box scored 0.26 by one and 0.24 by the other counts as the same
box found with a lower score, not as a miss. Timing is interleaved: every candidate runs a slice
of its runs in turn, round after round, so the machine's drift falls on all of them alike.
The fastest candidate that agrees is recorded (:mod:`ubiq.models.runtime.winners`) and
``--device auto`` uses it from then on.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ubiq.errors import BackendUnavailable, ConfigError, ModelError
from ubiq.hardware.accelerators import openvino_devices, parse_device
from ubiq.models.runtime.backend import Backend, backend_for_path, load_backend
from ubiq.models.runtime.bench import sample_image
from ubiq.models.runtime.metrics import detection_map
from ubiq.models.runtime.model import DetectionModel, find_manifest, resolve_model_path
from ubiq.models.runtime.preprocess import prepare_input
from ubiq.models.runtime.winners import record_winner

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One backend and ``--device`` text to try."""

    backend: str
    device: str

    def __str__(self) -> str:
        return f"{self.backend} {self.device}"


@dataclass
class DeviceResult:
    """How one candidate did.

    Attributes:
        runs_on: What the backend reports it ran on (``"cpu"``, ``"CPU bf16"``).
        cosine: Lowest cosine similarity of any output to the reference's, over the images.
        map50: mAP50 of its detections against the reference's (detectors), else ``None``.
        agrees: Whether ``cosine`` and ``map50`` reach the floors.
        error: Why it could not be measured (then nothing else is set).
    """

    backend: str
    device: str
    runs_on: str = ""
    latency_p50_ms: float = float("nan")
    fps: float = float("nan")
    cosine: float = float("nan")
    map50: float | None = None
    agrees: bool = False
    error: str | None = None


@dataclass
class DeviceSweep:
    """All candidates of one model, the reference first, and the winner."""

    model: str
    results: list[DeviceResult] = field(default_factory=list)
    winner: DeviceResult | None = None
    recorded_in: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def default_candidates(path: Path) -> list[Candidate]:
    """Every backend and device that may run ``path`` here, the reference first.

    Probes only what is installed: onnxruntime's providers, OpenVINO's devices, libedgetpu.
    """
    suffix = path.suffix.lower()
    candidates: list[Candidate] = []
    if suffix == ".tflite":
        candidates.append(Candidate("litert", "cpu"))
        if ctypes.util.find_library("edgetpu"):
            candidates.append(Candidate("litert", "coral"))
        return candidates
    if suffix == ".onnx":
        candidates.append(Candidate("onnxruntime", "cpu"))
        try:
            import onnxruntime

            available = set(onnxruntime.get_available_providers())
        except ImportError:
            available = set()
        for device, provider in (
            ("cuda", "CUDAExecutionProvider"),
            ("tensorrt", "TensorrtExecutionProvider"),
            ("openvino", "OpenVINOExecutionProvider"),
        ):
            if provider in available:
                candidates.append(Candidate("onnxruntime", device))
    if suffix in (".onnx", ".xml") and importlib.util.find_spec("openvino") is not None:
        devices = [name for name, _ in openvino_devices()]
        if suffix == ".xml":
            candidates.append(Candidate("openvino", "openvino:CPU:f32"))
        for name in devices:
            candidates.append(Candidate("openvino", f"openvino:{name}"))
            if name == "CPU" and suffix == ".onnx":
                candidates.append(Candidate("openvino", "openvino:CPU:f32"))
    return candidates


def agreement_images() -> list[np.ndarray]:
    """Real BGR images: the shipped photograph, mirrored, and its centre enlarged."""
    image = sample_image()
    height, width = image.shape[:2]
    import cv2

    crop = image[height // 6 : height * 5 // 6, width // 6 : width * 5 // 6]
    return [image, image[:, ::-1].copy(), cv2.resize(crop, (width, height))]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    if norm == 0.0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.dot(a, b) / norm)


def _random_feeds(runtime: Backend) -> dict[str, np.ndarray]:
    generator = np.random.default_rng(0)
    feeds = {}
    for tensor in runtime.inputs:
        shape = tuple(1 if axis < 1 else axis for axis in tensor.shape)
        dtype = np.dtype(tensor.dtype)
        if np.issubdtype(dtype, np.integer):
            feeds[tensor.name] = generator.integers(0, 128, shape).astype(dtype)
        else:
            feeds[tensor.name] = generator.random(shape).astype(dtype)
    return feeds


# The candidate's detections are ranked down to this score for the agreement mAP50.
CANDIDATE_CONFIDENCE = 0.001


def map50_against(reference, candidate) -> float | None:
    """mAP50 of ``candidate`` detections with ``reference`` detections as ground truth.

    Args:
        reference: One :class:`~ubiq.types.Detections` per image (the reference backend's).
        candidate: The candidate's, same images and order (decoded at a low threshold, such
            as :data:`CANDIDATE_CONFIDENCE`, so the ranking covers boxes near the
            reference's threshold).

    Returns:
        ``None`` when the reference found nothing on any image (nothing to agree on).
    """
    if sum(len(d) for d in reference) == 0:
        return None
    predictions = [(d.xyxy, d.confidence, d.class_id) for d in candidate]
    truths = [(d.xyxy, d.class_id) for d in reference]
    return float(detection_map(predictions, truths, max_detections=300).map50)


def bench_devices(
    name_or_path: str | Path,
    *,
    candidates: list[Candidate] | None = None,
    runs: int = 100,
    warmup: int = 10,
    rounds: int = 5,
    threads: int | None = None,
    min_cosine: float = 0.99,
    min_map50: float = 0.98,
    record: bool = True,
) -> DeviceSweep:
    """Times every candidate on one model, checks agreement, and records the winner.

    Args:
        name_or_path: A zoo name or model file.
        candidates: What to try, the reference first (``None``: :func:`default_candidates`).
        runs: Timed runs per candidate, split over ``rounds`` interleaved rounds.
        warmup: Untimed runs per candidate first.
        threads: Inference threads for every backend (``None``: each runtime's default).
        min_cosine: Cosine floor of every output against the reference.
        min_map50: mAP50 floor of a detector's detections against the reference's.
        record: Store the winner for ``--device auto``.

    Raises:
        ConfigError: If ``runs``, ``rounds`` or a floor is out of range, or a device is bad.
        ModelError: If the model is missing or the reference cannot run it.
        BackendUnavailable: If the reference backend is missing.
    """
    if runs < rounds or rounds < 1 or warmup < 0:
        raise ConfigError(
            f"need runs >= rounds >= 1 and warmup >= 0, got runs={runs} rounds={rounds} "
            f"warmup={warmup}"
        )
    if not (0.0 <= min_cosine <= 1.0 and 0.0 <= min_map50 <= 1.0):
        raise ConfigError(f"floors must be in [0, 1], got {min_cosine} and {min_map50}")
    path = resolve_model_path(name_or_path)
    backend_for_path(path)  # an unknown format fails here, with the formats listed
    candidates = list(candidates) if candidates is not None else default_candidates(path)
    for candidate in candidates:
        parse_device(candidate.device)
    sweep = DeviceSweep(model=str(path))
    opened: list[tuple[DeviceResult, Backend]] = []
    for position, candidate in enumerate(candidates):
        result = DeviceResult(candidate.backend, candidate.device)
        sweep.results.append(result)
        try:
            runtime = load_backend(
                path, candidate.backend, num_threads=threads, device=candidate.device
            )
        except (BackendUnavailable, ModelError, ConfigError) as error:
            if position == 0:
                raise
            result.error = str(error)
            logger.info("%s: %s", candidate, error)
            continue
        result.runs_on = str(getattr(runtime, "device", candidate.device))
        opened.append((result, runtime))
    _check_agreement(path, opened, min_cosine, min_map50)
    _time_interleaved(path, opened, runs, warmup, rounds)
    agreeing = [result for result, _ in opened if result.agrees]
    sweep.winner = min(agreeing, key=lambda r: r.latency_p50_ms) if agreeing else None
    if record and sweep.winner is not None:
        reference = sweep.results[0]
        winner = sweep.winner
        sweep.recorded_in = str(
            record_winner(
                path,
                {
                    "backend": winner.backend,
                    "device": winner.device,
                    "runs_on": winner.runs_on,
                    "latency_p50_ms": winner.latency_p50_ms,
                    "reference": f"{reference.backend} {reference.device}",
                    "reference_latency_p50_ms": reference.latency_p50_ms,
                    "cosine": winner.cosine,
                    "map50": winner.map50,
                    "threads": threads,
                },
            )
        )
    elif record:
        sweep.recorded_in = None
        logger.warning("no candidate agreed with the reference; nothing recorded")
    return sweep


def _check_agreement(
    path: Path, opened: list[tuple[DeviceResult, Backend]], min_cosine: float, min_map50: float
) -> None:
    """Sets ``cosine``, ``map50`` and ``agrees`` of every opened candidate."""
    reference_result, reference = opened[0]
    try:
        manifest = find_manifest(path, reference)
    except ModelError:
        manifest = None
    images = agreement_images()
    if manifest is not None:
        feeds = [
            {manifest.input.name: prepare_input(image, manifest.preprocess, manifest.input)[0]}
            for image in images
        ]
    else:
        feeds = [_random_feeds(reference)]
    names = [t.name for t in reference.outputs]
    expected = [reference.run(feed) for feed in feeds]
    detector = manifest is not None and manifest.task == "detect"
    reference_detections = (
        [DetectionModel(path, reference, manifest)(image) for image in images] if detector else []
    )
    for result, runtime in opened:
        try:
            outputs = [runtime.run(feed) for feed in feeds]
            result.cosine = min(
                _cosine(got[name], want[name])
                for got, want in zip(outputs, expected, strict=True)
                for name in names
            )
            if detector:
                candidate = DetectionModel(
                    path, runtime, manifest, confidence_threshold=CANDIDATE_CONFIDENCE
                )
                detections = [candidate(image) for image in images]
                result.map50 = map50_against(reference_detections, detections)
        except (ModelError, KeyError, ValueError) as error:
            result.error = f"cannot compare with the reference: {error}"
            continue
        result.agrees = result.cosine >= min_cosine and (
            result.map50 is None or result.map50 >= min_map50
        )
    reference_result.agrees = True


def _time_interleaved(
    path: Path, opened: list[tuple[DeviceResult, Backend]], runs: int, warmup: int, rounds: int
) -> None:
    """Sets ``latency_p50_ms`` and ``fps``: each candidate runs ``runs / rounds`` calls in
    turn, ``rounds`` times."""
    from ubiq.models.runtime.bench import _bench_inputs

    measured = [(result, runtime) for result, runtime in opened if result.error is None]
    feeds = {id(runtime): _bench_inputs(path, runtime) for _, runtime in measured}
    for _, runtime in measured:
        for _ in range(warmup):
            runtime.run(feeds[id(runtime)])
    times: dict[int, list[float]] = {id(runtime): [] for _, runtime in measured}
    per_round = max(1, runs // rounds)
    for _ in range(rounds):
        for _, runtime in measured:
            feed = feeds[id(runtime)]
            for _ in range(per_round):
                start = time.perf_counter()
                runtime.run(feed)
                times[id(runtime)].append((time.perf_counter() - start) * 1e3)
    for result, runtime in measured:
        samples = np.asarray(times[id(runtime)])
        result.latency_p50_ms = round(float(np.percentile(samples, 50)), 3)
        result.fps = round(1000.0 / float(samples.mean()), 2)
