"""Frames in flight: a model stage whose backend takes several frames at once starts their
inference in ``prepare`` and takes the results in order; ``ubiq detect`` does so for files."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support import CountingSource, assert_concurrent_runs_match, run_ubiq

from ubiq.errors import ConfigError
from ubiq.models.runtime.backend import choose_streams, load_backend
from ubiq.models.runtime.model import DetectionModel
from ubiq.pipelines.pipeline import Pipeline
from ubiq.pipelines.stage import Detect
from ubiq.types import Detections


def one_error_line(result) -> str:
    assert result.returncode != 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


MNV2 = Path(__file__).resolve().parents[2] / "ubiq" / "data" / "models" / "ubiq-det-mnv2.onnx"


class SlowBackend:
    """Runs several calls at once, finishing them out of order, and counts the overlap."""

    name = "onnxruntime"

    def __init__(self, streams: int) -> None:
        self.streams = streams
        self.running = 0
        self.most_at_once = 0
        self.guard = threading.Lock()


class SlowModel:
    """``prepare``/``infer``/``decode`` whose answer is the frame's own pixel value."""

    def __init__(self, streams: int) -> None:
        self.backend = SlowBackend(streams)

    def prepare(self, image):
        return int(image[0, 0, 0]), None

    def infer(self, value):
        backend = self.backend
        with backend.guard:
            backend.running += 1
            backend.most_at_once = max(backend.most_at_once, backend.running)
        time.sleep(0.004 if value % 2 else 0.012)  # odd frames overtake even ones
        with backend.guard:
            backend.running -= 1
        return [value]

    def decode(self, outputs, transform):
        x = float(outputs[0])
        return Detections(xyxy=[[x, 0, x + 1, 1]], confidence=[0.5], class_id=[0])


@pytest.mark.parametrize("streams", [1, 3])
def test_frames_in_flight_come_back_in_order_with_their_own_results(streams):
    model = SlowModel(streams)
    stage = Detect(model)
    assert stage.in_flight == streams
    results = list(Pipeline([stage]).stream(CountingSource(40)))
    assert [r.index for r in results] == list(range(40))
    assert [float(r.detections.xyxy[0, 0]) for r in results] == [float(i) for i in range(40)]
    if streams == 1:
        assert model.backend.most_at_once == 1
        assert "detect.wait" not in results[5].timings_ms
    else:
        assert 2 <= model.backend.most_at_once <= streams
        assert {"detect.inference", "detect.wait", "detect.decode"} <= set(results[5].timings_ms)
        # The inference time is the call's own, not the (shorter) wait for it.
        assert results[4].timings_ms["detect.inference"] >= 10.0


def test_an_error_inside_a_frame_in_flight_reaches_the_loop():
    class Failing(SlowModel):
        def infer(self, value):
            if value == 7:
                raise ConfigError("frame 7 is bad")
            return [value]

    with pytest.raises(ConfigError, match="frame 7 is bad"):
        list(Pipeline([Detect(Failing(2))]).stream(CountingSource(20)))


def test_choose_streams():
    cores = __import__("os").cpu_count() or 1
    assert choose_streams(True, None, None) == max(1, min(cores, 4))
    assert choose_streams(False, None, None) == 1  # a camera: no frame waits behind another
    # Several cameras: one frame per camera, each on a core of its own.
    assert choose_streams(False, None, None, sources=3) == max(1, min(3, cores, 4))
    assert choose_streams(True, 2, None) == 1  # --threads: the user's threads, one frame
    assert choose_streams(False, None, 3) == 3  # --streams wins
    with pytest.raises(ConfigError, match="streams must be an integer >= 1, got 0"):
        load_backend(MNV2, streams=0)


def test_onnxruntime_with_streams_answers_as_with_one():
    one = DetectionModel.load(MNV2, device="cpu", streams=1)
    many = DetectionModel.load(MNV2, device="cpu", streams=2)
    assert (one.backend.streams, many.backend.streams) == (1, 2)
    image = np.zeros((240, 320, 3), np.uint8)
    image[60:180, 100:220] = (40, 160, 220)
    tensor, _ = one.prepare(image)
    for a, b in zip(one.infer(tensor), many.infer(tensor), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_detect_on_a_file_runs_frames_at_once_with_the_same_jsonl(tmp_path):
    """Default (one per core) and --streams 2 write the JSONL of --streams 1, byte for byte."""
    outputs = {}
    for streams in ("1", "2", None):
        out = tmp_path / f"{streams}.jsonl"
        extra = ["--streams", streams] if streams else []
        done = run_ubiq(
            "detect", "--source", "demo", "--model", "ubiq-det-mnv2", "--jsonl", str(out),
            "--max-frames", "40", *extra,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        outputs[streams] = (out.read_bytes(), done.stderr)
    assert outputs["1"][0] == outputs["2"][0]
    assert outputs["1"][0].count(b"\n") == 40
    assert "2 frames at once" in outputs["2"][1]
    assert "frames at once" not in outputs["1"][1]
    assert outputs[None][0] == outputs["1"][0]


def test_bad_streams_is_one_line_and_touches_no_output(tmp_path):
    keep = tmp_path / "keep.jsonl"
    keep.write_text("precious\n")
    for value in ("0", "-2"):
        done = run_ubiq(
            "detect", "--source", "demo", "--model", "ubiq-det-mnv2", "--jsonl", str(keep),
            "--streams", value,
        )  # fmt: skip
        assert done.returncode != 0
        assert one_error_line(done) == f"ubiq detect: error: --streams must be >= 1, got {value}"
        assert keep.read_text() == "precious\n"


def test_litert_with_streams_keeps_one_interpreter_per_call(blazeface_path):
    one = load_backend(blazeface_path, device="cpu")
    many = load_backend(blazeface_path, device="cpu", streams=2)
    assert (one.streams, many.streams) == (1, 2)
    spec = one.inputs[0]
    rng = np.random.default_rng(0)
    feeds = [{spec.name: rng.random(spec.shape, dtype=np.float32) * 2 - 1} for _ in range(4)]
    assert_concurrent_runs_match(one, many, feeds, repeats=4)


def test_the_python_api_takes_streams_and_the_pipeline_uses_them():
    import ubiq

    model = ubiq.load_model("ubiq-det-mnv2", streams=2)
    assert model.backend.streams == 2 and ubiq.Detect(model).in_flight == 2
    single = ubiq.load_model("ubiq-det-mnv2", streams=1)
    results = [
        [r.detections.to_records() for r in ubiq.Pipeline([ubiq.Detect(m)]).stream("demo")]
        for m in (model, single)
    ]
    assert results[0] == results[1] and len(results[0]) == 150
