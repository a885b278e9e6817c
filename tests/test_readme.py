"""The README's command blocks run as written, in order, in a scratch folder."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from support import REPO

README = (REPO / "README.md").read_text()


def block_after(marker: str) -> list[list[str]]:
    """The commands of the first ```bash block after ``marker``."""
    block = re.search(re.escape(marker) + r".*?```bash\n(.*?)```", README, re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def run_block(commands: list[list[str]], cwd, **env: str) -> list[subprocess.CompletedProcess]:
    results = []
    for words in commands:
        if words[0] == "ubiq":
            words = [sys.executable, "-m", "ubiq", *words[1:]]
        elif words[0] == "python":
            words = [sys.executable, *words[1:]]
        result = subprocess.run(
            words,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, **env},
            check=False,
        )
        assert result.returncode == 0, (words, result.stderr)
        results.append(result)
    return results


def test_the_frames_at_once_block(tmp_path, ubiq_home):
    commands = block_after("**Frames at once** (`--streams N`)")
    assert [c[:2] for c in commands] == [["ubiq", "detect"], ["ubiq", "detect"]]
    results = run_block(commands, tmp_path)
    at_once = (tmp_path / "runs" / "at-once.jsonl").read_bytes()
    assert at_once == (tmp_path / "runs" / "one-by-one.jsonl").read_bytes()
    assert at_once.count(b"\n") == 150
    streams = min(os.cpu_count() or 1, 4)
    if streams > 1:
        assert f"{streams} frames at once" in results[0].stderr
    assert "frames at once" not in results[1].stderr


def test_the_track_block(tmp_path, ubiq_home):
    pytest.importorskip("trackers")
    commands = block_after("## Track:")
    assert [c[:2] for c in commands] == [
        ["ubiq", "track"],
        ["python", "-m"],
        ["ubiq", "track"],
        ["ubiq", "val"],
    ]
    results = run_block(commands, tmp_path)
    assert (tmp_path / "runs" / "track" / "faces.mp4").stat().st_size > 10_000
    assert "track.start" in (tmp_path / "runs" / "track" / "faces.jsonl").read_text()
    assert "SYN-7" in results[-1].stdout and "COMBINED" in results[-1].stdout


def test_the_segment_block(tmp_path, ubiq_home):
    commands = block_after("## Segment:")
    assert all(c[:2] == ["ubiq", "segment"] for c in commands) and len(commands) == 3
    run_block(commands, tmp_path)
    runs = tmp_path / "runs" / "segment"
    assert len(list((runs / "masks").glob("*.png"))) == 60
    for name in ("overlay.mp4", "blurred.mp4", "faces.mp4"):
        assert (runs / name).stat().st_size > 10_000


def test_the_openvino_block(tmp_path):
    pytest.importorskip("openvino")
    commands = block_after("**OpenVINO.**")
    assert [c[:2] for c in commands] == [["ubiq", "detect"]] * 2 + [["ubiq", "bench"]]
    # Its own UBIQ_HOME: the winner `ubiq bench --devices all` records must not reach the
    # `--device auto` runs of other tests.
    results = run_block(commands, tmp_path, UBIQ_HOME=str(tmp_path / "home"))
    assert "openvino" in results[0].stderr and "60 frames" in results[0].stderr
    assert "f32" in results[1].stderr
    assert "openvino" in results[2].stdout + results[2].stderr


def test_the_apps_block(tmp_path, ubiq_home):
    commands = block_after("## Apps:")
    assert [c[:2] for c in commands] == [
        ["ubiq", "apps"],
        ["ubiq", "run"],
        ["ubiq", "run"],
        ["ubiq", "run"],
    ]
    run_block(commands, tmp_path)
    runs = tmp_path / "runs"
    assert '"kind":"counts"' in (runs / "counter" / "events.jsonl").read_text()
    assert "zone.occupancy" in (runs / "zone" / "alerts.jsonl").read_text()
    assert (runs / "privacy" / "blurred.mp4").stat().st_size > 10_000


def test_the_learn_block(tmp_path, ubiq_home):
    commands = block_after("## Learn:")
    assert [c[:2] for c in commands] == [["ubiq", "data"], ["ubiq", "learn"], ["ubiq", "classify"]]
    results = run_block(commands, tmp_path)
    assert "learned 6 classes" in results[1].stdout
    answers = (tmp_path / "runs" / "learn" / "answers.jsonl").read_text().splitlines()
    assert len(answers) == 6 * 20
    # the held-out pictures of the six objects: well above chance (1 in 6)
    assert "pictures in folders named after a class" in results[2].stdout
    share = float(results[2].stdout.split("(")[-1].split("%")[0])
    assert share > 35, results[2].stdout


def test_the_no_training_listen_block(tmp_path, ubiq_home):
    """Your own command list, heard at once: the block runs on a recording of one of them."""
    import json

    import numpy as np

    from ubiq.models.datasets.commands import make_clip
    from ubiq.models.runtime.audio_features import write_wav

    commands = block_after("**No training wait**")
    assert [c[:2] for c in commands] == [["ubiq", "listen"]]
    (tmp_path / "my-commands.txt").write_text("open the garage\ntake a photo\ngood night\n")
    rng = np.random.default_rng(0)
    parts = [make_clip(t, "en-us-nyc", 150, 50, snr_db=20, rng=rng).samples
             for t in ("take a photo", "good morning")]  # fmt: skip
    write_wav(tmp_path / "talk.wav", np.concatenate(parts), 16000)
    run_block(commands, tmp_path)
    records = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records if r["kind"] == "speech.command"] == ["take a photo"]
