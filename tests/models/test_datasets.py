"""Tests of the training sets made of real photographs and of the dataset readers.

Small sets (12 train, 4 val images at 128 px) keep them fast; the cut-outs are
computed once per process.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from ubiq.cli import main
from ubiq.errors import ConfigError, DatasetError
from ubiq.models.datasets import classify, photos
from ubiq.models.datasets.synth import generate_detection_set
from ubiq.models.datasets.yolo import (
    format_label_lines,
    label_path_for,
    load_data_yaml,
    load_yolo_split,
)

SMALL = {"train_images": 12, "val_images": 4, "imgsz": 128, "progress": False}
CLASSES = ["cat", "cup", "rocket", "motorcycle", "astronaut", "coin"]


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_detection_set(tmp_path_factory.mktemp("synth") / "set", seed=3, **SMALL)


def _files(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for folder in ("images", "labels", "masks")
        for path in sorted((root / folder).rglob("*"))
        if path.is_file()
    }


# --- cut-outs -------------------------------------------------------------------------


def test_every_class_is_cut_out_of_a_real_photo() -> None:
    cutouts = photos.load_cutouts()
    assert photos.class_names() == CLASSES
    assert {cutout.class_name for cutout in cutouts} == set(CLASSES)
    assert sum(cutout.class_name == "coin" for cutout in cutouts) >= 20
    assert sum(cutout.class_name == "motorcycle" for cutout in cutouts) == 2
    for cutout in cutouts:
        assert cutout.image.dtype == np.uint8 and cutout.image.shape[2] == 3
        assert cutout.mask.shape == cutout.image.shape[:2]
        count, _ = cv2.connectedComponents(cutout.mask.astype(np.uint8))
        assert count == 2, f"{cutout.class_name} from {cutout.source} is not one piece"
        # tight crop: the mask touches all four sides, and covers a sensible share of it
        assert cutout.mask[0].any() and cutout.mask[-1].any()
        assert cutout.mask[:, 0].any() and cutout.mask[:, -1].any()
        assert 0.3 < cutout.mask.mean() < 0.95
        assert max(cutout.mask.shape) >= 30
    assert photos.load_cutouts() is cutouts  # computed once per process


def test_backgrounds_are_colour_photos() -> None:
    backgrounds = photos.load_backgrounds()
    assert len(backgrounds) >= len(photos.BACKGROUND_FILES)
    for image in backgrounds:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert min(image.shape[:2]) >= 40
        assert image.std() > 5  # a photograph, not a flat colour


def test_datasets_never_import_torch() -> None:
    code = (
        "import sys\n"
        "import ubiq.models.datasets.synth, ubiq.models.datasets.classify, ubiq.cli.data\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- generator ------------------------------------------------------------------------


def test_layout_and_data_yaml_are_what_ultralytics_reads(synth_set: Path) -> None:
    root = synth_set.parent
    data = yaml.safe_load(synth_set.read_text())
    assert data["path"] == str(root) and Path(data["path"]).is_absolute()
    assert data["train"] == "images/train" and data["val"] == "images/val"
    assert data["nc"] == 6 and data["names"] == dict(enumerate(CLASSES))
    for split, count in (("train", 12), ("val", 4)):
        assert len(list((root / "images" / split).glob("*.jpg"))) == count
        assert len(list((root / "labels" / split).glob("*.txt"))) == count
        assert len(list((root / "masks" / split).glob("*.png"))) == count
    image = cv2.imread(str(root / "images/train/000000.jpg"))
    assert image.shape == (128, 128, 3)
    preview = cv2.imread(str(root / "preview.jpg"))
    assert preview is not None and preview.shape[0] >= 256


def test_label_lines_are_class_and_six_decimal_box(synth_set: Path) -> None:
    pattern = re.compile(r"^[0-5]( (0|1)\.\d{6}){4}$")
    lines = []
    for path in (synth_set.parent / "labels").rglob("*.txt"):
        lines.extend(path.read_text().splitlines())
    assert len(lines) >= 16  # at least one object per image on average
    assert all(pattern.match(line) for line in lines), lines


def test_boxes_are_the_bounding_boxes_of_the_visible_masks(synth_set: Path) -> None:
    checked_exactly = 0
    for split in ("train", "val"):
        loaded = load_yolo_split(synth_set, split)
        for item in loaded.items:
            semantic = cv2.imread(str(item.mask_path), cv2.IMREAD_UNCHANGED)
            assert semantic.shape == (128, 128) and semantic.max() <= 6
            assert set(np.unique(semantic)) - {0} == {int(c) + 1 for c in item.class_ids}
            for box, class_id in zip(item.boxes_xyxy_norm, item.class_ids):
                x0, y0, x1, y1 = np.round(box * 128).astype(int)
                assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
                assert x1 - x0 >= 6 and y1 - y0 >= 6
                assert (semantic[y0:y1, x0:x1] == class_id + 1).any()
                if np.count_nonzero(item.class_ids == class_id) == 1:
                    ys, xs = np.nonzero(semantic == class_id + 1)
                    truth = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                    assert np.abs(truth - [x0, y0, x1, y1]).max() <= 1
                    checked_exactly += 1
    assert checked_exactly >= 10


def test_same_seed_gives_identical_files_and_another_seed_does_not(
    synth_set: Path, tmp_path: Path
) -> None:
    again = generate_detection_set(tmp_path / "again", seed=3, **SMALL)
    other = generate_detection_set(tmp_path / "other", seed=4, **SMALL)
    first_files = _files(synth_set.parent)
    assert _files(again.parent) == first_files
    other_files = _files(other.parent)
    assert other_files.keys() == first_files.keys()
    labels = [name for name in first_files if name.startswith("labels/")]
    assert [other_files[name] for name in labels] != [first_files[name] for name in labels]
    # train and val draw from different streams
    assert first_files["images/train/000000.jpg"] != first_files["images/val/000000.jpg"]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("ultralytics") is None, reason="the [yolo] extra is not installed"
)
def test_ultralytics_reads_the_generated_set(tmp_path: Path) -> None:
    from ultralytics.data import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    data_yaml = generate_detection_set(tmp_path / "set", seed=2, **SMALL)
    data = check_det_dataset(str(data_yaml), autodownload=False)
    assert data["nc"] == 6 and data["names"] == dict(enumerate(CLASSES))
    dataset = YOLODataset(img_path=data["val"], imgsz=128, data=data, augment=False)
    ours = load_yolo_split(data_yaml, "val")
    assert len(dataset.labels) == len(ours.items) == 4
    for theirs, item in zip(dataset.labels, ours.items):
        assert theirs["cls"].ravel().astype(int).tolist() == item.class_ids.tolist()
        centers = (item.boxes_xyxy_norm[:, :2] + item.boxes_xyxy_norm[:, 2:]) / 2
        np.testing.assert_allclose(theirs["bboxes"][:, :2], centers, atol=1e-5)


def test_generator_rejects_bad_arguments_and_foreign_folders(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="imgsz"):
        generate_detection_set(tmp_path / "a", train_images=1, val_images=1, imgsz=0)
    with pytest.raises(ConfigError, match="max_objects"):
        generate_detection_set(tmp_path / "a", train_images=1, val_images=1, max_objects=0)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        generate_detection_set(tmp_path / "mine", train_images=1, val_images=1, progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"


def test_upright_objects_are_not_rotated_and_thin_boxes_are_labelled(tmp_path: Path) -> None:
    from ubiq.models.datasets import synth

    rocket = next(c for c in photos.load_cutouts() if c.class_name == "rocket")
    rng = np.random.default_rng(0)
    turned = [synth._placement(rng, rocket, 256)[2][:, :2] for _ in range(20)]
    assert sum(not np.allclose(m, np.eye(2)) for m in turned) >= 19
    rng = np.random.default_rng(0)
    upright = [synth._placement(rng, rocket, 256, upright=1.0)[2][:, :2] for _ in range(20)]
    assert all(np.allclose(m, np.eye(2)) for m in upright)

    # an upright rocket is about a tenth as wide as it is tall: at 128 px and the default
    # 6 px minimum few are pasted; with 3 px the thin ones are pasted and labelled
    def thinnest(**options) -> list[int]:
        data_yaml = generate_detection_set(
            tmp_path / str(options), seed=5, **{**SMALL, "train_images": 40}, **options
        )
        widths = []
        for item in load_yolo_split(data_yaml, "train").items:
            for box in item.boxes_xyxy_norm:
                x0, y0, x1, y1 = np.round(box * 128).astype(int)
                widths.append(min(x1 - x0, y1 - y0))
        return widths

    default = thinnest(upright=1.0)
    thin = thinnest(upright=1.0, min_box_px=3)
    assert min(default) >= 6 and min(thin) >= 3
    assert sum(w < 6 for w in thin) >= 3
    data = yaml.safe_load(
        (tmp_path / str({"upright": 1.0, "min_box_px": 3}) / "data.yaml").read_text()
    )
    assert data["names"] == dict(enumerate(CLASSES))
    comment = (tmp_path / str({"upright": 1.0, "min_box_px": 3}) / "data.yaml").read_text()
    assert "1 of objects upright, 0 pasted over another, boxes from 3 px" in comment


def test_overlapping_objects_and_hidden_ones_labelled_on_request(tmp_path: Path) -> None:
    """``overlap`` pastes objects over earlier ones (two passing each other); ``min_visible``
    labels the far one of them when little of it shows, instead of leaving it unlabelled."""

    def boxes(**options) -> list[np.ndarray]:
        data_yaml = generate_detection_set(
            tmp_path / str(options), seed=7, **{**SMALL, "train_images": 40}, **options
        )
        return [item.boxes_xyxy_norm for item in load_yolo_split(data_yaml, "train").items]

    def centre_inside(sets: list[np.ndarray]) -> int:
        """Pairs of boxes of one image where one's centre lies inside the other."""
        pairs = 0
        for b in sets:
            centres = (b[:, :2] + b[:, 2:]) / 2
            for i in range(len(b)):
                for j in range(len(b)):
                    inside = (b[i, :2] < centres[j]).all() and (centres[j] < b[i, 2:]).all()
                    pairs += bool(i != j and inside)
        return pairs

    apart, over = boxes(), boxes(overlap=1.0)
    assert centre_inside(over) >= 3 * max(1, centre_inside(apart))  # 53 against 10
    hidden_labelled = boxes(overlap=1.0, min_visible=0.1)
    assert sum(map(len, hidden_labelled)) > sum(map(len, over))  # 78 against 69


def test_upright_and_min_box_are_checked(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="upright must be a share between 0 and 1, got 1.5"):
        generate_detection_set(tmp_path / "a", train_images=1, val_images=1, upright=1.5)
    with pytest.raises(ConfigError, match=r"min_box_px must be in 1..320, got 0"):
        generate_detection_set(tmp_path / "a", train_images=1, val_images=1, min_box_px=0)
    with pytest.raises(ConfigError, match="overlap must be a share between 0 and 1, got 2"):
        generate_detection_set(tmp_path / "a", train_images=1, val_images=1, overlap=2.0)
    with pytest.raises(ConfigError, match=r"min_visible must be a share in \(0, 1\], got 0"):
        generate_detection_set(tmp_path / "a", train_images=1, val_images=1, min_visible=0.0)
    assert not (tmp_path / "a").exists()
    argv = ["data", "synth", "--out", str(tmp_path / "b"), "--train", "2", "--val", "1"]
    options = ["--upright", "0.5", "--min-box", "3", "--min-visible", "0.2", "--overlap", "0.3"]
    assert main([*argv, "--imgsz", "64", *options]) == 0
    assert "upright" in (tmp_path / "b" / "data.yaml").read_text()
    capsys.readouterr()
    assert main([*argv, "--upright", "-1"]) != 0
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "upright must be a share between 0 and 1, got -1" in error


def test_regenerating_replaces_a_previous_set(tmp_path: Path) -> None:
    generate_detection_set(tmp_path / "set", seed=1, **{**SMALL, "train_images": 6})
    data_yaml = generate_detection_set(tmp_path / "set", seed=1, **{**SMALL, "train_images": 2})
    assert len(load_yolo_split(data_yaml, "train").items) == 2


# --- YOLO reader ----------------------------------------------------------------------


def _yolo_set(root: Path, labels: dict[str, str], names: object = None) -> Path:
    """A hand-made dataset: one 16x16 image per label entry (None = no label file)."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for name, text in labels.items():
        split, stem = name.split("/")
        cv2.imwrite(str(root / "images" / split / f"{stem}.jpg"), np.zeros((16, 16, 3), np.uint8))
        if text is not None:
            (root / "labels" / split / f"{stem}.txt").write_text(text)
    data = {"path": str(root), "train": "images/train", "val": "images/val"}
    data["names"] = names if names is not None else dict(enumerate(CLASSES))
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    return root / "data.yaml"


def test_reader_parses_boxes_and_accepts_empty_label_files(tmp_path: Path) -> None:
    data_yaml = _yolo_set(
        tmp_path,
        {
            "train/a": "1 0.5 0.5 0.2 0.4\n5 0.25 0.75 0.5 0.5\n",
            "train/b": "",
            "val/c": "0 .5 .5 1 1",
        },
        names=CLASSES,
    )
    train = load_yolo_split(data_yaml, "train")
    assert train.names == CLASSES and [item.image_path.stem for item in train.items] == ["a", "b"]
    np.testing.assert_allclose(
        train.items[0].boxes_xyxy_norm, [[0.4, 0.3, 0.6, 0.7], [0.0, 0.5, 0.5, 1.0]], atol=1e-6
    )
    assert train.items[0].class_ids.tolist() == [1, 5]
    assert train.items[1].boxes_xyxy_norm.shape == (0, 4) and train.items[1].mask_path is None
    assert train.class_counts().tolist() == [0, 1, 0, 0, 0, 1]


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"train/x": None}, r"missing label file labels/train/x\.txt for images/train/x\.jpg"),
        (
            {"train/x": "0 0.5 0.5 0.1 0.1\n\n7 0.5 0.5 0.1 0.1\n"},
            r"class 7 out of range 0\.\.5 in labels/train/x\.txt line 3",
        ),
        ({"train/x": "0 0.5 0.5 0.1\n"}, r"malformed label in labels/train/x\.txt line 1"),
        (
            {"train/x": "0 0.5 0.5 wide 0.1\n"},
            r"malformed label in labels/train/x\.txt line 1: not a number",
        ),
        ({"train/x": "2 1.5 0.5 0.1 0.1\n"}, r"coordinate 1\.5 outside \[0, 1\] in labels/train/x"),
        ({"train/x": "-1 0.5 0.5 0.1 0.1\n"}, r"class -1 out of range"),
    ],
)
def test_reader_names_the_file_line_and_value(
    tmp_path: Path, labels: dict[str, str | None], message: str
) -> None:
    data_yaml = _yolo_set(tmp_path, labels)
    with pytest.raises(DatasetError, match=message) as caught:
        load_yolo_split(data_yaml, "train")
    assert "\n" not in str(caught.value)
    assert str(data_yaml) in str(caught.value)


def test_reader_rejects_missing_or_incomplete_datasets(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        load_yolo_split(tmp_path / "nothing.yaml", "train")
    data_yaml = _yolo_set(tmp_path, {"train/a": ""})
    with pytest.raises(DatasetError, match=r"val split has no images"):
        load_yolo_split(data_yaml, "val")
    (tmp_path / "images" / "val").rmdir()
    with pytest.raises(DatasetError, match=r"val folder not found: .*images/val"):
        load_yolo_split(data_yaml, "val")
    with pytest.raises(DatasetError, match="no 'test' split"):
        load_yolo_split(data_yaml, "test")
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [a]\n")
    with pytest.raises(DatasetError, match="missing key.* val"):
        load_data_yaml(data_yaml)
    (tmp_path / "data.yaml").write_text("train: images/train\nval: images/val\nnc: 3\nnames: [a]\n")
    with pytest.raises(DatasetError, match="nc is 3 but names has 1"):
        load_data_yaml(data_yaml)
    (tmp_path / "data.yaml").write_text("train: [unclosed\n")
    with pytest.raises(DatasetError, match="not valid YAML"):
        load_data_yaml(data_yaml)


def test_label_helpers_round_trip() -> None:
    assert label_path_for(Path("/d/images/train/x.jpg")) == Path("/d/labels/train/x.txt")
    assert label_path_for(Path("/images/d/images/v/y.png"), "masks", ".png") == Path(
        "/images/d/masks/v/y.png"
    )
    text = format_label_lines(np.array([[0.1, 0.2, 0.5, 0.6]]), np.array([3]))
    assert text == "3 0.300000 0.400000 0.400000 0.400000\n"
    with pytest.raises(ValueError, match="2 boxes but 1 class ids"):
        format_label_lines(np.zeros((2, 4)), np.array([0]))


# --- classification sets --------------------------------------------------------------


def test_digits_set_has_ten_stratified_classes(tmp_path: Path) -> None:
    root = classify.make_digits_set(tmp_path / "digits", size=16)
    train_paths, train_labels, names = classify.load_image_folder(root, "train")
    val_paths, val_labels, val_names = classify.load_image_folder(root, "val")
    assert names == val_names == [str(digit) for digit in range(10)]
    assert len(train_paths) + len(val_paths) == 1797
    assert not {path.name for path in train_paths} & {path.name for path in val_paths}
    share = np.bincount(val_labels) / (np.bincount(val_labels) + np.bincount(train_labels))
    assert np.all(np.abs(share - 0.2) < 0.02)
    image = cv2.imread(str(train_paths[0]))
    assert image.shape == (16, 16, 3) and image.max() > 200
    assert np.array_equal(image[..., 0], image[..., 2])  # grey replicated to 3 channels


def test_faces_set_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    first = classify.make_faces_set(tmp_path / "a", seed=5)
    second = classify.make_faces_set(tmp_path / "b", seed=5)
    paths, labels, names = classify.load_image_folder(first, "val")
    assert names == ["face", "non_face"] and np.bincount(labels).tolist() == [20, 20]
    assert len(classify.load_image_folder(first, "train")[0]) == 160
    assert [p.relative_to(first) for p in paths] == [
        p.relative_to(second) for p in classify.load_image_folder(second, "val")[0]
    ]
    with pytest.raises(ConfigError, match="val_fraction"):
        classify.make_faces_set(tmp_path / "c", val_fraction=1.5)
    with pytest.raises(ConfigError, match="not empty"):
        classify.make_faces_set(first)


def test_image_folder_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="split folder not found"):
        classify.load_image_folder(tmp_path, "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="no class folders"):
        classify.load_image_folder(tmp_path, "train")
    (tmp_path / "train" / "cat").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        classify.load_image_folder(tmp_path, "train")


# --- CLI ------------------------------------------------------------------------------


def test_cli_synth_and_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli-set"
    argv = ["data", "synth", "--out", str(out), "--train", "4", "--val", "2", "--imgsz", "64"]
    assert main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == str(out / "data.yaml")
    assert "4 train + 2 val images at 64 px" in printed[1] and "cat" in printed[1]
    assert (out / "preview.jpg").is_file()
    assert main(["data", "check", str(out)]) == 0
    table = capsys.readouterr().out
    assert re.search(r"^train\s+4\s", table, re.M) and re.search(r"^val\s+2\s", table, re.M)


def test_cli_folder_sets_and_their_check(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "faces", "--out", str(tmp_path / "faces"), "--size", "24"]) == 0
    output = capsys.readouterr().out
    assert output.splitlines()[0] == str(tmp_path / "faces")
    assert "160 train + 40 val" in output
    assert main(["data", "check", str(tmp_path / "faces")]) == 0
    assert re.search(r"^val\s+40\s+20\s+20$", capsys.readouterr().out, re.M)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--imgsz", "0"]) != 0
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "imgsz must be in 32..4096, got 0" in error
    data_yaml = _yolo_set(tmp_path / "broken", {"train/a": "9 0.5 0.5 0.1 0.1", "val/b": ""})
    assert main(["data", "check", str(data_yaml)]) == DatasetError.exit_code
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "class 9 out of range 0..5 in labels/train/a.txt" in error
