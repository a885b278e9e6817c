"""The `ubiq` command line end to end, in child processes, with real models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from support import one_op_onnx, run_ubiq

from ubiq.types import iou_matrix


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """Asserts a failed run printed exactly one line (no traceback) and returns it."""
    assert result.returncode != 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_demo_finds_the_astronaut_face_in_90_percent_of_frames(blazeface_path, tmp_path):
    from ubiq.hardware.sources.demo import demo_ground_truth

    jsonl, video = tmp_path / "demo.jsonl", tmp_path / "demo.mp4"
    result = run_ubiq(
        "detect",
        "--source",
        "demo",
        "--model",
        "blazeface",
        "--jsonl",
        str(jsonl),
        "--save",
        str(video),
    )
    assert result.returncode == 0, result.stderr
    assert "150 frames" in result.stderr and "stopped by end" in result.stderr
    truth = demo_ground_truth()
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(len(truth)))
    hits = 0
    for record, box in zip(records, truth):
        assert set(record) == {"frame", "ts", "detections"}
        boxes = [d["xyxy"] for d in record["detections"]]
        assert all(d["label"] == "face" for d in record["detections"])
        if boxes and iou_matrix(np.asarray(boxes), box[None]).max() >= 0.5:
            hits += 1
    assert hits / len(truth) >= 0.9, f"face found in {hits} of {len(truth)} frames"
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == len(truth)
    capture.release()


def test_sigterm_stops_cleanly_and_keeps_outputs(blazeface_path, tmp_path):
    from ubiq.hardware.sources.demo import make_pan_zoom_clip
    from ubiq.models.runtime.bench import sample_image

    image = tmp_path / "photo.jpg"
    cv2.imwrite(str(image), sample_image())
    clip = tmp_path / "long.mp4"
    make_pan_zoom_clip(image, clip, (250, 80, 380, 230), frames=900, size=(320, 240), seed=3)
    jsonl, video = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ubiq",
            "detect",
            "--source",
            str(clip),
            "--model",
            str(blazeface_path),
            "--jsonl",
            str(jsonl),
            "--save",
            str(video),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if jsonl.exists() and len(jsonl.read_text().splitlines()) >= 10:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "stopped by signal" in stderr
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert 10 <= len(lines) < 900
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == len(lines)
    capture.release()


def test_runtime_never_imports_torch(blazeface_path, yolo_onnx, tmp_path):
    code = (
        "import sys; from ubiq.cli import main\n"
        f"assert main(['detect', '--source', 'demo', '--model', {str(yolo_onnx)!r}, "
        "'--max-frames', '3']) == 0\n"
        f"assert main(['detect', '--source', 'demo', '--model', {str(blazeface_path)!r}, "
        "'--max-frames', '3']) == 0\n"
        "heavy = [m for m in ('torch', 'torchvision', 'ultralytics') if m in sys.modules]\n"
        "print('heavy', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "heavy []" in result.stdout


def test_yolo_export_runs_from_its_onnx_metadata(yolo_onnx, tmp_path):
    # No sidecar: the labels and size come from the metadata Ultralytics writes.
    bare = tmp_path / "bare.onnx"
    bare.write_bytes(yolo_onnx.read_bytes())
    jsonl = tmp_path / "y.jsonl"
    result = run_ubiq(
        "detect",
        "--source",
        "demo",
        "--model",
        str(bare),
        "--conf",
        "0.0001",
        "--classes",
        "0,2",
        "--max-frames",
        "4",
        "--jsonl",
        str(jsonl),
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(records) == 4
    # A model built from yolov8n.yaml has no dataset: Ultralytics names its classes "0".."79".
    found = {(d["class_id"], d["label"]) for r in records for d in r["detections"]}
    assert found and found <= {(0, "0"), (2, "2")}
    for record in records:
        for detection in record["detections"]:
            x1, y1, x2, y2 = detection["xyxy"]
            assert 0 <= x1 <= x2 <= 640 and 0 <= y1 <= y2 <= 480


def test_unknown_zoo_name_suggests_close_names(ubiq_home):
    line = one_error_line(run_ubiq("detect", "--source", "demo", "--model", "blazefac"))
    assert "blazefac" in line and "blazeface" in line


def test_missing_model_file(tmp_path):
    line = one_error_line(run_ubiq("detect", "--model", str(tmp_path / "nope.onnx")))
    assert "model file not found" in line and "nope.onnx" in line


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_corrupt_model_file(tmp_path, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(b"\x00garbage, not a model" * 10)
    line = one_error_line(run_ubiq("detect", "--model", str(path)))
    assert "junk" in line and "corrupt or truncated" in line


def test_truncated_model_file(blazeface_path, tmp_path):
    data = blazeface_path.read_bytes()
    path = tmp_path / "half.tflite"
    path.write_bytes(data[: len(data) // 2])
    line = one_error_line(run_ubiq("detect", "--model", str(path)))
    assert "half.tflite" in line


def test_model_whose_outputs_no_decoder_understands(tmp_path):
    path = one_op_onnx(tmp_path / "odd.onnx", "Transpose", [1, 3, 8, 8], [8, 8, 3, 1])
    line = one_error_line(run_ubiq("detect", "--model", str(path)))
    assert "no decoder understands the outputs of odd.onnx" in line
    # one vector per image is an embedder (for `ubiq learn`), named as such
    path = one_op_onnx(tmp_path / "flat.onnx", "Flatten", [1, 3, 8, 8], [1, 192])
    line = one_error_line(run_ubiq("detect", "--model", str(path)))
    assert "flat.onnx is an 'embed' model, not a 'detect' one" in line


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{tmp}/missing.mp4", "missing.mp4"),
        ("{tmp}/empty_folder", "empty_folder"),
        ("97", "camera 97"),
        ("rtsp://127.0.0.1:9/stream", "rtsp://127.0.0.1:9/stream"),
    ],
)
def test_bad_sources(blazeface_path, tmp_path, source, expected):
    (tmp_path / "empty_folder").mkdir()
    line = one_error_line(
        run_ubiq("detect", "--model", str(blazeface_path), "--source", source.format(tmp=tmp_path))
    )
    assert expected in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--conf", "1.5"], "--conf must be between 0 and 1, got 1.5"),
        (["--classes", "fcae"], "did you mean face"),
        (["--imgsz", "640"], "--imgsz 640 does not match"),
        (["--save", "out.txt"], "unsupported video suffix"),
    ],
)
def test_bad_options(blazeface_path, args, expected):
    line = one_error_line(run_ubiq("detect", "--model", str(blazeface_path), *args))
    assert expected in line


def test_python_m_ubiq_help():
    result = subprocess.run(
        [sys.executable, "-m", "ubiq", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    for command in ("detect", "models", "bench"):
        assert command in result.stdout


def test_bench_reports_latency_and_memory(blazeface_path):
    result = run_ubiq(
        "bench", str(blazeface_path), "--runs", "20", "--warmup", "2", "--json", "--threads", "1"
    )
    assert result.returncode == 0, result.stderr
    (report,) = json.loads(result.stdout)
    assert report["backend"] == "litert" and report["input_shape"] == [1, 128, 128, 3]
    assert 0 < report["latency_p50_ms"] <= report["latency_p90_ms"]
    assert 0 < report["peak_rss_mb"] < 1000


def test_zoo_model_needing_the_yolo_extra_never_loads_torch_in_detect(tmp_path):
    # Offline the pull fails; it must fail in a child, leaving this process torch-free.
    code = (
        "import sys; from ubiq.cli import main\n"
        "code = main(['detect', '--model', 'yolov8n', '--max-frames', '1'])\n"
        "heavy = [m for m in ('torch', 'ultralytics') if m in sys.modules]\n"
        "print('exit', code, 'heavy', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "UBIQ_HOME": str(tmp_path / "empty")},
        timeout=300,
    )
    assert "heavy []" in result.stdout, result.stderr
    assert "exit 0" not in result.stdout
    assert "yolov8n" in result.stderr


def test_detect_peak_rss_stays_under_300_mb(yolo_onnx, tmp_path):
    summary = tmp_path / "summary.json"
    result = run_ubiq(
        "detect", "--source", "demo", "--model", str(yolo_onnx), "--summary-json", str(summary)
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(summary.read_text())
    assert data["frames"] == 150
    assert 30 < data["peak_rss_mb"] < 300


def test_image_folder_mixed_sizes_stride_and_relative_time(blazeface_path, tmp_path):
    from ubiq.models.runtime.bench import sample_image

    folder = tmp_path / "shots"
    folder.mkdir()
    photo = sample_image()
    for index, size in enumerate([(640, 480), (320, 320), (800, 450), (640, 480)]):
        cv2.imwrite(str(folder / f"img{index}.jpg"), cv2.resize(photo, size))
    jsonl, video = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    result = run_ubiq(
        "detect",
        "--source",
        str(folder),
        "--model",
        str(blazeface_path),
        "--jsonl",
        str(jsonl),
        "--save",
        str(video),
    )
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    assert records[0]["ts"] == 0.0 and all(0 <= r["ts"] < 60 for r in records)
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4  # none dropped for its size
    capture.release()
    strided = run_ubiq(
        "detect",
        "--source",
        str(folder),
        "--model",
        str(blazeface_path),
        "--vid-stride",
        "2",
        "--jsonl",
        str(jsonl),
    )
    assert strided.returncode == 0, strided.stderr
    assert [json.loads(line)["frame"] for line in jsonl.read_text().splitlines()] == [0, 1]


def test_failed_source_keeps_existing_outputs(blazeface_path, tmp_path):
    jsonl = tmp_path / "keep.jsonl"
    jsonl.write_text('{"frame": 0}\n')
    line = one_error_line(
        run_ubiq("detect", "--model", str(blazeface_path), "--source", "97", "--jsonl", str(jsonl))
    )
    assert "camera 97" in line
    assert jsonl.read_text() == '{"frame": 0}\n'


def test_remote_video_file_is_read_to_its_end(blazeface_path, tmp_path):
    import functools
    import http.server
    import threading

    from ubiq.models.runtime.bench import sample_image

    # MJPG in AVI streams without seeking (Python's http.server has no Range support).
    writer = cv2.VideoWriter(
        str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30, (320, 240)
    )
    photo = cv2.resize(sample_image(), (320, 240))
    for index in range(40):
        writer.write(np.roll(photo, index * 3, axis=1))
    writer.release()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        jsonl = tmp_path / "remote.jsonl"
        result = run_ubiq(
            "detect",
            "--model",
            str(blazeface_path),
            "--jsonl",
            str(jsonl),
            "--source",
            f"http://127.0.0.1:{server.server_address[1]}/clip.avi",
            timeout=60,
        )
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    frames = [json.loads(line)["frame"] for line in jsonl.read_text().splitlines()]
    assert frames == list(range(40))
    assert "0 reconnects" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--classes", ","], "--classes must name at least one class"),
        (["--classes", "5"], "id 5 is out of range"),
        (["--summary-json", "/proc/version/s.json"], "--summary-json: cannot create"),
    ],
)
def test_more_bad_options(blazeface_path, args, expected):
    line = one_error_line(run_ubiq("detect", "--model", str(blazeface_path), *args))
    assert expected in line


def test_imgsz_must_suit_the_model(yolo_onnx):
    line = one_error_line(run_ubiq("detect", "--model", str(yolo_onnx), "--imgsz", "333"))
    assert "--imgsz must be a positive multiple of 32, got 333" in line


def test_bench_times_a_model_without_a_decoder(tmp_path):
    path = one_op_onnx(tmp_path / "relu.onnx", "Relu", [1, 3, 16, 16], [1, 3, 16, 16])
    result = run_ubiq("bench", str(path), "--runs", "5", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["input_shape"] == [1, 3, 16, 16]


def _colour_classifier(path):
    """A 3-class classifier (blue, green, red) whose logits are the image's mean B, G, R."""
    onnx = pytest.importorskip("onnx")
    from ubiq.manifest import DecoderSpec, InputSpec, ModelManifest, Preprocess, manifest_path_for

    helper, float_type = onnx.helper, onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["scores"]),
        ],
        "colours",
        [helper.make_tensor_value_info("images", float_type, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("scores", float_type, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    ModelManifest(
        name="colours",
        task="classify",
        format="onnx",
        input=InputSpec("images", (1, 3, 8, 8)),
        preprocess=Preprocess(8, 8, "stretch", 0, (0.0,) * 3, (255.0,) * 3, "bgr"),
        decoder=DecoderSpec("softmax"),
        labels=("blue", "green", "red"),
    ).save(manifest_path_for(path))
    return path


def test_val_scores_a_classifier_on_an_image_folder(tmp_path):
    model = _colour_classifier(tmp_path / "colours.onnx")
    for name, colour in (("blue", (255, 0, 0)), ("green", (0, 255, 0)), ("red", (0, 0, 255))):
        (tmp_path / "set" / "val" / name).mkdir(parents=True)
        cv2.imwrite(
            str(tmp_path / "set" / "val" / name / "a.png"), np.full((9, 9, 3), colour, np.uint8)
        )
    cv2.imwrite(str(tmp_path / "set" / "val" / "red" / "b.png"), np.full((9, 9, 3), 200, np.uint8))
    result = run_ubiq("val", str(model), "--data", str(tmp_path / "set"), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 4 and report["top1"] == 0.75 and "task" not in report
    assert report["per_class_top1"] == {"blue": 1.0, "green": 1.0, "red": 0.5}
    table = run_ubiq("val", str(model), "--data", str(tmp_path / "set"), "--threads", "1")
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].startswith("colours.onnx on 4 val images: top-1 0.750")
    assert "red              top-1 0.500" in table.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--conf", "1.5"], "--conf must be between 0 and 1, got 1.5"),
        (["--iou", "-0.1"], "--iou must be between 0 and 1, got -0.1"),
        (["--max-det", "0"], "--max-det must be >= 1, got 0"),
    ],
)
def test_val_bad_flags_are_one_line_naming_the_flag(tmp_path, args, expected):
    line = one_error_line(run_ubiq("val", "model.onnx", "--data", str(tmp_path), *args))
    assert expected in line
    missing = one_error_line(run_ubiq("val", "model.onnx", "--data", str(tmp_path / "no")))
    assert f"--data {tmp_path / 'no'} does not exist" in missing


def test_bench_runs_each_model_in_a_child_and_reports_its_error(tmp_path):
    first = one_op_onnx(tmp_path / "relu.onnx", "Relu", [1, 3, 16, 16], [1, 3, 16, 16])
    second = one_op_onnx(tmp_path / "sig.onnx", "Sigmoid", [1, 3, 8, 8], [1, 3, 8, 8])
    result = run_ubiq("bench", str(first), str(second), "--runs", "3", "--warmup", "1", "--json")
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    assert [r["input_shape"] for r in reports] == [[1, 3, 16, 16], [1, 3, 8, 8]]
    assert all(r["peak_rss_mb"] > 10 for r in reports)
    failed = run_ubiq("bench", str(first), str(tmp_path / "missing.onnx"), "--runs", "2")
    assert failed.returncode == 4
    assert "ubiq bench: error: model file not found" in one_error_line(failed)


def test_compress_data_flags_are_checked_with_their_names(tmp_path):
    model = _colour_classifier(tmp_path / "colours.onnx")
    out = str(tmp_path / "out")
    args = ["compress", str(model), "--quantize", "int8", "--out", out]
    assert "--quantize int8 needs --calib DATA" in one_error_line(run_ubiq(*args))
    missing = one_error_line(run_ubiq(*args, "--calib", str(tmp_path), "--val", "nowhere"))
    assert "--val nowhere does not exist" in missing


def test_building_the_parser_imports_no_heavy_module():
    """OpenCV must be configured (quiet_native_logs) before its first import, and --help must
    stay fast: the parser of every command is built without OpenCV, scipy, torch or
    OpenVINO."""
    code = (
        "import sys\n"
        "from ubiq.cli import build_parser\n"
        "parser = build_parser()\n"
        "heavy = [m for m in ('cv2', 'scipy', 'torch', 'openvino') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from ubiq.models.runtime.segment import INTERPOLATIONS\n"
        "segment = parser._subparsers._group_actions[0].choices['segment']\n"
        "(option,) = [a for a in segment._actions if a.dest == 'interpolation']\n"
        "assert tuple(option.choices) == INTERPOLATIONS, option.choices\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
