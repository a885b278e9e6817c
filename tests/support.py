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


class CountingSource:
    """A finite file-like (not live) source of ``count`` small frames whose pixels hold
    their index (mod 256), with the Source interface the runner reads."""

    is_live = False
    fps = 10.0
    frame_size = (8, 8)
    dropped_frames = 0
    reconnects = 0
    source_id = "counting"

    def __init__(self, count: int) -> None:
        self.count = count

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def __iter__(self):
        import numpy as np

        from ubiq.types import Frame

        for index in range(self.count):
            image = np.full((8, 8, 3), index % 256, np.uint8)
            yield Frame(image, index, int(index * 1e8), self.source_id)


def assert_concurrent_runs_match(one, many, feeds: list[dict], repeats: int = 3) -> None:
    """Runs ``feeds`` (repeated) on backend ``many`` from 4 threads at once and checks each
    answer against backend ``one``'s answer to the same feed, run alone."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    expected = [one.run(feed) for feed in feeds]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(many.run, feeds * repeats))
    for index, outputs in enumerate(got):
        for key, value in expected[index % len(feeds)].items():
            np.testing.assert_allclose(outputs[key], value, rtol=1e-4, atol=1e-4)


def play_audio(pipeline, samples) -> list:
    """Feeds 16 kHz ``samples`` to a speech pipeline in 32 ms chunks, as a microphone would,
    then flushes it; returns its events."""
    import numpy as np

    from ubiq.types import AudioChunk

    events = []
    for start in range(0, len(samples), 512):
        block = np.zeros(512, np.float32)
        part = samples[start : start + 512]
        block[: len(part)] = part
        events += pipeline.feed(AudioChunk(block, 16000, int(start * 1e9 / 16000)))
    return events + pipeline.flush()
