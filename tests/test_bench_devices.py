"""``ubiq bench MODEL --devices all`` and ``--device auto`` by measurement: a fake slow, a fake
disagreeing and a fake fast backend beside the real ones, on the shipped detector."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from support import run_ubiq

from ubiq.errors import ConfigError
from ubiq.models.runtime import backend as backend_module
from ubiq.models.runtime.backend import load_backend
from ubiq.models.runtime.device_sweep import Candidate, bench_devices, default_candidates
from ubiq.models.runtime.model import DetectionModel
from ubiq.models.runtime.onnxruntime_backend import OnnxRuntimeBackend
from ubiq.models.runtime.winners import (
    fingerprint_key,
    machine_fingerprint,
    recorded_winner,
    winners_path,
)

MNV2 = Path(__file__).resolve().parents[1] / "ubiq" / "data" / "models" / "ubiq-det-mnv2.onnx"


class SlowBackend(OnnxRuntimeBackend):
    """onnxruntime, 30 ms slower per call: agrees, loses."""

    name = "fake-slow"

    def run(self, feeds):
        time.sleep(0.03)
        return super().run(feeds)


class WrongBackend(OnnxRuntimeBackend):
    """Instant, with outputs that are not the model's: fastest, disagrees."""

    name = "fake-wrong"

    def run(self, feeds):
        generator = np.random.default_rng(0)
        return {t.name: generator.random(t.shape).astype(t.dtype) for t in self.outputs}


class ShyBackend(OnnxRuntimeBackend):
    """onnxruntime with every class score 10% lower, as a lower precision may shift them:
    the same boxes in the same order, some of them now under the threshold."""

    name = "fake-shy"

    def run(self, feeds):
        outputs = dict(super().run(feeds))
        scores = outputs["output0"].copy()
        scores[:, 4:, :] *= 0.9
        outputs["output0"] = scores
        return outputs


class FastBackend(OnnxRuntimeBackend):
    """onnxruntime that remembers its answer per input: the same outputs, faster."""

    name = "fake-fast"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._memory: dict[bytes, dict] = {}

    def run(self, feeds):
        key = b"".join(a.tobytes() for a in feeds.values())
        if key not in self._memory:
            self._memory[key] = super().run(feeds)
        return self._memory[key]


@pytest.fixture(autouse=True)
def _ubiq_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "ubiq_home"
    monkeypatch.setenv("UBIQ_HOME", str(home))
    return home


@pytest.fixture
def fakes(monkeypatch):
    for name in ("SlowBackend", "WrongBackend", "FastBackend", "ShyBackend"):
        cls = globals()[name]
        monkeypatch.setitem(backend_module.BACKENDS, cls.name, f"{__name__}:{name}")


@pytest.fixture
def mnv2(tmp_path: Path) -> Path:
    return Path(shutil.copy(MNV2, tmp_path / "mnv2.onnx"))


CANDIDATES = [
    Candidate("onnxruntime", "cpu"),
    Candidate("fake-slow", "cpu"),
    Candidate("fake-wrong", "cpu"),
    Candidate("fake-fast", "cpu"),
]


def test_agreement_ranks_the_candidates_boxes_as_map_does(fakes, mnv2):
    """Scores shifted down a little (boxes and order the same) still agree: mAP50 ranks the
    candidate's boxes below the threshold too, as mAP is computed; cut at the threshold,
    the same detections would count as misses."""
    from ubiq.models.runtime.device_sweep import agreement_images, map50_against

    candidates = [Candidate("onnxruntime", "cpu"), Candidate("fake-shy", "cpu")]
    sweep = bench_devices(mnv2, candidates=candidates, runs=2, warmup=1, rounds=1, record=False)
    shy = sweep.results[1]
    assert shy.agrees and shy.map50 == pytest.approx(1.0) and shy.cosine > 0.99
    reference = DetectionModel.load(mnv2, backend="onnxruntime", device="cpu")
    cut = DetectionModel.load(mnv2, backend="fake-shy", device="cpu")
    images = agreement_images()
    assert map50_against([reference(i) for i in images], [cut(i) for i in images]) < 0.98


def test_auto_picks_the_fastest_agreeing_backend(fakes, mnv2):
    sweep = bench_devices(mnv2, candidates=CANDIDATES, runs=20, warmup=2, rounds=4, threads=1)
    by_name = {r.backend: r for r in sweep.results}
    assert list(by_name) == ["onnxruntime", "fake-slow", "fake-wrong", "fake-fast"]
    assert by_name["fake-wrong"].agrees is False and by_name["fake-wrong"].cosine < 0.9
    assert by_name["fake-slow"].agrees and by_name["fake-slow"].map50 == pytest.approx(1.0)
    assert by_name["fake-slow"].latency_p50_ms > by_name["onnxruntime"].latency_p50_ms + 20
    assert by_name["fake-wrong"].latency_p50_ms < by_name["onnxruntime"].latency_p50_ms
    assert sweep.winner is by_name["fake-fast"]
    record = recorded_winner(mnv2)
    assert record["backend"] == "fake-fast" and record["device"] == "cpu"
    assert record["fingerprint"] == machine_fingerprint()
    assert Path(sweep.recorded_in) == winners_path()

    runtime = load_backend(mnv2, num_threads=1)  # --device auto
    assert isinstance(runtime, FastBackend)
    assert runtime.device_reason.startswith(
        "device auto: fake-fast cpu (fastest agreeing in ubiq bench --devices all: "
    )
    model = DetectionModel.load(mnv2)
    assert model.backend.name == "fake-fast"
    # An explicit device or another backend ignores the record.
    assert load_backend(mnv2, device="cpu").name == "onnxruntime"
    assert load_backend(mnv2, "onnxruntime").name == "onnxruntime"


def test_without_a_record_auto_keeps_todays_order(mnv2):
    assert recorded_winner(mnv2) is None
    runtime = load_backend(mnv2)
    assert runtime.name == "onnxruntime"
    assert runtime.device_reason.startswith("device auto: cpu (")


def test_a_record_from_another_machine_is_not_used(fakes, mnv2, monkeypatch):
    bench_devices(mnv2, candidates=CANDIDATES, runs=8, warmup=1, rounds=2)
    assert recorded_winner(mnv2)["backend"] == "fake-fast"
    key = fingerprint_key()
    monkeypatch.setattr(
        "ubiq.models.runtime.winners.machine_fingerprint", lambda: {"cpu": "another box"}
    )
    assert fingerprint_key() != key
    assert recorded_winner(mnv2) is None
    assert load_backend(mnv2).name == "onnxruntime"


def test_a_recorded_winner_that_fails_falls_back(fakes, mnv2, monkeypatch, caplog):
    bench_devices(mnv2, candidates=CANDIDATES, runs=8, warmup=1, rounds=2)
    monkeypatch.delitem(backend_module.BACKENDS, "fake-fast")
    assert load_backend(mnv2).name == "onnxruntime"  # not registered: no longer a winner
    monkeypatch.setitem(backend_module.BACKENDS, "fake-fast", f"{__name__}:Missing")
    with caplog.at_level("WARNING"):
        assert load_backend(mnv2).name == "onnxruntime"
    assert "recorded winner fake-fast cpu failed" in caplog.text


def test_the_reference_wins_when_nothing_else_agrees(fakes, mnv2):
    sweep = bench_devices(mnv2, candidates=CANDIDATES[:3:2], runs=4, warmup=0, rounds=2)
    assert [r.agrees for r in sweep.results] == [True, False]
    assert sweep.winner is sweep.results[0]
    assert recorded_winner(mnv2)["backend"] == "onnxruntime"
    with pytest.raises(ConfigError, match="floors must be in"):
        bench_devices(mnv2, candidates=CANDIDATES, min_map50=1.5)


def test_default_candidates_list_what_is_here(mnv2):
    candidates = default_candidates(mnv2)
    assert candidates[0] == Candidate("onnxruntime", "cpu")
    try:
        import openvino
    except ImportError:
        return
    for name in openvino.Core().available_devices:
        assert Candidate("openvino", f"openvino:{name}") in candidates


def test_cli_devices_all_then_detect_auto_says_so(mnv2):
    pytest.importorskip("openvino", reason="openvino is not installed")
    result = run_ubiq("bench", str(mnv2), "--devices", "all", "--runs", "20", "--warmup", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[2].startswith("onnxruntime  cpu") and "yes" in lines[2]
    assert any(line.startswith("openvino     openvino:CPU:f32") for line in lines)
    winner_line = lines[-1]
    assert winner_line.startswith("winner: ") and "--device auto now uses it" in winner_line
    record = json.loads(winners_path().read_text())
    (entry,) = record.values()
    detect = run_ubiq("detect", "--model", str(mnv2), "--max-frames", "2")
    assert detect.returncode == 0, detect.stderr
    summary = detect.stderr.splitlines()[-1]
    assert f"({entry['backend']}, device auto: " in summary
    assert "fastest agreeing in ubiq bench --devices all" in summary


def test_cli_devices_list_and_bad_values(mnv2):
    result = run_ubiq("bench", str(mnv2), "--devices", "cpu", "--runs", "4", "--json")
    assert result.returncode == 0, result.stderr
    sweep = json.loads(result.stdout)
    assert [r["device"] for r in sweep["results"]] == ["cpu"]
    assert sweep["winner"]["backend"] == "onnxruntime"
    bad = run_ubiq("bench", str(mnv2), "--devices", "cpu,tpu")
    assert bad.returncode == ConfigError.exit_code
    assert len(bad.stderr.strip().splitlines()) == 1 and "'tpu'" in bad.stderr
