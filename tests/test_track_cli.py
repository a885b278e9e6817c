"""`ubiq track` through the real CLI: tracking on a video, public-detection mode, its bad
input, and `ubiq val --task track`."""

import json

import pytest
from support import run_ubiq

from ubiq.pipelines.track import synthetic


def one_error_line(result):
    assert result.returncode not in (0, 134), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_track_on_the_demo_gives_ids_trails_and_track_events(blazeface_path, tmp_path):
    jsonl, video = tmp_path / "t.jsonl", tmp_path / "t.mp4"
    result = run_ubiq(
        "track",
        "--model",
        str(blazeface_path),
        "--max-frames",
        "45",
        "--jsonl",
        str(jsonl),
        "--save",
        str(video),
    )
    assert result.returncode == 0, result.stderr
    assert "track " in result.stderr and "events track.end" in result.stderr
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    frames = [r for r in records if "detections" in r]
    assert len(frames) == 45
    ids = {d["track_id"] for f in frames for d in f["detections"]}
    # The demo face is one person: one identity for the whole clip.
    assert ids == {1}
    starts = [r for r in records if r.get("kind") == "track.start"]
    ends = [r for r in records if r.get("kind") == "track.end"]
    assert [s["track_id"] for s in starts] == [1] and [e["track_id"] for e in ends] == [1]
    assert ends[0]["label"] == "face" and ends[0]["duration_s"] == pytest.approx(44 / 30, 0.01)
    assert len(ends[0]["first_xyxy"]) == 4 and {"ts", "frame", "id"} <= set(ends[0])
    assert video.stat().st_size > 10_000


@pytest.fixture(scope="module")
def mot_sequence(tmp_path_factory):
    root = tmp_path_factory.mktemp("mot")
    spec = synthetic.SequenceSpec("SYN-cli", seed=41, frames=150, people=15)
    return synthetic.write(synthetic.generate(spec), root)


def test_public_detections_become_motchallenge_results_that_val_scores(mot_sequence, tmp_path):
    pytest.importorskip("trackers")
    out = tmp_path / "res" / f"{mot_sequence.name}.txt"
    result = run_ubiq(
        "track", "--detections", str(mot_sequence / "det" / "det.txt"), "--out", str(out)
    )
    assert result.returncode == 0, result.stderr
    assert "150 frames" in result.stderr and f"wrote {out}" in result.stderr
    rows = [line.split(",") for line in out.read_text().splitlines()]
    assert rows and all(len(r) == 10 and r[7:] == ["-1", "-1", "-1"] for r in rows)
    assert all(int(r[1]) >= 1 and float(r[4]) > 0 for r in rows)
    scored = run_ubiq(
        "val",
        "--task",
        "track",
        "--data",
        str(mot_sequence.parent),
        "--results",
        str(out.parent),
        "--json",
    )
    assert scored.returncode == 0, scored.stderr
    table = json.loads(scored.stdout)
    assert table["sequences"][0]["sequence"] == "SYN-cli"
    assert table["combined"]["HOTA"] > 60 and table["combined"]["IDF1"] > 70
    # Without --results, val runs the tracker itself on det/det.txt: the same numbers.
    direct = run_ubiq("val", "--task", "track", "--data", str(mot_sequence), "--json")
    assert json.loads(direct.stdout)["combined"] == table["combined"]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "is empty"),
        ("1,-1,10,10,5,5,0.9\n1,-1,10,x,5,5,0.9\n", "det.txt:2: not a number"),
        ("1,-1,10,10,5,5\n", "det.txt:1: expected frame,id,x,y,w,h,score"),
        ("2,-1,10,10,5,5,0.9\n1,-1,10,10,5,5,0.9\n", "det.txt:2: frames out of order"),
        ("1,-1,10,10,-5,5,0.9\n", "det.txt:1: negative box size -5.0 x 5.0"),
        ("0,-1,10,10,5,5,0.9\n", "det.txt:1: frame must be an integer >= 1"),
    ],
)
def test_bad_detection_files_give_one_line_and_keep_the_old_result(tmp_path, content, expected):
    det, out = tmp_path / "det.txt", tmp_path / "result.txt"
    det.write_text(content)
    out.write_text("keep\n")
    line = one_error_line(run_ubiq("track", "--detections", str(det), "--out", str(out)))
    assert expected in line and str(det) in line
    assert out.read_text() == "keep\n"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--detections", "DET"], "--detections needs --out"),
        (["--out", "OUT"], "--out needs --detections"),
        (["--detections", "DET", "--out", "DET"], "is the detections file itself"),
        (["--detections", "DET", "--out", "OUT", "--fps", "0"], "--fps must be > 0, got 0.0"),
        (["--detections", "DET", "--out", "OUT", "--lost-buffer", "-1"], "--lost-buffer must be"),
        (["--detections", "DET", "--out", "OUT", "--camera-motion"], "needs frames"),
        (["--detections", "missing.txt", "--out", "OUT"], "detections file not found"),
        (["--tracker", "deepsort"], "invalid choice: 'deepsort'"),
        (["--lost-buffer", "-2", "--max-frames", "1"], "--lost-buffer must be >= 0"),
    ],
)
def test_bad_track_arguments_give_one_line(tmp_path, args, expected):
    det, out = tmp_path / "det.txt", tmp_path / "out.txt"
    det.write_text("1,-1,10,10,5,5,0.9\n")
    out.write_text("keep\n")
    args = [str(det) if a == "DET" else str(out) if a == "OUT" else a for a in args]
    result = run_ubiq("track", *args)
    assert result.returncode != 0
    assert expected in result.stderr.strip().splitlines()[-1]
    assert out.read_text() == "keep\n"


def test_val_track_errors(tmp_path):
    line = one_error_line(run_ubiq("val", "--task", "track", "--data", str(tmp_path)))
    assert "holds no MOTChallenge sequence" in line
    line = one_error_line(run_ubiq("val", "--task", "track", "--data", str(tmp_path / "nope")))
    assert "does not exist" in line
    line = one_error_line(run_ubiq("val", "--data", str(tmp_path)))
    assert "MODEL is missing" in line


def test_mot15_ground_truth_scores_like_its_mot17_columns(mot_sequence, tmp_path):
    """MOT15's gt.txt has world coordinates (-1) where MOT17 has class and visibility: the
    scores must not depend on which of the two layouts the ground truth uses."""
    pytest.importorskip("trackers")
    import shutil

    import numpy as np

    mot15 = tmp_path / "MOT15" / "SYN-cli"
    (mot15 / "gt").mkdir(parents=True)
    shutil.copytree(mot_sequence / "det", mot15 / "det")
    rows = np.loadtxt(mot_sequence / "gt" / "gt.txt", delimiter=",")
    rows15 = np.concatenate([rows[:, :7], -np.ones((len(rows), 3))], axis=1)
    np.savetxt(mot15 / "gt" / "gt.txt", rows15, fmt="%g", delimiter=",")
    scores = {}
    for name, data in (("mot17", mot_sequence), ("mot15", mot15)):
        result = run_ubiq("val", "--task", "track", "--data", str(data), "--json")
        assert result.returncode == 0, result.stderr
        scores[name] = json.loads(result.stdout)["combined"]
    assert scores["mot15"] == scores["mot17"] and scores["mot17"]["HOTA"] > 60


def test_mot17_distractor_and_ignored_rows_are_neither_missed_nor_false(mot_sequence, tmp_path):
    """An object nobody tracked costs MOTA as a pedestrian (class 1), not as a distractor
    (class 7, static person) or a row marked not to be considered (flag 0)."""
    pytest.importorskip("trackers")
    import shutil

    import numpy as np

    rows = np.loadtxt(mot_sequence / "gt" / "gt.txt", delimiter=",")
    extra = np.array([[f, 9999, 10, 10, 40, 100, 1, 1, 1.0] for f in range(1, 151)])
    mota = {}
    for name, flag, cls in (
        ("base", None, None),
        ("distractor", 1, 7),
        ("ignored", 0, 1),
        ("pedestrian", 1, 1),
    ):
        folder = tmp_path / name / "SYN-cli"
        shutil.copytree(mot_sequence, folder)
        gt = rows
        if flag is not None:
            added = extra.copy()
            added[:, 6], added[:, 7] = flag, cls
            gt = np.concatenate([rows, added])
        np.savetxt(folder / "gt" / "gt.txt", gt, fmt="%g", delimiter=",")
        result = run_ubiq("val", "--task", "track", "--data", str(folder), "--json")
        assert result.returncode == 0, result.stderr
        mota[name] = json.loads(result.stdout)["combined"]["MOTA"]
    assert mota["distractor"] == mota["base"] == mota["ignored"]
    assert mota["pedestrian"] < mota["base"] - 5
