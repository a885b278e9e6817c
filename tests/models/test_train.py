"""ubiq train and ubiq export on a tiny generated set: files, resume, errors, ONNX in detect."""

import json
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from support import run_ubiq

torch = pytest.importorskip("torch")
pytest.importorskip("skimage")

from ubiq.models.datasets.synth import generate_detection_set  # noqa: E402
from ubiq.models.toolchain.train.trainer import TrainOptions, decode_predictions, train  # noqa: E402

TINY = ["--backbone", "mobilenet_v2", "--width", "0.25", "--imgsz", "64", "--batch", "4"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-data")
    return generate_detection_set(
        out, train_images=32, val_images=8, imgsz=64, seed=3, progress=False
    )


@pytest.fixture(scope="module")
def tiny_run(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-run")
    options = TrainOptions(
        task="detect",
        data=str(tiny_data),
        out=str(out),
        backbone="mobilenet_v2",
        width=0.25,
        epochs=2,
        imgsz=64,
        batch=8,
        threads=1,
        progress=False,
    )
    return train(options)


def test_training_writes_weights_results_and_curves(tiny_run):
    assert tiny_run.best.is_file() and tiny_run.last.is_file()
    assert (tiny_run.out / "results.png").stat().st_size > 1000
    rows = (tiny_run.out / "results.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("epoch,train_loss")
    assert [row["epoch"] for row in tiny_run.history] == [1, 2]
    for key in ("map50", "map50_95", "precision", "recall"):
        assert 0.0 <= tiny_run.metrics[key] <= 1.0
    assert tiny_run.metrics["map50"] >= tiny_run.metrics["map50_95"]
    checkpoint = torch.load(tiny_run.last, weights_only=False)
    assert checkpoint["epoch"] == 2 and checkpoint["config"]["labels"]


def _train_cli(*args, env=None):
    return [sys.executable, "-m", "ubiq", "train", "--task", "detect", *TINY, *args]


def test_stopped_run_resumes_to_the_same_weights(tiny_data, tmp_path):
    common = ["--data", str(tiny_data), "--epochs", "4", "--threads", "1", "--quiet"]
    straight = subprocess.run(
        _train_cli(*common, "--out", str(tmp_path / "straight")),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert straight.returncode == 0, straight.stderr
    stopped_dir = tmp_path / "stopped"
    process = subprocess.Popen(
        _train_cli(*common, "--out", str(stopped_dir)),
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    last = stopped_dir / "weights" / "last.pt"
    deadline = time.monotonic() + 240
    while not last.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("ubiq train")]
    assert len(lines) == 1 and "--resume" in lines[0] and "stopped in epoch" in lines[0]
    resumed = run_ubiq("train", "--resume", "--out", str(stopped_dir), "--quiet", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "straight" / "weights" / "last.pt", weights_only=False)
    b = torch.load(last, weights_only=False)
    assert b["epoch"] == 4 and len(b["history"]) == 4
    for name, tensor in a["model"].items():
        assert torch.allclose(tensor.float(), b["model"][name].float(), atol=1e-5), name


def _broken_copy(tiny_data, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(tiny_data.parent, root)
    text = (root / "data.yaml").read_text().replace(str(tiny_data.parent), str(root))
    (root / "data.yaml").write_text(text)
    return root


def _one_line_error(result, code, *needles):
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_missing_label_file_is_one_line(tiny_data, tmp_path):
    root = _broken_copy(tiny_data, tmp_path)
    victim = sorted((root / "labels" / "train").glob("*.txt"))[2]
    victim.unlink()
    result = run_ubiq(
        "train",
        "--task",
        "detect",
        "--data",
        str(root / "data.yaml"),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
        *TINY,
    )
    _one_line_error(result, 6, "missing label file", victim.name)


def test_class_out_of_range_is_one_line(tiny_data, tmp_path):
    root = _broken_copy(tiny_data, tmp_path)
    victim = sorted((root / "labels" / "val").glob("*.txt"))[0]
    victim.write_text("99 0.5 0.5 0.2 0.2\n")
    result = run_ubiq(
        "train",
        "--task",
        "detect",
        "--data",
        str(root / "data.yaml"),
        "--out",
        str(tmp_path / "run"),
        "--quiet",
        *TINY,
    )
    _one_line_error(result, 6, "99", "out of range", victim.name)


def test_unknown_backbone_and_bad_image_size_are_one_line(tiny_data, tmp_path):
    base = ["train", "--task", "detect", "--data", str(tiny_data), "--out", str(tmp_path / "r")]
    result = run_ubiq(*base, "--backbone", "mobilenet_v9", "--quiet")
    _one_line_error(result, 2, "mobilenet_v9")
    result = run_ubiq(*base, "--imgsz", "300", "--quiet")
    _one_line_error(result, 2, "300", "not divisible by the stride 32")


def _clip(tiny_data, path):
    images = sorted((tiny_data.parent / "images" / "val").glob("*.jpg"))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for image in images:
        writer.write(cv2.imread(str(image)))
    writer.release()
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    assert len(frames) == len(images)
    return frames


def test_onnx_export_runs_in_ubiq_detect_with_the_torch_boxes(tiny_run, tiny_data, tmp_path):
    from ubiq.models.runtime.preprocess import prepare_input
    from ubiq.models.toolchain.export.onnx_export import export_onnx, load_checkpoint

    result = export_onnx(tiny_run.best, tmp_path / "tiny.onnx")
    assert result.max_abs_diff < 1e-4
    manifest = json.loads(result.manifest_path.read_text())
    assert manifest["decoder"] == {"name": "yolo", "params": {"num_classes": 6}} or (
        manifest["decoder"]["name"] == "yolo"
    )
    frames = _clip(tiny_data, tmp_path / "val.avi")
    jsonl = tmp_path / "detections.jsonl"
    detect = run_ubiq(
        "detect",
        "--source",
        str(tmp_path / "val.avi"),
        "--model",
        str(result.path),
        "--conf",
        "0.01",
        "--jsonl",
        str(jsonl),
        timeout=180,
    )
    assert detect.returncode == 0, detect.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == len(frames)
    model, _, _ = load_checkpoint(tiny_run.best)
    compared = 0
    for frame, record in zip(frames, records):
        tensor, transform = prepare_input(frame, result.manifest.preprocess, result.manifest.input)
        with torch.no_grad():
            prediction = model.predict(torch.from_numpy(tensor)).numpy()
        raw = decode_predictions(
            prediction, (64, 64), confidence_threshold=0.01, iou_threshold=0.45
        )
        expected = transform.to_source(raw.xyxy)
        got = np.array([d["xyxy"] for d in record["detections"]], np.float32).reshape(-1, 4)
        clear = np.abs(raw.confidence - 0.01) > 1e-4  # scores on the threshold may flip
        if clear.all():
            assert got.shape == expected.shape
            # Equal scores may come out in either order: compare as sets of boxes.
            distance = np.abs(got[:, None, :] - expected[None, :, :]).max(-1)
            assert (distance.min(1) <= 0.05).all() and (distance.min(0) <= 0.05).all()
            compared += len(got)
    assert compared > 0  # the comparison above really ran on some boxes


def test_classifier_learns_real_handwritten_digits(tmp_path):
    from ubiq.models.datasets.classify import make_digits_set

    root = make_digits_set(tmp_path / "digits", size=32)
    options = TrainOptions(
        task="classify",
        data=str(root),
        out=str(tmp_path / "run"),
        backbone="mobilenet_v2",
        width=0.35,
        epochs=6,
        imgsz=32,
        batch=32,
        threads=1,
        progress=False,
    )
    result = train(options)
    # Ten classes: chance is 0.10; six short epochs on 1,437 real digits do far better.
    assert result.metrics["top1"] > 0.5
    assert len(result.history) == 6
    # The export scores through `ubiq val` (deployment preprocessing, no torch) as
    # training scored the checkpoint, and `ubiq compress` gates on that top-1.
    exported = run_ubiq("export", str(result.best), "--out", str(tmp_path / "digits.onnx"))
    assert exported.returncode == 0, exported.stderr
    scored = run_ubiq("val", str(tmp_path / "digits.onnx"), "--data", str(root), "--json")
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["images"] == len(list((root / "val").rglob("*.png")))
    assert set(report["per_class_top1"]) == set("0123456789")
    assert report["top1"] == pytest.approx(result.metrics["top1"], abs=1.5 / report["images"])
    compressed = run_ubiq(
        "compress",
        str(tmp_path / "digits.onnx"),
        "--quantize",
        "int8",
        "--calib",
        str(root / "train"),
        "--val",
        str(root),
        "--threads",
        "1",
        "--out",
        str(tmp_path / "q"),
        timeout=600,
    )
    assert compressed.returncode == 0, compressed.stderr[-2000:]
    fp32 = json.loads((tmp_path / "q" / "report.json").read_text())["artifacts"][0]
    assert fp32["metric_name"] == "top-1"
    assert fp32["metric"] == pytest.approx(100 * report["top1"], abs=1e-6)
    # a detector's data.yaml is not a classification set, and a folder is not a data.yaml
    wrong = run_ubiq("val", "ubiq-det-mnv2", "--data", str(root))
    assert wrong.returncode == 2 and "a detect model needs a data.yaml" in wrong.stderr


def test_segmenter_trains_and_exports_within_1e_4(tiny_data, tmp_path):
    from ubiq.models.toolchain.export.onnx_export import export_onnx

    options = TrainOptions(
        task="segment",
        data=str(tiny_data),
        out=str(tmp_path / "run"),
        backbone="mobilenet_v3_small",
        width=0.5,
        epochs=1,
        imgsz=64,
        batch=8,
        threads=1,
        progress=False,
    )
    result = train(options)
    assert 0.0 <= result.metrics["miou"] <= 1.0
    exported = export_onnx(result.best, tmp_path / "seg.onnx")
    assert exported.max_abs_diff < 1e-4
    assert exported.manifest.task == "segment"
    assert exported.manifest.labels[0] == "background"
    # `ubiq val` (deployment runtime, no torch) scores the export as training scored it.
    scored = run_ubiq("val", str(tmp_path / "seg.onnx"), "--data", str(tiny_data), "--json")
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["images"] == 8 and "background" in report["per_class_iou"]
    assert report["miou"] == pytest.approx(result.metrics["miou"], abs=1e-3)


def test_ubiq_val_scores_the_export_as_training_scored_the_checkpoint(
    tiny_run, tiny_data, tmp_path
):
    from ubiq.models.toolchain.export.onnx_export import export_onnx

    exported = export_onnx(tiny_run.best, tmp_path / "tiny.onnx")
    result = run_ubiq("val", str(exported.path), "--data", str(tiny_data), "--json")
    assert result.returncode == 0, result.stderr
    scored = json.loads(result.stdout)
    assert scored["images"] == 8
    assert scored["map50"] == pytest.approx(tiny_run.metrics["map50"], abs=2e-3)
    assert scored["map50_95"] == pytest.approx(tiny_run.metrics["map50_95"], abs=2e-3)


def test_ubiq_val_rejects_a_dataset_with_other_classes(tiny_run, tmp_path):
    from ubiq.models.toolchain.export.onnx_export import export_onnx

    exported = export_onnx(tiny_run.best, tmp_path / "tiny.onnx")
    other = generate_detection_set(
        tmp_path / "other", train_images=2, val_images=2, imgsz=64, seed=1, progress=False
    )
    text = other.read_text().replace("nc: 6", "nc: 7")
    other.write_text(
        text.split("names:")[0] + "names: [cat, cup, rocket, motorcycle, astronaut, coin, dog]\n"
    )
    result = run_ubiq("val", str(exported.path), "--data", str(other))
    assert result.returncode != 0
    assert "classes" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_arch_yolov8n_trains_through_ultralytics_on_the_same_data(tiny_data, tmp_path):
    pytest.importorskip("ultralytics")
    out = tmp_path / "yolo"
    result = run_ubiq(
        "train",
        "--task",
        "detect",
        "--arch",
        "yolov8n",
        "--data",
        str(tiny_data),
        "--epochs",
        "1",
        "--imgsz",
        "64",
        "--batch",
        "8",
        "--out",
        str(out),
        env={"YOLO_CONFIG_DIR": str(tmp_path / "yolo-settings")},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "weights" / "best.pt").is_file() and (out / "results.csv").is_file()
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["labels"] == ["cat", "cup", "rocket", "motorcycle", "astronaut", "coin"]
    assert manifest["license"] == "AGPL-3.0"
    scored = run_ubiq("val", str(out / "model.onnx"), "--data", str(tiny_data), "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["images"] == 8


def test_tflite_float_and_int8_exports_run_in_ubiq_val(tiny_run, tiny_data, tmp_path):
    pytest.importorskip("litert_torch", reason="litert-torch (TFLite export) is not installed")
    pytest.importorskip("ai_edge_quantizer", reason="ai-edge-quantizer is not installed")
    out = tmp_path / "tiny.onnx"
    result = run_ubiq(
        "export",
        str(tiny_run.best),
        "--format",
        "tflite",
        "--int8",
        "--calib",
        str(tiny_data),
        "--out",
        str(out),
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tflite int8:" in result.stdout
    int8 = tmp_path / "tiny_int8.tflite"
    manifest = json.loads(int8.with_suffix(".json").read_text())
    assert manifest["format"] == "tflite" and manifest["input"]["dtype"] == "int8"
    assert manifest["input"]["layout"] == "NHWC" and manifest["preprocess"]["quantization"]
    scores = {}
    for name in ("tiny.onnx", "tiny_float32.tflite", "tiny_int8.tflite"):
        scored = run_ubiq("val", str(tmp_path / name), "--data", str(tiny_data), "--json")
        assert scored.returncode == 0, scored.stderr
        scores[name] = json.loads(scored.stdout)["map50"]
    # The float TFLite file scores as the ONNX one; int8 runs through the same decoder.
    assert scores["tiny_float32.tflite"] == pytest.approx(scores["tiny.onnx"], abs=1e-3)
    assert 0.0 <= scores["tiny_int8.tflite"] <= 1.0
    # LiteRT hands the decoder dequantized outputs: scores in [0, 1], boxes as fractions.
    from ubiq.models.runtime.model import DetectionModel

    model = DetectionModel.load(str(int8), confidence_threshold=0.0)
    tensor, _ = model.prepare(
        cv2.imread(str(next((tiny_data.parent / "images" / "val").iterdir())))
    )
    (output,) = model.infer(tensor)
    assert output.dtype == np.float32 and output.shape[1] == 4 + 6
    assert output[0, 4:].min() >= 0.0 and output[0, 4:].max() <= 1.0 + 1e-6
    assert output[0, :2].max() <= 1.5 and output[0, :2].min() >= -0.5
