"""Helpers shared by tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_ubiq(
    *args: str, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Runs the real `ubiq` command line in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "ubiq", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def one_op_onnx(path: Path, op: str, input_shape: list[int], output_shape: list[int]) -> Path:
    """Writes a one-node float ONNX model (input ``images``, output ``features``)."""
    import pytest

    onnx = pytest.importorskip("onnx")
    helper, float_type = onnx.helper, onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node(op, ["images"], ["features"])],
        path.stem,
        [helper.make_tensor_value_info("images", float_type, input_shape)],
        [helper.make_tensor_value_info("features", float_type, output_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def small_tmpfs(tmp_path: Path, size: str):
    """Yields a folder that is a ``size`` tmpfs (a small disk to fill), unmounted after;
    skips the test where mounting is not allowed (not root)."""
    import pytest

    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}")
    yield folder
    subprocess.run(["umount", str(folder)], check=False)
