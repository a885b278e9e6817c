"""``ubiq export CKPT --format openvino``: IR beside the ONNX, run by the printed command."""

from __future__ import annotations

import shlex

import pytest
from support import run_ubiq

pytest.importorskip("torch")
pytest.importorskip("skimage")
pytest.importorskip("openvino", reason="openvino is not installed (ubiq[openvino])")

from ubiq.errors import ConfigError  # noqa: E402
from ubiq.models.datasets.synth import generate_detection_set  # noqa: E402
from ubiq.models.toolchain.train.trainer import TrainOptions, train  # noqa: E402


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    data = generate_detection_set(
        tmp_path_factory.mktemp("data"),
        train_images=16,
        val_images=4,
        imgsz=64,
        seed=5,
        progress=False,
    )
    options = TrainOptions(
        task="detect",
        data=str(data),
        out=str(tmp_path_factory.mktemp("run")),
        backbone="mobilenet_v2",
        width=0.25,
        epochs=1,
        imgsz=64,
        batch=8,
        threads=1,
        progress=False,
    )
    return train(options).best


def test_export_openvino_writes_ir_that_detect_runs(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("UBIQ_HOME", str(tmp_path / "home"))
    out = tmp_path / "ir" / "model.xml"
    result = run_ubiq("export", str(checkpoint), "--format", "openvino", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.is_file() and out.with_suffix(".bin").stat().st_size > 10_000
    assert out.with_suffix(".onnx").is_file()
    line = next(x for x in result.stdout.splitlines() if x.startswith("openvino: "))
    difference = float(line.split("max |openvino f32 - onnx| ")[1].split(")")[0])
    assert difference < 1e-3
    printed = shlex.split(line.split("run it with: ")[1])
    assert printed == ["ubiq", "detect", "--model", str(out)]
    detect = run_ubiq(*printed[1:], "--max-frames", "3")
    assert detect.returncode == 0, detect.stderr
    summary = detect.stderr.strip().splitlines()[-1]
    assert "(openvino, device auto: CPU " in summary and ": 3 frames" in summary, summary


def test_export_openvino_needs_an_xml_out(checkpoint, tmp_path):
    result = run_ubiq(
        "export", str(checkpoint), "--format", "openvino", "--out", str(tmp_path / "m.onnx")
    )
    assert result.returncode == ConfigError.exit_code
    expected = f"--out for --format openvino must end in .xml, got {tmp_path / 'm.onnx'}"
    assert result.stderr.strip().splitlines() == [f"ubiq export: error: {expected}"]
