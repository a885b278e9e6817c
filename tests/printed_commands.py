"""Finds the `ubiq ...` commands that help texts and hints print, and runs them.

Convention (kept by ubiq/cli/deploy.py, ubiq/cli/doctor.py and ubiq.deploy): a printed ubiq
command is in backticks or double quotes and runs as written. :func:`loose_mentions` finds a
`ubiq WORD` outside them, so an example that breaks the convention fails a test too.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

_BACKTICKS = re.compile(r"`([^`]*)`")
_DOUBLE_QUOTES = re.compile(r'"([^"]*)"')
_MENTION = re.compile(r"\bubiq [a-z]")
_CAMERA = re.compile(r"^(\d+|/dev/video\d+|picam(:\d+)?|csi(:\d+)?|usb:.+)$")

USAGE_ERROR = 2
"""argparse's exit status (a ConfigError exits 2 too: tell them apart by ``usage:``)."""

HARDWARE_ERRORS = {3: "SourceError", 5: "BackendUnavailable"}
"""Exit statuses that mean a device is missing, not that the command is wrong."""


def _is_ubiq(words: list[str]) -> bool:
    return bool(words) and (words[0] == "ubiq" or words[0].endswith("/ubiq"))


def _spans(text: str) -> list[str]:
    """Backticked spans, then double-quoted spans outside them, whitespace collapsed (help
    texts are wrapped by argparse)."""
    spans = _BACKTICKS.findall(text)
    spans += _DOUBLE_QUOTES.findall(_BACKTICKS.sub(" ", text))
    return [" ".join(span.split()) for span in spans]


def printed_commands(text: str) -> list[list[str]]:
    """The ubiq commands in ``text``, as argument lists; a leading ``sudo`` is dropped."""
    commands = []
    for span in _spans(text):
        try:
            words = shlex.split(span)
        except ValueError:
            continue
        if words[:1] == ["sudo"]:
            words = words[1:]
        if _is_ubiq(words):
            commands.append(words)
    return commands


def loose_mentions(text: str) -> list[str]:
    """`ubiq WORD` outside backticks and double quotes (and outside argparse's usage
    paragraph, which names the command being described)."""
    if text.startswith("usage:"):
        text = text.partition("\n\n")[2]
    text = _DOUBLE_QUOTES.sub(" ", _BACKTICKS.sub(" ", text))
    return [text[max(0, m.start() - 30) : m.end() + 30] for m in _MENTION.finditer(text)]


def needs_camera(words: list[str]) -> bool:
    """Whether the command reads a camera (``--source 0``, ``picam``, ``csi:0``, ...)."""
    if "--source" not in words:
        return False
    return bool(_CAMERA.match(words[words.index("--source") + 1]))


def without_camera(words: list[str]) -> list[str]:
    """The command on the demo clip for two frames instead of its camera."""
    words = list(words)
    words[words.index("--source") + 1] = "demo"
    if "--max-frames" not in words:
        words += ["--max-frames", "2"]
    return words


def run_printed(words: list[str], cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """Runs a printed ubiq command (through ``python -m ubiq``) in ``cwd``."""
    assert _is_ubiq(words), words
    return subprocess.run(
        [sys.executable, "-m", "ubiq", *words[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=dict(os.environ),
        check=False,
    )


def assert_ran(words: list[str], done: subprocess.CompletedProcess, hardware_ok: bool) -> None:
    """Asserts the command worked, or (``hardware_ok``) failed only for a missing device."""
    shown = f"{shlex.join(words)} -> exit {done.returncode}\n{done.stderr[-2000:]}"
    assert "usage:" not in done.stderr, shown
    assert "Traceback" not in done.stderr, shown
    if hardware_ok and done.returncode in HARDWARE_ERRORS:
        assert done.stderr.startswith(f"ubiq {words[1]}: error: "), shown
        return
    assert done.returncode == 0, shown
