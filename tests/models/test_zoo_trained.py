"""The detector ubiq trained and ships: pulled from the package, scored on unseen images."""

import json

import pytest
from support import run_ubiq

from ubiq.manifest import ModelManifest, manifest_path_for
from ubiq.paths import file_sha256

pytest.importorskip("skimage")


@pytest.mark.parametrize("name, side", [("ubiq-det-mnv2", 256), ("ubiq-det-mnv2-320", 320)])
def test_packaged_detector_pulls_verified_with_its_manifest(ubiq_home, name, side):
    from ubiq.models.zoo import get_entry, pull

    path = pull(name, progress=False)
    assert file_sha256(path) == get_entry(name).sha256
    manifest = ModelManifest.load(manifest_path_for(path))
    assert manifest.name == name
    assert manifest.labels == ("cat", "cup", "rocket", "motorcycle", "astronaut", "coin")
    assert manifest.decoder.name == "yolo" and manifest.input.shape == (1, 3, side, side)
    assert manifest.license == "Apache-2.0"


@pytest.mark.parametrize("name", ["ubiq-det-mnv2", "ubiq-det-mnv2-320"])
def test_packaged_detector_reaches_map50_half_on_a_fresh_held_out_set(ubiq_home, tmp_path, name):
    from ubiq.models.datasets.synth import generate_detection_set

    # A seed no training or validation run used: new backgrounds, placements, augmentations.
    data = generate_detection_set(
        tmp_path / "heldout",
        train_images=1,
        val_images=80,
        imgsz=256,
        seed=424242,
        progress=False,
    )
    result = run_ubiq("val", name, "--data", str(data), "--json", timeout=300)
    assert result.returncode == 0, result.stderr
    scored = json.loads(result.stdout)
    assert scored["images"] == 80
    assert scored["map50"] >= 0.5, scored
    assert scored["map50_95"] < scored["map50"]
