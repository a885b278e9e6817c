"""ubiq compress: recipes, bad input, and an end-to-end run with its report and gates."""

import pytest
from support import run_ubiq

from ubiq.errors import ConfigError
from ubiq.models.compress.recipe import CompressRecipe, load_recipe, recipe_from_flags


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
