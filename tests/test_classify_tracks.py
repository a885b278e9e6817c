"""Learned labels on tracks: the ClassifyTracks stage on synthetic detections, `ubiq track
--classify` on a clip of two cats, and the counter counting each cat by its learned name."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from embed_support import object_picture, tiny_embedder, write_class_folders
from support import run_ubiq

import ubiq
from ubiq.errors import ConfigError
from ubiq.models.runtime.tasks import ClassProbabilities
from ubiq.pipelines.classify import ClassifyTracks, crop_box
from ubiq.types import Detections, Event, Frame, FrameResult


def learn(folder: Path, root: Path) -> Path:
    """A learned classifier folder (imprinted on the tiny embedder) from image folders."""
    from ubiq.models.runtime.embed import Embedder
    from ubiq.models.runtime.imprint import (
        build_head,
        embed_examples,
        read_class_folders,
        save_learned,
    )

    embedder = Embedder.load(tiny_embedder(folder / "embedder.onnx"))
    head = build_head(embed_examples(embedder, read_class_folders(root)))
    save_learned(folder / "learned", head, embedder.path, embedder.manifest)
    return folder / "learned"


@pytest.fixture(scope="module")
def discs(tmp_path_factory) -> Path:
    """Learned classes ``red`` and ``blue`` (discs); green and yellow are unknown."""
    folder = tmp_path_factory.mktemp("discs")
    return learn(folder, write_class_folders(folder / "data", {"red": 4, "blue": 4}))


def scene(*pictures: str, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """A frame with the pictures side by side, and their ``(N, 4)`` boxes."""
    tiles = [object_picture(colour, seed=50 + i, size=size) for i, colour in enumerate(pictures)]
    image = np.ascontiguousarray(np.hstack(tiles))
    boxes = np.array([[i * size, 0, (i + 1) * size, size] for i in range(len(tiles))], np.float32)
    return image, boxes


def tracked(image, boxes, track_ids, class_ids=None, labels=("ball",), index=0, events=()):
    count = len(boxes)
    detections = Detections(
        xyxy=boxes,
        confidence=np.full(count, 0.9, np.float32),
        class_id=np.zeros(count, np.int64) if class_ids is None else np.asarray(class_ids),
        tracker_id=np.asarray(track_ids, np.int64),
        labels=labels,
    )
    result = FrameResult(Frame(image, index, index * 33_000_000), detections=detections)
    result.events.extend(events)
    return result


class Scripted:
    """A stand-in classifier answering from a script, one answer per call."""

    def __init__(self, answers, labels=("red", "blue")) -> None:
        self.answers = list(answers)
        self.labels = labels
        self.crops: list[tuple[int, int]] = []

    def __call__(self, image):
        self.crops.append(image.shape[:2])
        label, confidence, known = self.answers.pop(0) if self.answers else ("red", 0.9, True)
        probabilities = np.full(len(self.labels), (1 - confidence) / (len(self.labels) - 1))
        probabilities[self.labels.index(label) if label in self.labels else 0] = confidence

        class Answer:
            pass

        answer = Answer()
        answer.label = label if known else "unknown"
        answer.confidence = confidence
        answer.known = known
        answer.probabilities = probabilities
        return answer


# --- the stage ----------------------------------------------------------------------------


def test_tracks_take_their_learned_label(discs):
    stage = ClassifyTracks(discs)
    assert stage.name == "classify" and stage.learned_labels == ("blue", "red")  # folder order
    image, boxes = scene("red", "blue")
    result = stage(tracked(image, boxes, [4, 7]))
    detections = result.detections
    assert detections.labels == ("ball", "blue", "red")
    assert [d["label"] for d in detections.to_records()] == ["red", "blue"]
    assert detections.tracker_id.tolist() == [4, 7]
    np.testing.assert_array_equal(detections.xyxy, boxes)
    report = result.data["classify"]
    assert set(report) == {4, 7}
    assert report[4]["label"] == "red" and report[4]["share"] == 1.0 and report[4]["votes"] == 1
    assert report[7]["detector_label"] == "ball" and not report[7]["settled"]
    events = [e for e in result.events if e.kind == "track.classified"]
    named = [(e.payload["track_id"], e.payload["label"]) for e in events]
    assert named == [(4, "red"), (7, "blue")]
    assert result.timings_ms["classify.inference"] > 0
    # Untracked rows (-1) are neither classified nor relabelled.
    again = stage(tracked(image, boxes, [-1, -1], index=1))
    assert [d["label"] for d in again.detections.to_records()] == ["ball"] * 2
    assert again.data["classify"] == {}


def test_a_track_the_classifier_does_not_know_keeps_the_detector_label():
    script = Scripted([("red", 0.99, False)] * 5)
    stage = ClassifyTracks(script, every_n_frames=1)
    image, boxes = scene("green")
    for index in range(5):
        result = stage(tracked(image, boxes, [3], index=index))
        assert result.detections.to_records()[0]["label"] == "ball"
        assert result.detections.class_id.tolist() == [0]
    assert len(script.crops) == 5  # still asked: an unknown answer never settles a track
    assert result.data["classify"] == {}
    assert not [e for e in result.events if e.kind == "track.classified"]


def test_votes_sum_over_the_track_life_and_unknown_answers_count_for_nothing():
    script = Scripted(
        [
            ("red", 0.9, True),
            ("blue", 0.99, False),  # unknown: no vote, however probable
            ("blue", 0.6, True),
            ("blue", 0.7, True),  # blue 1.3 now leads red 0.9
        ]
    )
    stage = ClassifyTracks(script, every_n_frames=1, settle_votes=10)
    image, boxes = scene("red")
    labels = []
    for index in range(4):
        result = stage(tracked(image, boxes, [1], index=index))
        labels.append(result.detections.to_records()[0]["label"])
    assert labels == ["red", "red", "red", "blue"]
    state = stage.tracks[1]
    assert state.votes == pytest.approx({"red": 0.9, "blue": 1.3})
    assert state.known == 3 and state.answers == 4
    assert result.data["classify"][1]["share"] == pytest.approx(1.3 / 2.2, abs=1e-4)
    changed = [e for e in result.events if e.kind == "track.classified"]
    assert [e.payload["label"] for e in changed] == ["blue"]


def test_a_track_is_classified_every_nth_frame_until_its_label_is_settled():
    script = Scripted([])
    stage = ClassifyTracks(script, every_n_frames=3, settle_votes=2)
    image, boxes = scene("red")
    classified = []
    for index in range(12):
        before = len(script.crops)
        result = stage(tracked(image, boxes, [5], index=index))
        classified.append(len(script.crops) > before)
    # Frames 0 and 3, then settled after two known answers: no more crops.
    assert classified == [True, False, False, True] + [False] * 8
    assert result.data["classify"][5]["settled"] is True
    assert result.detections.to_records()[0]["label"] == "red"


def test_low_confidence_answers_of_a_plain_classifier_do_not_vote():
    class Softmax:
        labels = ("tabby", "ginger")

        def __init__(self):
            self.next = [0.55, 0.45]

        def __call__(self, image):
            return ClassProbabilities(np.array(self.next, np.float32), self.labels)

    model = Softmax()
    stage = ClassifyTracks(model, every_n_frames=1, min_confidence=0.6)
    image, boxes = scene("red")
    assert stage(tracked(image, boxes, [2])).detections.to_records()[0]["label"] == "ball"
    model.next = [0.1, 0.9]
    result = stage(tracked(image, boxes, [2], index=1))
    assert result.detections.labels == ("ball", "tabby", "ginger")
    assert result.detections.to_records()[0]["label"] == "ginger"


def test_only_tracks_of_the_named_detector_classes_are_classified():
    script = Scripted([])
    stage = ClassifyTracks(script, classes=["cat"])
    image, boxes = scene("red", "red")
    result = stage(tracked(image, boxes, [1, 2], class_ids=[0, 1], labels=("cat", "cup")))
    assert len(script.crops) == 1
    assert [d["label"] for d in result.detections.to_records()] == ["red", "cup"]
    # A learned label that is also a detector label is reused, not repeated.
    same = ClassifyTracks(Scripted([("cup", 0.9, True)], labels=("cup", "red")))
    result = same(tracked(image, boxes[:1], [3], labels=("cat", "cup")))
    assert result.detections.labels == ("cat", "cup", "red")
    assert result.detections.class_id.tolist() == [1]


def test_the_state_stays_bounded():
    stage = ClassifyTracks(Scripted([]), forget_after_frames=5, max_tracks=3)
    image, boxes = scene("red")
    for track_id in range(1, 6):  # five tracks, one frame each
        stage(tracked(image, boxes, [track_id], index=track_id))
    assert len(stage.tracks) == 3 and sorted(stage.tracks) == [3, 4, 5]
    # track.end drops a track at once; unseen ones go after forget_after_frames.
    end = Event("track.end", 0, "0", {"track_id": 5})
    stage(tracked(image, boxes, [4], index=6, events=[end]))
    assert sorted(stage.tracks) == [3, 4]
    for index in range(7, 14):
        stage(tracked(image, boxes, [4], index=index))
    assert sorted(stage.tracks) == [4]
    stage.finish()
    assert stage.tracks == {}


def test_crops_get_a_margin_and_stay_inside_the_frame():
    image = np.zeros((100, 200, 3), np.uint8)
    assert crop_box(image, (50, 20, 150, 70), 0.1).shape == (60, 120, 3)
    assert crop_box(image, (-30, -10, 40, 30), 0.1).shape == (34, 47, 3)
    assert crop_box(image, (10, 10, 12, 50), 0.0) is None
    stage = ClassifyTracks(Scripted([]), margin=0.0)
    image, boxes = scene("red")
    stage(tracked(image, boxes, [1]))
    assert stage.classifier.crops == [(96, 96)]


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"every_n_frames": 0}, "every_n_frames must be an integer >= 1, got 0"),
        ({"settle_votes": 1.5}, "settle_votes must be an integer >= 1"),
        ({"margin": 2.0}, "margin must be between 0 and 1, got 2.0"),
        ({"min_confidence": -0.1}, "min_confidence must be between 0 and 1"),
        ({"classes": "cat"}, "classes must be a list of labels, got the string 'cat'"),
        ({"classes": []}, "classes must name at least one label"),
    ],
)
def test_bad_options_name_the_option(options, expected):
    with pytest.raises(ConfigError, match=expected):
        ClassifyTracks(Scripted([]), **options)


def test_the_stage_needs_tracks_and_a_classifier(discs, tmp_path):
    with pytest.raises(ConfigError, match="classifier must be a classifier path or callable"):
        ClassifyTracks(42)
    stage = ClassifyTracks(Scripted([]))
    image, boxes = scene("red")
    untracked = FrameResult(Frame(image, 0, 0), detections=Detections(boxes, [0.9], [0]))
    with pytest.raises(ConfigError, match="put a Track stage before it"):
        stage(untracked)
    assert ubiq.ClassifyTracks is ClassifyTracks


# --- through the CLI ----------------------------------------------------------------------

WIDTH, HEIGHT, FRAMES = 384, 288, 40
ROWS = {"my cat": 75, "other cat": 210}
"""Each cat's row: mine walks left to right along the top, the other right to left."""


def cat_pictures() -> dict[str, np.ndarray]:
    """Chelsea (scikit-image's photograph of a tabby cat) and a paler cat made from her."""
    from ubiq.models.datasets import photos

    cat = next(c for c in photos.load_cutouts() if c.class_name == "cat")
    hsv = cv2.cvtColor(cat.image, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 1] *= 0.5
    hsv[..., 2] = np.clip(hsv[..., 2] * 1.3, 0, 255)
    pale = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR)
    return {"my cat": (cat.image, cat.mask), "other cat": (pale, cat.mask)}


def paste(background, picture, height, centre):
    """``background`` with the masked picture scaled to ``height`` at ``centre`` (the still's
    own compositing, from benchmarks/classify_tracks_still.py)."""
    import importlib.util

    from support import REPO

    spec = importlib.util.spec_from_file_location(
        "classify_tracks_still", REPO / "benchmarks" / "classify_tracks_still.py"
    )
    still = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(still)
    return still.paste(background, picture, height, centre)


@pytest.fixture(scope="module")
def two_cats(tmp_path_factory):
    """A clip of two cats crossing the middle in opposite directions on grass, and a
    classifier that learned each cat from three pictures on other backgrounds."""
    from ubiq.models.datasets import photos

    folder = tmp_path_factory.mktemp("cats")
    cats = cat_pictures()
    for label, picture in cats.items():
        (folder / "data" / label).mkdir(parents=True)
        for number, (scene_name, height) in enumerate(
            [("brick.png", 120), ("gravel.png", 140), ("brick.png", 100)]
        ):
            background = cv2.resize(photos.read_photo(scene_name), (200, 200))
            example = paste(background, picture, height, (100, 100))
            cv2.imwrite(str(folder / "data" / label / f"{number}.png"), example[20:180, 10:190])
    learned = learn(folder, folder / "data")
    grass = cv2.resize(photos.read_photo("grass.png"), (WIDTH, HEIGHT))
    video = folder / "cats.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 15, (WIDTH, HEIGHT))
    for frame in range(FRAMES):
        x = -40 + frame / (FRAMES - 1) * (WIDTH + 80)
        image = paste(grass, cats["my cat"], 100, (x, ROWS["my cat"]))
        image = paste(image, cats["other cat"], 100, (WIDTH - x, ROWS["other cat"]))
        writer.write(image)
    writer.release()
    return video, learned


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def nearest_cat(box) -> str:
    centre_y = (box[1] + box[3]) / 2
    return min(ROWS, key=lambda label: abs(ROWS[label] - centre_y))


def test_track_classify_labels_each_cat_by_its_learned_name(two_cats, tmp_path):
    video, learned = two_cats
    jsonl = tmp_path / "cats.jsonl"
    result = run_ubiq(
        "track",
        "--source",
        str(video),
        "--model",
        "ubiq-det-mnv2",
        "--classify",
        str(learned),
        "--classify-classes",
        "cat",
        "--jsonl",
        str(jsonl),
    )
    assert result.returncode == 0, result.stderr
    assert "classify " in result.stderr  # its p50/p90 in the stage line
    lines = records(jsonl)
    learned_rows = [
        d
        for frame in lines
        if "detections" in frame
        for d in frame["detections"]
        if d["label"] in ROWS
    ]
    # Both cats are found and named, and each name sits on the right cat.
    assert {d["label"] for d in learned_rows} == set(ROWS)
    assert all(d["label"] == nearest_cat(d["xyxy"]) for d in learned_rows)
    assert len(learned_rows) >= FRAMES  # most frames carry both cats' names
    # A relabelled track keeps its name for the rest of its life.
    by_track: dict[int, set] = {}
    for d in learned_rows:
        by_track.setdefault(d["track_id"], set()).add(d["label"])
    assert all(len(names) == 1 for names in by_track.values())
    classified = [r for r in lines if r.get("kind") == "track.classified"]
    assert {r["label"] for r in classified} == set(ROWS)
    assert all(r["detector_label"] == "cat" and 0 < r["share"] <= 1 for r in classified)


def test_the_counter_counts_each_learned_cat_apart(two_cats, tmp_path):
    video, learned = two_cats
    config = tmp_path / "cats.yaml"
    jsonl = tmp_path / "counts.jsonl"
    config.write_text(
        "app: counter\n"
        f"classify: {{model: {learned}, classes: [cat]}}\n"
        "classes: [my cat, other cat]\n"
        f"outputs: {{jsonl: {jsonl}}}\n"
        f"cameras:\n  - source: {video}\n"
        "    lines: [{name: middle, points: [0.5, 0.0, 0.5, 1.0]}]\n"
    )
    result = run_ubiq("run", "counter", "--config", str(config))
    assert result.returncode == 0, result.stderr
    events = records(jsonl)
    (counts,) = [e for e in events if e.get("kind") == "counts"]
    middle = counts["lines"]["middle"]
    # Mine walks left to right (out), the other cat right to left (in); nothing else counts.
    assert set(middle) == set(ROWS)
    assert middle["my cat"]["out"] >= 1 and middle["my cat"]["in"] == 0
    assert middle["other cat"]["in"] >= 1 and middle["other cat"]["out"] == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--classify", "ubiq-det-mnv2"],
            "--classify ubiq-det-mnv2: ubiq-det-mnv2.onnx is a 'detect' model, not a "
            "'classify' one",
        ),
        (["--classify", "no/such/folder"], "--classify no/such/folder: "),
        (["--classify-classes", "cat"], "--classify-classes needs --classify"),
        (["--classify", "LEARNED", "--classify-classes", "zebra"], "'zebra' is not a class"),
    ],
)
def test_a_bad_classify_is_one_line_and_writes_nothing(two_cats, tmp_path, args, expected):
    video, learned = two_cats
    args = [str(learned) if a == "LEARNED" else a for a in args]
    jsonl, saved = tmp_path / "keep.jsonl", tmp_path / "out.mp4"
    jsonl.write_text("keep\n")
    result = run_ubiq(
        "track", "--source", str(video), *args, "--jsonl", str(jsonl), "--save", str(saved)
    )
    assert result.returncode not in (0, 134), result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert jsonl.read_text() == "keep\n" and not saved.exists()


def test_a_bad_classify_section_in_an_app_yaml_is_one_line(two_cats, tmp_path):
    video, learned = two_cats
    jsonl = tmp_path / "keep.jsonl"
    jsonl.write_text("keep\n")
    for sets, expected in (
        (["classify.modle=x"], "classify.modle: unknown key"),
        (["classify.model=ubiq-det-mnv2"], "classify.model ubiq-det-mnv2: ubiq-det-mnv2.onnx"),
        (
            [f"classify.model={learned}", "classify.classes=[zebra]"],
            "classify.classes: 'zebra' is not a class of ubiq-det-mnv2-320.onnx",
        ),
    ):
        args = [a for s in sets for a in ("--set", s)]
        result = run_ubiq("run", "counter", "--source", str(video), *args, "--jsonl", str(jsonl))
        assert result.returncode not in (0, 134), result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and expected in lines[0], (sets, result.stderr)
        assert jsonl.read_text() == "keep\n"
