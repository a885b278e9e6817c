import json

import pytest

from ubiq.errors import ModelError
from ubiq.manifest import DecoderSpec, InputSpec, ModelManifest, Preprocess, manifest_path_for


def make_manifest():
    return ModelManifest(
        name="tiny",
        task="detect",
        format="onnx",
        input=InputSpec("images", (1, 3, 320, 320), "float32", "NCHW"),
        preprocess=Preprocess(320, 320),
        decoder=DecoderSpec("yolo", {"num_classes": 2}),
        labels=("cat", "dog"),
        sha256="ab" * 32,
    )


def test_round_trip_through_json(tmp_path):
    manifest = make_manifest()
    path = manifest.save(tmp_path / "tiny.json")
    loaded = ModelManifest.load(path)
    assert loaded == manifest
    assert loaded.decoder.params["num_classes"] == 2
    assert manifest_path_for(tmp_path / "tiny.onnx") == tmp_path / "tiny.json"


def test_unknown_key_is_named(tmp_path):
    data = make_manifest().to_dict()
    data["preprocess"]["means"] = [0, 0, 0]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelError, match=r"unknown key 'preprocess.means'"):
        ModelManifest.load(path)


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("input", "layout", "NWHC", "input.layout must be one of NCHW, NHWC, got 'NWHC'"),
        ("preprocess", "resize", "crop", "preprocess.resize must be one of"),
        (None, "task", "dance", "task must be one of"),
        ("preprocess", "std", [1, 0, 1], "std > 0"),
    ],
)
def test_bad_values_are_named(section, key, value, message):
    data = make_manifest().to_dict()
    (data[section] if section else data)[key] = value
    with pytest.raises(ModelError, match=message):
        ModelManifest.from_dict(data)


def test_unreadable_manifest(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ModelError, match="cannot read manifest"):
        ModelManifest.load(path)
