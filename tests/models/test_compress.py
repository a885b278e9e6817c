"""ubiq compress: recipes, bad input, and an end-to-end run with its report and gates."""

import json
from pathlib import Path

import pytest
from support import run_ubiq

from ubiq.errors import ConfigError
from ubiq.models.toolchain.compress.recipe import CompressRecipe, load_recipe, recipe_from_flags


def _one_line(result, *needles):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_flags_make_the_steps_in_order():
    recipe = recipe_from_flags(
        prune=0.5,
        distill="t.pt",
        quantize="int8",
        train="a",
        calib="b",
        val="c",
        max_drop=1.0,
        threads=2,
    )
    names = [name for name, _ in recipe.step_list()]
    assert names == ["prune", "distill", "quantize"]
    assert recipe.step_list()[0][1].target_macs_ratio == 0.5


def test_recipe_with_an_unknown_step_names_it(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("steps:\n  - quantize: {method: int8}\n  - sharpen: {}\n")
    with pytest.raises(ConfigError, match=r"steps\[1\]: unknown step 'sharpen'"):
        load_recipe(path)


def test_recipe_with_an_unknown_option_names_its_path(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("steps:\n  - prune: {target_macs: 0.5}\n")
    with pytest.raises(ConfigError, match=r"steps\[0\]\.prune: target_macs"):
        load_recipe(path)
    path.write_text("steps:\n  - quantize: {}\ncolour: 1\n")
    with pytest.raises(ConfigError, match="colour"):
        load_recipe(path)


def test_a_recipe_without_steps_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        CompressRecipe(steps=[])


def test_cli_bad_input_is_one_line_each(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not a model")
    out = str(tmp_path / "out")
    _one_line(run_ubiq("compress", str(model), "--out", out), "nothing to do")
    _one_line(
        run_ubiq("compress", str(model), "--quantize", "int8", "--max-drop", "-1", "--out", out),
        "--max-drop",
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text("steps:\n  - shrink: {}\n")
    _one_line(run_ubiq("compress", str(model), "--recipe", str(recipe), "--out", out), "shrink")
    _one_line(
        run_ubiq("compress", str(tmp_path / "missing.pt"), "--quantize", "int8", "--out", out),
        "does not exist",
    )


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    pytest.importorskip("torch")
    from ubiq.models.datasets.synth import generate_detection_set
    from ubiq.models.toolchain.train.trainer import TrainOptions, train

    root = tmp_path_factory.mktemp("compress")
    data = generate_detection_set(
        root / "data", train_images=16, val_images=6, imgsz=64, seed=4, progress=False
    )
    options = TrainOptions(
        task="detect",
        data=str(data),
        out=str(root / "run"),
        width=0.5,
        epochs=1,
        imgsz=64,
        batch=8,
        threads=1,
        progress=False,
    )
    return train(options).best, data


def test_recipe_run_writes_every_artifact_the_report_and_a_result_detect_runs(
    tiny_checkpoint, tmp_path
):
    checkpoint, data = tiny_checkpoint
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "steps:\n"
        "  - prune: {target_macs_ratio: 0.6, finetune_epochs: 1}\n"
        "  - quantize: {method: int8, calibration_images: 8}\n"
        f"data: {{train: {data}, calib: {data}, val: {data}}}\n"
        "max_drop: 100.0\n"  # an untrained model's mAP is noise: this run checks the plumbing
        "threads: 1\n"
    )
    out = tmp_path / "out"
    result = run_ubiq(
        "compress", str(checkpoint), "--recipe", str(recipe), "--out", str(out), timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    names = [row["name"] for row in report["artifacts"]]
    assert names[:2] == ["fp32", "pruned"]
    fp32, pruned = report["artifacts"][:2]
    assert pruned["macs"] < 0.7 * fp32["macs"]
    for row in report["artifacts"]:
        assert row["latency_p50_ms"] > 0 and row["peak_rss_mb"] > 0 and row["size_bytes"] > 0
        assert row["metric_name"] == "mAP50"
        # OpenVINO's column: every artifact runs on it, the int8 one included when it is
        # QDQ; a QOperator int8 model (the quantizer's choice when QDQ was slower on
        # onnxruntime, as timing noise on a model this small sometimes has it) leaves only
        # its own cell empty, and says why among its notes.
        steps = json.loads(Path(row["path"]).with_suffix(".json").read_text())["compression"]
        formats = {step.get("quant_format") for step in steps} - {None}
        if formats <= {"QDQ"}:
            assert (row["openvino_p50_ms"] or 0) > 0, report.get("openvino")
        else:
            assert row["openvino_p50_ms"] or any(
                "OpenVINO: it cannot convert its operations" in note for note in row["notes"]
            ), row
    assert report["machine"]["versions"]["onnxruntime"]
    assert report["machine"]["versions"]["openvino"]
    markdown = (out / "report.md").read_text()
    assert markdown.startswith("# ubiq compress report")
    assert "| p50 ms | p90 ms | OpenVINO p50 ms |" in markdown
    assert (out / "report.png").stat().st_size > 1000
    final = Path(report["result"])
    assert final.parent == out and final.name.startswith("model.") and final.is_file()
    assert json.loads(final.with_suffix(".json").read_text())["compression"] or final.name == (
        "model.fp32.onnx"
    )
    images = sorted((data.parent / "images" / "val").glob("*.jpg"))
    detect = run_ubiq(
        "detect",
        "--source",
        str(images[0]),
        "--model",
        str(final),
        "--jsonl",
        str(tmp_path / "d.jsonl"),
    )
    assert detect.returncode == 0, detect.stderr


def test_a_model_without_a_manifest_or_known_outputs_is_one_line(tmp_path):
    from support import one_op_onnx

    # (8, 8, 3, 1): not boxes, not a class map (a (1, C, H, W) output now reads as one), not
    # one vector per image (a (1, D) output now reads as an embedder).
    model = one_op_onnx(tmp_path / "mystery.onnx", "Transpose", [1, 3, 8, 8], [8, 8, 3, 1])
    images = tmp_path / "calib"
    images.mkdir()
    result = run_ubiq(
        "compress",
        str(model),
        "--quantize",
        "int8",
        "--calib",
        str(images),
        "--out",
        str(tmp_path / "out"),
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no decoder understands the outputs of mystery.onnx" in lines[0]


def test_an_empty_calibration_folder_is_one_line(tmp_path):
    from ubiq.models.toolchain.compress.quantize import calibration_images

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no images"):
        calibration_images(tmp_path / "empty")
