"""On-device learning: embedders, weight imprinting, `ubiq learn` and `ubiq classify`."""

from __future__ import annotations

import json
import shlex

import cv2
import numpy as np
import pytest
from embed_support import object_picture, tiny_embedder, write_class_folders
from support import one_op_onnx, run_ubiq

from ubiq.errors import ConfigError, DatasetError, ModelError
from ubiq.models.runtime.embed import IMAGENET_MEAN, Embedder, vector_size
from ubiq.models.runtime.imprint import (
    ImprintedClassifier,
    build_head,
    embed_examples,
    read_class_folders,
    save_learned,
)


@pytest.fixture
def embedder_file(tmp_path):
    return tiny_embedder(tmp_path / "embedder.onnx")


def _learned(tmp_path, embedder_file, classes=None):
    data = write_class_folders(tmp_path / "data", classes or {"red": 2, "blue": 2, "green": 2})
    result = run_ubiq(
        "learn", "--embedder", str(embedder_file), "--data", str(data), "--out", str(tmp_path / "m")
    )
    assert result.returncode == 0, result.stderr
    return tmp_path / "m", result


@pytest.mark.parametrize(
    ("shape", "size"),
    [((1, 7), 7), ((1, 1, 1, 9), 9), ((-1, 5), 5), ((1, 3, 4, 4), None), ((1, 1), None)],
)
def test_vector_size_recognises_one_vector_per_image(shape, size):
    assert vector_size(shape) == size


@pytest.mark.parametrize("output_shape", [[1, 24], [1, 1, 1, 24]])
def test_a_model_without_manifest_whose_output_is_a_vector_runs_as_an_embedder(
    tmp_path, output_shape
):
    path = tiny_embedder(tmp_path / "e.onnx", output_shape=output_shape)
    embedder = Embedder.load(path)
    assert embedder.dim == 24 and embedder.manifest.task == "embed"
    # float NCHW input: torchvision's ImageNet normalisation, stretched to the input size
    assert embedder.manifest.preprocess.mean == IMAGENET_MEAN
    assert embedder.manifest.preprocess.resize == "stretch"
    vector = embedder(object_picture("red", 1))
    assert vector.shape == (24,) and vector.dtype == np.float32
    # the same picture gives the same vector; another colour another one
    assert np.array_equal(vector, embedder(object_picture("red", 1)))
    assert not np.allclose(vector, embedder(object_picture("blue", 1)))


def test_an_output_that_is_not_a_vector_is_refused_naming_its_shape(tmp_path):
    path = one_op_onnx(tmp_path / "relu.onnx", "Relu", [1, 3, 8, 8], [1, 3, 8, 8])
    with pytest.raises(ModelError, match=r"not an embedder.*\(1, 3, 8, 8\)"):
        Embedder.load(path)


def test_imprinted_weights_are_normalised_class_means_and_add_keeps_old_rows():
    rng = np.random.default_rng(0)
    centres = {name: rng.normal(0, 1, 16) for name in ("a", "b", "c")}
    examples = {
        name: [np.stack([c + rng.normal(0, 0.1, 16) for _ in range(2)]) for _ in range(3)]
        for name, c in list(centres.items())[:2]
    }
    head = build_head(examples)
    # prototypes are unit rows; weights are means of unit rows (the nearest one answers)
    assert np.allclose(np.linalg.norm(head.prototypes, axis=1), 1, atol=1e-6)
    assert np.all(np.linalg.norm(head.weights, axis=1) <= 1 + 1e-6)
    for name in ("a", "b"):
        assert head.answer(centres[name] + rng.normal(0, 0.1, 16)).label == name
    added = build_head(
        {"c": [np.stack([centres["c"] + rng.normal(0, 0.1, 16)]) for _ in range(2)]}, base=head
    )
    assert added.labels == ("a", "b", "c")
    assert np.array_equal(added.weights[:2], head.weights)
    assert np.array_equal(added.thresholds[:2], head.thresholds)
    assert np.array_equal(added.centre, head.centre)
    assert added.answer(centres["c"]).label == "c"
    # something unlike every class is unknown
    assert added.answer(-centres["a"] - centres["b"] - centres["c"]).label == "unknown"
    with pytest.raises(ConfigError, match="'a' is already learned"):
        build_head({"a": examples["a"]}, base=head)
    with pytest.raises(ConfigError, match="'x' has no examples"):
        build_head({"x": []})


def test_refinement_moves_only_new_rows():
    rng = np.random.default_rng(1)
    base = build_head({n: [rng.normal(0, 1, (2, 8)) for _ in range(2)] for n in ("a", "b")})
    new = {"c": [rng.normal(0, 1, (2, 8))]}
    refined = build_head(new, base=base, refine_steps=25)
    plain = build_head(new, base=base)
    assert np.array_equal(refined.weights[:2], base.weights)
    assert np.array_equal(plain.weights[2], build_head(new, base=base).weights[2])
    assert not np.allclose(refined.weights[2], plain.weights[2], atol=1e-4)
    # the steps lower the cross-entropy of the examples they were taken on
    samples = refined.normalise(new["c"][0])

    def loss(head):
        logits = head.scale * (samples @ head.weights.T - 0.5 * (head.weights**2).sum(axis=1))
        logits -= logits.max(axis=1, keepdims=True)
        return float(-(logits[:, 2] - np.log(np.exp(logits).sum(axis=1))).mean())

    assert loss(refined) < loss(plain)
    assert refined.refine_steps == (0, 0, 25) and plain.refine_steps == (0, 0, 0)


def test_learn_then_classify_through_the_cli(tmp_path, embedder_file):
    out, learned = _learned(tmp_path, embedder_file)
    assert "learned 3 classes" in learned.stdout and "ms a picture" in learned.stdout
    manifest = json.loads((out / "model.json").read_text())
    assert manifest["task"] == "classify" and manifest["decoder"]["name"] == "imprint"
    assert manifest["labels"] == ["blue", "green", "red"]
    assert manifest["decoder"]["params"]["threshold_rule"]
    assert len(manifest["decoder"]["params"]["thresholds"]) == 3
    # pictures never seen: other seeds of the same colours, and grey noise with no object
    test = write_class_folders(tmp_path / "test", {"red": 4, "blue": 4, "green": 4}, first_seed=500)
    cv2.imwrite(str(test / "empty.png"), np.full((96, 96, 3), 120, np.uint8))
    answers = tmp_path / "answers.jsonl"
    result = run_ubiq(
        "classify", "--source", str(test), "--model", str(out), "--jsonl", str(answers)
    )
    assert result.returncode == 0, result.stderr
    records = {r["file"]: r for r in map(json.loads, answers.read_text().splitlines())}
    assert len(records) == 13
    for path, record in records.items():
        expected = "unknown" if path.endswith("empty.png") else path.split("/")[-2]
        assert record["label"] == expected, (path, record)
        assert {"confidence", "similarity", "top"} <= set(record)
    assert "12 of 12 pictures in folders named after a class" in result.stdout
    # the command `ubiq learn` printed runs as written
    printed = learned.stdout.split("`")[1]
    assert printed.startswith("ubiq classify")
    rerun = run_ubiq(*shlex.split(printed)[1:])
    assert rerun.returncode == 0, rerun.stderr
    assert "6 of 6 pictures" in rerun.stdout


def test_add_leaves_the_old_classes_answers_unchanged(tmp_path, embedder_file):
    out, _ = _learned(tmp_path, embedder_file, {"red": 2, "blue": 2})
    old = np.load(out / "classes.npz")
    test = write_class_folders(tmp_path / "test", {"red": 3, "blue": 3}, first_seed=900)
    before = run_ubiq("classify", "--source", str(test), "--model", str(out), "--jsonl",
                      str(tmp_path / "before.jsonl"))  # fmt: skip
    more = write_class_folders(tmp_path / "more", {"green": 2}, first_seed=300)
    added = run_ubiq("learn", "--out", str(out), "--add", str(more))
    assert added.returncode == 0, added.stderr
    new = np.load(out / "classes.npz")
    assert np.array_equal(new["weights"][:2], old["weights"])
    assert np.array_equal(new["thresholds"][:2], old["thresholds"])
    assert np.array_equal(new["centre"], old["centre"])
    after = run_ubiq("classify", "--source", str(test), "--model", str(out), "--jsonl",
                     str(tmp_path / "after.jsonl"))  # fmt: skip
    assert before.returncode == after.returncode == 0
    old_answers = [json.loads(x) for x in (tmp_path / "before.jsonl").read_text().splitlines()]
    new_answers = [json.loads(x) for x in (tmp_path / "after.jsonl").read_text().splitlines()]
    assert [a["label"] for a in new_answers] == [a["label"] for a in old_answers]
    assert [a["similarity"] for a in new_answers] == [a["similarity"] for a in old_answers]
    # and the new class is answered for its own pictures
    greens = write_class_folders(tmp_path / "greens", {"green": 3}, first_seed=700)
    result = run_ubiq("classify", "--source", str(greens), "--model", str(out))
    assert "3 of 3 pictures" in result.stdout


def _one_error_line(result, *fragments):
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len([x for x in lines if "error" in x]) == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def test_bad_input_is_one_line_and_leaves_out_untouched(tmp_path, embedder_file):
    out, _ = _learned(tmp_path, embedder_file, {"red": 2, "blue": 2})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    # an empty class folder
    empty = write_class_folders(tmp_path / "e", {"green": 2})
    (empty / "purple").mkdir()
    result = run_ubiq("learn", "--out", str(out), "--add", str(empty))
    _one_error_line(result, "class folder", "purple", "has no images")
    # an image that does not decode, named
    broken = write_class_folders(tmp_path / "b", {"green": 2})
    (broken / "green" / "bad.jpg").write_bytes(b"not a jpeg")
    result = run_ubiq("learn", "--out", str(out), "--add", str(broken))
    _one_error_line(result, "cannot decode image", "bad.jpg")
    # adding a class that exists
    again = write_class_folders(tmp_path / "r", {"red": 1})
    result = run_ubiq("learn", "--out", str(out), "--add", str(again))
    _one_error_line(result, "'red' is already learned")
    # an embedder whose output is not a vector
    relu = one_op_onnx(tmp_path / "relu.onnx", "Relu", [1, 3, 8, 8], [1, 3, 8, 8])
    result = run_ubiq("learn", "--embedder", str(relu), "--data", str(again), "--out",
                      str(tmp_path / "x"))  # fmt: skip
    _one_error_line(result, "not an embedder", "(1, 3, 8, 8)")
    assert not (tmp_path / "x").exists()
    # an existing OUT is not replaced without --force
    result = run_ubiq("learn", "--embedder", str(embedder_file), "--data", str(again), "--out",
                      str(out))  # fmt: skip
    _one_error_line(result, "exists", "--add", "--force")
    # --add needs an existing OUT
    result = run_ubiq("learn", "--out", str(tmp_path / "none"), "--add", str(again))
    _one_error_line(result, "--add needs an existing learned model")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".m.")]


def test_library_errors_name_the_bad_folder_and_file(tmp_path):
    with pytest.raises(DatasetError, match="data folder not found"):
        read_class_folders(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    cv2.imwrite(str(tmp_path / "flat" / "a.png"), object_picture("red", 0))
    with pytest.raises(DatasetError, match="no class folders"):
        read_class_folders(tmp_path / "flat")


def test_a_learned_folder_loads_through_the_python_api(tmp_path, embedder_file):
    import ubiq

    out, _ = _learned(tmp_path, embedder_file)
    model = ubiq.load_model(out)
    assert isinstance(model, ImprintedClassifier)
    answer = model(object_picture("blue", 77))
    assert answer.label == "blue" and answer.known and 0 < answer.confidence <= 1
    assert answer.top(2)[0][0] == "blue"
    # `ubiq val --task classify` scores it like any classifier
    data = tmp_path / "valset"
    write_class_folders(data / "val", {"red": 2, "blue": 2, "green": 2}, first_seed=40)
    scored = run_ubiq("val", str(out), "--data", str(data), "--json")
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["top1"] == 1.0


def test_save_learned_writes_a_self_contained_folder(tmp_path, embedder_file):
    embedder = Embedder.load(embedder_file)
    data = write_class_folders(tmp_path / "d", {"red": 1, "green": 1})
    head = build_head(embed_examples(embedder, read_class_folders(data)))
    save_learned(tmp_path / "m", head, embedder.path, embedder.manifest)
    embedder_file.unlink()  # the folder does not need the original file
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "classes.npz",
        "model.json",
        "model.onnx",
    ]
    assert ubiq_label(tmp_path / "m", object_picture("green", 5)) == "green"


def ubiq_label(model_dir, image):
    from ubiq.models.runtime.tasks import Classifier

    return Classifier.load(model_dir)(image).label


def test_export_task_embed_makes_an_embedder_of_a_trained_classifier(tmp_path):
    pytest.importorskip("torch")
    from ubiq.models.datasets.classify import make_digits_set
    from ubiq.models.toolchain.train.trainer import TrainOptions, train

    root = make_digits_set(tmp_path / "digits", size=32)
    options = TrainOptions(
        task="classify", data=str(root), out=str(tmp_path / "run"), backbone="mobilenet_v2",
        width=0.35, epochs=1, imgsz=32, batch=64, threads=1, progress=False,
    )  # fmt: skip
    result = train(options)
    exported = run_ubiq(
        "export", str(result.best), "--task", "embed", "--out", str(tmp_path / "emb.onnx")
    )
    assert exported.returncode == 0, exported.stderr
    assert "embedding 256 values" in exported.stdout
    embedder = Embedder.load(tmp_path / "emb.onnx")
    assert embedder.dim == 256 and embedder.manifest.task == "embed"
    assert embedder.manifest.preprocess.resize == "stretch"
    few = tmp_path / "few"
    for digit in "0123456789":
        (few / digit).mkdir(parents=True)
        for path in sorted((root / "train" / digit).glob("*.png"))[:3]:
            (few / digit / path.name).write_bytes(path.read_bytes())
    learned = run_ubiq("learn", "--embedder", str(tmp_path / "emb.onnx"), "--data", str(few),
                       "--out", str(tmp_path / "digits10"))  # fmt: skip
    assert learned.returncode == 0, learned.stderr
    scored = run_ubiq("classify", "--source", str(root / "val"), "--model",
                      str(tmp_path / "digits10"), "--quiet")  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    # ten classes, three pictures each: far above chance (10%) on the held-out digits
    share = float(scored.stdout.split("(")[-1].split("%")[0])
    assert share > 30, scored.stdout
    # a keyword model has no image backbone to export as an embedder
    bad = run_ubiq("export", str(result.best), "--task", "embed", "--format", "tflite")
    assert bad.returncode != 0 and "ONNX only" in bad.stderr


def test_data_objects_writes_few_pictures_per_class_and_refuses_bad_counts(tmp_path):
    result = run_ubiq(
        "data", "objects", "--out", str(tmp_path / "o"), "--train", "2", "--val", "3",
        "--size", "64",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for split, count in (("train", 2), ("val", 3)):
        folders = sorted((tmp_path / "o" / split).iterdir())
        assert [f.name for f in folders] == sorted(
            ["cat", "cup", "rocket", "motorcycle", "astronaut", "coin"]
        )
        for folder in folders:
            pictures = sorted(folder.glob("*.jpg"))
            assert len(pictures) == count
            assert max(cv2.imread(str(pictures[0])).shape[:2]) == 64
    bad = run_ubiq("data", "objects", "--out", str(tmp_path / "b"), "--train", "0")
    assert bad.returncode != 0 and "train_per_class" in bad.stderr
    assert not (tmp_path / "b").exists()
