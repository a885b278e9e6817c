"""Shared fixtures: one model cache per test session, real models fetched offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ubiq_home(tmp_path_factory):
    """A fresh UBIQ_HOME for the session (the user's ~/.cache/ubiq is never touched)."""
    home = tmp_path_factory.mktemp("ubiq_home")
    previous = os.environ.get("UBIQ_HOME")
    os.environ["UBIQ_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("UBIQ_HOME", None)
    else:
        os.environ["UBIQ_HOME"] = previous


@pytest.fixture(scope="session")
def blazeface_path(ubiq_home) -> Path:
    """The real BlazeFace model, pulled through the zoo (offline route: the mediapipe wheel)."""
    from ubiq.models.zoo import pull

    return pull("blazeface", progress=False)


@pytest.fixture(scope="session")
def yolo_onnx(tmp_path_factory) -> Path:
    """YOLOv8n built from its yaml and exported to ONNX at 320 by Ultralytics (random weights)."""
    pytest.importorskip("ultralytics", reason="the [yolo] extra is not installed")
    from ubiq.models.zoo.ultralytics_adapter import export_ultralytics

    return export_ultralytics("yolov8n.yaml", tmp_path_factory.mktemp("yolo"), imgsz=320)
