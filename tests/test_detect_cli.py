"""`ubiq detect` on the pipeline composition: argument checks, image outputs, several
sources, and the README's Python example."""

import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from support import REPO, run_ubiq


def one_error_line(result):
    assert result.returncode not in (0, 134), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--max-frames", "0"], "--max-frames must be >= 1, got 0"),
        (["--max-frames", "-1"], "--max-frames must be >= 1, got -1"),
        (["--vid-stride", "0"], "--vid-stride must be >= 1, got 0"),
        (["--conf", "1.5"], "--conf must be between 0 and 1, got 1.5"),
        (["--iou", "-0.1"], "--iou must be between 0 and 1, got -0.1"),
        (["--threads", "0"], "--threads must be >= 1, got 0"),
        (["--imgsz", "0"], "--imgsz must be a positive multiple"),
        (["--classes", ","], "--classes must name at least one class"),
        (["--save", "out.txt"], "--save: unsupported video suffix '.txt'"),
        (["--source", "demo", "--source", "demo"], "names the same source twice"),
        (["--source", "no/such/clip.mp4"], "no/such/clip.mp4"),
        (["--model", "no/such/model.onnx"], "model file not found"),
        (["--device", "quantum"], "quantum"),
    ],
)
def test_no_bad_argument_touches_an_existing_output(blazeface_path, tmp_path, args, expected):
    jsonl, video, summary = tmp_path / "keep.jsonl", tmp_path / "keep.mp4", tmp_path / "s.json"
    images = tmp_path / "shots"
    images.mkdir()
    for path, text in ((jsonl, "{}\n"), (video, "video"), (summary, "{}"), (images / "a", "x")):
        path.write_text(text)
    common = ["--model", str(blazeface_path), "--jsonl", str(jsonl), "--summary-json"]
    outputs = [str(summary), "--save-images", str(images)]
    if "--save" not in args:
        outputs += ["--save", str(video)]
    line = one_error_line(run_ubiq("detect", *common, *outputs, *args))
    assert expected in line
    assert jsonl.read_text() == "{}\n" and video.read_text() == "video"
    assert summary.read_text() == "{}" and os.listdir(images) == ["a"]


def test_a_folder_of_images_gives_file_names_stable_frame_numbers_and_annotated_images(
    blazeface_path, tmp_path
):
    from skimage import data

    folder = tmp_path / "shots"
    folder.mkdir()
    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(folder / "1-face.jpg"), face)
    (folder / "2-broken.jpg").write_bytes(b"not a jpeg")
    cv2.imwrite(str(folder / "3-face.png"), cv2.resize(face, (256, 256)))
    original = (folder / "1-face.jpg").read_bytes()
    jsonl, out = tmp_path / "out.jsonl", tmp_path / "annotated"
    result = run_ubiq(
        "detect", "--model", str(blazeface_path), "--source", str(folder),
        "--jsonl", str(jsonl), "--save-images", str(out),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [(r["frame"], os.path.basename(r["file"])) for r in records] == [
        (0, "1-face.jpg"),
        (2, "3-face.png"),
    ]
    assert all(len(r["detections"]) == 1 for r in records)
    assert sorted(os.listdir(out)) == ["1-face.jpg", "3-face.png"]
    drawn = cv2.imread(str(out / "1-face.jpg"))
    assert drawn.shape == face.shape
    assert np.abs(drawn.astype(int) - face).max() > 100  # a box is drawn on the face
    again = run_ubiq(
        "detect", "--model", str(blazeface_path), "--source", str(folder),
        "--save-images", str(folder),
    )  # fmt: skip
    assert "is the source itself" in one_error_line(again)
    pattern = run_ubiq(
        "detect", "--model", str(blazeface_path), "--source", str(folder / "*.jpg"),
        "--save-images", str(folder),
    )  # fmt: skip
    assert "is the folder the images come from" in one_error_line(pattern)
    assert (folder / "1-face.jpg").read_bytes() == original


def test_two_sources_side_by_side_write_their_own_outputs(blazeface_path, tmp_path):
    from skimage import data

    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(folder / name), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    jsonl, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    result = run_ubiq(
        "detect", "--model", str(blazeface_path), "--source", "demo", "--source", str(folder),
        "--jsonl", str(jsonl), "--summary-json", str(summary),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    first = [json.loads(x) for x in (tmp_path / "out-1.jsonl").read_text().splitlines()]
    second = [json.loads(x) for x in (tmp_path / "out-2.jsonl").read_text().splitlines()]
    assert len(first) == 150 and [r["file"][-5:] for r in second] == ["a.jpg", "b.jpg"]
    assert all(len(r["detections"]) == 1 for r in second)
    assert not jsonl.exists()
    data = json.loads(summary.read_text())
    assert [(d["source"], d["frames"]) for d in data] == [("demo", 150), (str(folder), 2)]
    assert len(re.findall(r"ubiq detect: blazeface .* on ", result.stderr)) == 2
    assert "demo: stages p50/p90: detect.prepare" in result.stderr


def test_readme_python_example_runs(blazeface_path, tmp_path):
    """The README's Python example, run as a user would (in a fresh interpreter)."""
    text = (REPO / "README.md").read_text()
    code = re.search(r"## Python\n.*?```python\n(.*?)```", text, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("60 frames in")
    faces = [line for line in lines[:-1] if " face " in line]
    assert len(faces) >= 55  # one face on (nearly) every frame of the demo clip
    capture = cv2.VideoCapture(str(tmp_path / "runs" / "api" / "faces.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 60
    capture.release()


def test_import_ubiq_stays_light():
    code = (
        "import sys, ubiq\n"
        "heavy = ('cv2', 'onnxruntime', 'ai_edge_litert', 'torch', 'ultralytics')\n"
        "assert not [m for m in heavy if m in sys.modules], sys.modules.keys()\n"
        "assert callable(ubiq.Pipeline) and callable(ubiq.load_model)\n"
        "assert not [m for m in heavy if m in sys.modules], sys.modules.keys()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
