"""Tests of the model zoo: catalog, cache, fetching from every source kind, and the CLI.

Offline: HTTP sources are served from a loopback server; the real BlazeFace pull goes
through the pinned mediapipe wheel on PyPI (the official address fails fast here).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import http.server
import importlib.util
import json
import os
import socket
import threading
from pathlib import Path

import pytest
from support import one_op_onnx

from ubiq.cli import models as models_cli
from ubiq.errors import ModelError, ZooError
from ubiq.manifest import ModelManifest, manifest_path_for
from ubiq.models import zoo
from ubiq.models.zoo import catalog, fetch

BLAZEFACE_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"
HAS_ULTRALYTICS = importlib.util.find_spec("ultralytics") is not None
needs_ultralytics = pytest.mark.skipif(
    not HAS_ULTRALYTICS, reason="ultralytics is not installed (pip install 'ubiq[yolo]')"
)


@pytest.fixture(autouse=True)
def ubiq_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own cache; nothing is written to ~/.cache/ubiq."""
    home = tmp_path / "ubiq-home"
    monkeypatch.setenv("UBIQ_HOME", str(home))
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "ultralytics-config"))
    return home


class _Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "served"
    root.mkdir()
    served = _Server(root)
    served.thread.start()
    yield served
    served.httpd.shutdown()
    served.httpd.server_close()


@pytest.fixture
def payload(server: _Server) -> bytes:
    data = os.urandom(50_000) + b"model"
    (server.root / "model.tflite").write_bytes(data)
    return data


def _closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/model.tflite"


def _use_entry(monkeypatch: pytest.MonkeyPatch, *urls: str, sha256: str, name: str = "tiny"):
    """Adds a zoo entry (BlazeFace's manifest) whose sources are ``urls``."""
    entry = dataclasses.replace(
        zoo.get_entry("blazeface"),
        name=name,
        filename=f"{name}.tflite",
        sha256=sha256,
        sources=tuple(zoo.ZooSource(kind="url", url=url) for url in urls),
    )
    monkeypatch.setattr(catalog, "_ENTRIES", (*catalog._ENTRIES, entry))
    return entry


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- catalog -------------------------------------------------------------------------------


def test_catalog_entries_are_complete_and_manifests_valid() -> None:
    entries = {entry.name: entry for entry in zoo.list_entries()}
    assert {"blazeface", "selfie-seg", "efficientdet-lite0", "yolov8n", "yolo11n"} <= set(entries)
    assert entries["blazeface"].sha256 == BLAZEFACE_SHA256
    assert [s.kind for s in entries["blazeface"].sources] == ["url", "pip-wheel"]
    assert entries["yolov8n"].extra == "yolo" and entries["yolov8n"].license == "AGPL-3.0"
    for entry in entries.values():
        if entry.manifest:
            manifest = ModelManifest.from_dict({**entry.manifest, "sha256": "", "source": ""})
            assert manifest.task == entry.task and manifest.license == entry.license
    efficientdet = ModelManifest.from_dict(entries["efficientdet-lite0"].manifest)
    assert len(efficientdet.labels) == 90
    assert efficientdet.labels[0] == "person" and efficientdet.labels[11] == "???"
    assert efficientdet.labels[89] == "toothbrush"
    assert sum(label != "???" for label in efficientdet.labels) == 80
    seg = ModelManifest.from_dict(entries["selfie-seg"].manifest)
    assert seg.input.shape == (1, 256, 256, 3) and seg.decoder.params == {"threshold": 0.5}


def test_unknown_name_suggests_close_names() -> None:
    with pytest.raises(ZooError, match=r"unknown model 'blazefac'; did you mean: blazeface"):
        zoo.get_entry("blazefac")
    with pytest.raises(ZooError, match=r"ubiq models list shows all"):
        zoo.pull("no-such-model-at-all")


def test_ubiq_home_is_read_at_call_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert zoo.cache_dir() == tmp_path / "ubiq-home" / "models"
    monkeypatch.setenv("UBIQ_HOME", str(tmp_path / "elsewhere"))
    assert zoo.cache_dir() == tmp_path / "elsewhere" / "models"
    assert zoo.model_dir("blazeface") == tmp_path / "elsewhere" / "models" / "blazeface"
    monkeypatch.delenv("UBIQ_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert zoo.cache_dir() == tmp_path / "xdg" / "ubiq" / "models"
    assert zoo.cached_path("blazeface") is None


# --- url source ----------------------------------------------------------------------------


def test_url_download_is_verified_cached_and_has_manifest(
    server: _Server, payload: bytes, ubiq_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.url("model.tflite")
    _use_entry(monkeypatch, url, sha256=_sha(payload))
    path = zoo.pull("tiny", progress=False)
    assert path == ubiq_home / "models" / "tiny" / "tiny.tflite"
    assert path.read_bytes() == payload
    manifest = ModelManifest.load(manifest_path_for(path))
    assert manifest.sha256 == _sha(payload) and manifest.source == url
    assert manifest.name == "blazeface" and manifest.decoder.name == "blazeface"
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny.json", "tiny.tflite"]
    assert zoo.cached_path("tiny") == path
    assert zoo.pull("tiny") == path and zoo.resolve_model("tiny") == path
    assert server.requests == ["/model.tflite"]  # later calls used the cache
    zoo.pull("tiny", force=True)
    assert server.requests == ["/model.tflite"] * 2


def test_unknown_checksum_is_recorded_and_checked_from_the_manifest(
    server: _Server, payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_entry(monkeypatch, server.url("model.tflite"), sha256="")
    path = zoo.pull("tiny")
    assert ModelManifest.load(manifest_path_for(path)).sha256 == _sha(payload)
    path.write_bytes(b"truncated")
    assert zoo.cached_path("tiny") is None
    assert zoo.pull("tiny").read_bytes() == payload


def test_corrupt_cached_file_is_fetched_again(
    server: _Server, payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use_entry(monkeypatch, server.url("model.tflite"), sha256=_sha(payload))
    path = zoo.pull("tiny")
    path.write_bytes(payload[:100])
    assert zoo.cached_path("tiny") is None
    assert zoo.resolve_model("tiny").read_bytes() == payload
    assert len(server.requests) == 2


def test_wrong_checksum_raises_and_leaves_no_file(
    server: _Server, payload: bytes, ubiq_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = _sha(b"something else")
    url = server.url("model.tflite")
    _use_entry(monkeypatch, url, sha256=wrong)
    with pytest.raises(ZooError) as caught:
        zoo.pull("tiny")
    message = str(caught.value)
    assert f"expected {wrong}" in message and f"got {_sha(payload)}" in message and url in message
    model_dir = ubiq_home / "models" / "tiny"
    assert not model_dir.exists() or list(model_dir.iterdir()) == []
    assert zoo.cached_path("tiny") is None


def test_unreachable_sources_fall_through_to_the_next(
    server: _Server, payload: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed, missing, good = (
        _closed_port_url(),
        server.url("missing.tflite"),
        server.url("model.tflite"),
    )
    _use_entry(monkeypatch, closed, missing, good, sha256=_sha(payload))
    assert zoo.pull("tiny").read_bytes() == payload
    assert server.requests == ["/missing.tflite", "/model.tflite"]


def test_all_sources_failing_gives_one_line_naming_each(
    server: _Server, ubiq_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed, missing = _closed_port_url(), server.url("missing.tflite")
    _use_entry(monkeypatch, closed, missing, sha256=BLAZEFACE_SHA256)
    with pytest.raises(ZooError) as caught:
        zoo.pull("tiny", timeout_s=5)
    message = str(caught.value)
    assert "\n" not in message
    assert "'tiny'" in message
    assert f"[1] {closed}: unreachable" in message
    assert f"[2] {missing}: HTTP 404" in message
    assert "run `ubiq models pull tiny` on a machine with internet" in message
    assert "copy ~/.cache/ubiq, or pass the model file's path" in message
    assert not (ubiq_home / "models" / "tiny").exists()


def test_resolve_model_paths_and_names(tmp_path: Path) -> None:
    model = tmp_path / "my.onnx"
    model.write_bytes(b"x")
    assert zoo.resolve_model(str(model)) == model
    assert zoo.resolve_model(model) == model
    with pytest.raises(ModelError, match=r"model file not found: .*missing\.onnx"):
        zoo.resolve_model(str(tmp_path / "missing.onnx"))
    with pytest.raises(ModelError, match=r"try 'blazeface'"):
        zoo.resolve_model("blazeface.tflite")
    with pytest.raises(ZooError, match=r"did you mean: yolov8n"):
        zoo.resolve_model("yolov8")


# --- pip-wheel source (real, through PyPI) -------------------------------------------------


def test_pull_blazeface_through_the_mediapipe_wheel(ubiq_home: Path) -> None:
    path = zoo.pull("blazeface", progress=False, timeout_s=10)
    assert path == ubiq_home / "models" / "blazeface" / "blazeface.tflite"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == BLAZEFACE_SHA256
    manifest = ModelManifest.load(manifest_path_for(path))
    assert manifest.sha256 == BLAZEFACE_SHA256
    assert manifest.source.startswith("pip-wheel mediapipe==0.10.14:")
    assert manifest.input.shape == (1, 128, 128, 3) and manifest.labels == ("face",)
    assert sorted(p.name for p in path.parent.iterdir()) == ["blazeface.json", "blazeface.tflite"]
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    interpreter = litert.Interpreter(model_path=str(path))
    outputs = sorted(tuple(d["shape"]) for d in interpreter.get_output_details())
    assert outputs == [(1, 896, 1), (1, 896, 16)]


def test_wheel_without_the_member_is_a_failed_source(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = dataclasses.replace(
        zoo.get_entry("blazeface"),
        name="tiny",
        sources=(
            zoo.ZooSource(
                kind="pip-wheel",
                package="mediapipe==0.10.14",
                member="mediapipe/no/such.tflite",
                pip_args=catalog.MEDIAPIPE_WHEEL_PIN,
            ),
        ),
    )
    monkeypatch.setattr(catalog, "_ENTRIES", (*catalog._ENTRIES, entry))
    with pytest.raises(ZooError, match=r"has no member mediapipe/no/such\.tflite"):
        zoo.pull("tiny")


# --- Ultralytics ---------------------------------------------------------------------------

REALISTIC_METADATA = {
    "description": "Ultralytics YOLOv8n model trained on coco.yaml",
    "author": "Ultralytics",
    "license": "AGPL-3.0 License (https://ultralytics.com/license)",
    "version": "8.3.40",
    "stride": "32",
    "task": "detect",
    "batch": "1",
    "imgsz": "[320, 320]",
    "names": "{0: 'person', 1: 'bicycle'}",
    "args": "{'batch': 1, 'half': False, 'dynamic': False, 'simplify': True, 'nms': False}",
}


def test_manifest_from_ultralytics_metadata() -> None:
    manifest = zoo.manifest_from_ultralytics_metadata(
        REALISTIC_METADATA, "images", [1, 3, 320, 320]
    )
    assert manifest.name == "yolov8n" and manifest.task == "detect"
    assert manifest.format == "onnx" and manifest.license == "AGPL-3.0"
    assert manifest.labels == ("person", "bicycle")
    assert manifest.input.name == "images" and manifest.input.layout == "NCHW"
    assert manifest.input.shape == (1, 3, 320, 320) and manifest.input.dtype == "float32"
    pre = manifest.preprocess
    assert (pre.width, pre.height, pre.resize, pre.pad_value) == (320, 320, "letterbox", 114)
    assert pre.mean == (0.0, 0.0, 0.0) and pre.std == (255.0, 255.0, 255.0)
    assert pre.channel_order == "rgb"
    assert manifest.decoder.name == "yolo" and dict(manifest.decoder.params) == {
        "num_classes": 2,
        "stride": 32,
    }
    # A dynamic export: symbolic axes take the batch of 1 and imgsz (height, width).
    dynamic = zoo.manifest_from_ultralytics_metadata(
        {**REALISTIC_METADATA, "imgsz": "[256, 320]", "end2end": "True"},
        "images",
        ["batch", 3, "height", "width"],
        name="mine",
    )
    assert dynamic.input.shape == (1, 3, 256, 320) and dynamic.name == "mine"
    assert (dynamic.preprocess.width, dynamic.preprocess.height) == (320, 256)
    assert dynamic.decoder.params["end2end"] is True
    # Gaps in the id space keep label ids aligned.
    gappy = zoo.manifest_from_ultralytics_metadata(
        {**REALISTIC_METADATA, "names": "{0: 'a', 2: 'c'}"}, "images", [1, 3, 320, 320]
    )
    assert gappy.labels == ("a", "class_1", "c") and gappy.decoder.params["num_classes"] == 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"names": None}, r"no 'names' key"),
        ({"names": "{0: 'person'"}, r"'names' is not a Python literal"),
        ({"imgsz": "[320]"}, r"'imgsz' must be \[height, width\], got \[320\]"),
        ({"task": "pose"}, r"task 'pose' is not supported"),
    ],
)
def test_bad_ultralytics_metadata_is_named(change: dict, message: str) -> None:
    metadata = {k: v for k, v in {**REALISTIC_METADATA, **change}.items() if v is not None}
    with pytest.raises(ModelError, match=message):
        zoo.manifest_from_ultralytics_metadata(metadata, "images", [1, 3, 320, 320])


def test_missing_ultralytics_is_a_failed_source_with_the_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args):
        return None if name == "ultralytics" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ZooError) as caught:
        zoo.pull("yolov8n")
    message = str(caught.value)
    assert "[1] ultralytics yolov8n.pt: needs the yolo extra" in message
    assert "pip install 'ubiq[yolo]'" in message and "--model PATH" in message


@needs_ultralytics
@pytest.mark.slow
def test_export_ultralytics_from_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "export"
    path = zoo.export_ultralytics("yolov8n.yaml", out, imgsz=320)
    assert path == out / "model.onnx"
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.onnx"]
    assert list(cwd.iterdir()) == []  # nothing landed in the working directory
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_outputs()[0].shape == [1, 84, 2100]
    manifest = ModelManifest.load(out / "model.json")
    assert manifest.name == "yolov8n" and len(manifest.labels) == 80
    assert manifest.input.shape == (1, 3, 320, 320)
    assert manifest.decoder.params == {"num_classes": 80, "stride": 32}
    assert manifest.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest.source == "ultralytics:yolov8n.yaml"
    with pytest.raises(ValueError, match=r"imgsz must be a positive multiple of 32, got 300"):
        zoo.export_ultralytics("yolov8n.yaml", out, imgsz=300)


@needs_ultralytics
@pytest.mark.slow
def test_pull_through_the_ultralytics_source(
    ubiq_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A yaml builds the network offline; a real entry names .pt weights instead.
    entry = dataclasses.replace(
        zoo.get_entry("yolov8n"),
        name="yolo-tiny",
        filename="yolo-tiny.onnx",
        sources=(zoo.ZooSource(kind="ultralytics", weights="yolov8n.yaml"),),
    )
    monkeypatch.setattr(catalog, "_ENTRIES", (*catalog._ENTRIES, entry))
    monkeypatch.setattr(fetch, "ULTRALYTICS_EXPORT_IMGSZ", 320)
    path = zoo.pull("yolo-tiny")
    assert path == ubiq_home / "models" / "yolo-tiny" / "yolo-tiny.onnx"
    assert sorted(p.name for p in path.parent.iterdir()) == ["yolo-tiny.json", "yolo-tiny.onnx"]
    manifest = ModelManifest.load(manifest_path_for(path))
    assert manifest.name == "yolo-tiny" and manifest.license == "AGPL-3.0"
    assert manifest.source == "ultralytics yolov8n.yaml" and len(manifest.labels) == 80
    assert zoo.cached_path("yolo-tiny") == path  # verified against the recorded sha256


# --- CLI -----------------------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ubiq")
    models_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_list_pull_and_info(
    server: _Server,
    payload: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _use_entry(monkeypatch, server.url("model.tflite"), sha256=_sha(payload))
    args = _parse("models", "list", "--json")
    assert args.handler(args) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["tiny"]["cached"] is False and rows["blazeface"]["license"] == "Apache-2.0"

    args = _parse("models", "pull", "tiny")
    assert args.handler(args) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path.read_bytes() == payload

    args = _parse("models", "list")
    assert models_cli.run(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "TASK", "LICENCE", "CACHED", "SIZE"]
    tiny = next(line for line in lines if line.startswith("tiny "))
    assert tiny.split()[:4] == ["tiny", "detect", "Apache-2.0", "yes"]
    assert tiny.endswith("50.0 KB")
    assert any(
        line.split()[:5] == ["yolov8n", "detect", "AGPL-3.0", "[yolo]", "no"] for line in lines
    )

    args = _parse("models", "info", "tiny", "--json")
    assert args.handler(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cached"] is True and info["path"] == str(path)
    assert info["manifest"]["sha256"] == _sha(payload)

    # The served payload is not a real model: info on the file opens it, and says so.
    args = _parse("models", "info", str(path))
    with pytest.raises(ModelError, match="not a valid TFLite model"):
        args.handler(args)


def test_cli_info_on_files_without_a_sidecar(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not really a model")
    args = _parse("models", "info", str(garbage), "--json")
    with pytest.raises(ModelError, match="garbage.tflite: not a valid TFLite model"):
        args.handler(args)
    args = _parse("models", "info", str(tmp_path / "clip.mp4"))
    (tmp_path / "clip.mp4").write_bytes(b"x")
    with pytest.raises(ModelError, match="unknown model format '.mp4'"):
        args.handler(args)

    bare = one_op_onnx(tmp_path / "bare.onnx", "Transpose", [1, 3, 8, 8], [8, 8, 3, 1])
    args = _parse("models", "info", str(bare), "--json")
    assert args.handler(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["manifest"] is None and "no decoder understands" in info["manifest_from"]
    assert info["sha256"] == _sha(bare.read_bytes())
    assert info["outputs"] == [["features", [8, 8, 3, 1], "float32"]]
    # one vector per image: an embedder, with the preprocessing its input implies
    flat = one_op_onnx(tmp_path / "flat.onnx", "Flatten", [1, 3, 8, 8], [1, 192])
    args = _parse("models", "info", str(flat), "--json")
    assert args.handler(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["manifest"]["task"] == "embed"
    assert info["manifest"]["decoder"] == {
        "name": "embedding",
        "params": {"dim": 192, "preprocess_rule": "ImageNet mean/std (float NCHW input)"},
    }

    args = _parse("models", "info", str(tmp_path / "gone.onnx"))
    with pytest.raises(ModelError, match=r"model file not found"):
        args.handler(args)
    args = _parse("models", "info", "selfie-sg")
    with pytest.raises(ZooError, match=r"did you mean: selfie-seg"):
        args.handler(args)
    args = _parse("models")
    assert args.handler(args) == 2


@needs_ultralytics
@pytest.mark.slow
def test_cli_info_reads_ultralytics_onnx_metadata(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = zoo.export_ultralytics("yolov8n.yaml", tmp_path / "export", imgsz=320)
    manifest_path_for(path).unlink()
    capsys.readouterr()  # drop what Ultralytics printed on its first import
    args = _parse("models", "info", str(path), "--json")
    assert args.handler(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["manifest_from"] == "Ultralytics ONNX metadata"
    assert info["manifest"]["decoder"] == {
        "name": "yolo",
        "params": {"num_classes": 80, "stride": 32},
    }
    assert info["manifest"]["input"]["shape"] == [1, 3, 320, 320]


def test_a_cached_packaged_model_follows_the_installed_manifest(ubiq_home):
    """An upgrade that changes a shipped model's manifest (say a command model's threshold)
    reaches a cache filled by an older install; an up-to-date cache is left alone."""
    path = zoo.pull("ubiq-commands-demo")
    manifest_path = path.with_suffix(".json")
    shipped = json.loads(manifest_path.read_text())
    old = json.loads(manifest_path.read_text())
    old["decoder"]["params"]["threshold"] = 0.9  # what an older install had cached
    manifest_path.write_text(json.dumps(old))
    assert zoo.pull("ubiq-commands-demo") == path
    assert json.loads(manifest_path.read_text()) == shipped
    before = manifest_path.stat().st_mtime_ns
    zoo.pull("ubiq-commands-demo")
    assert manifest_path.stat().st_mtime_ns == before
