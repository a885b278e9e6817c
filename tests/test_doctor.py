"""`ubiq doctor`'s rules (ubiq.deploy.problems): every rule fires on some report, and every
`ubiq ...` command a fix prints runs.

Reports of the real machine and of fake Pi, Jetson and Coral trees are in
tests/hardware/test_platform.py.
"""

import ast
import inspect
import os
import re
import sys

import pytest
from printed_commands import (
    assert_ran,
    loose_mentions,
    needs_camera,
    printed_commands,
    run_printed,
    without_camera,
)

from ubiq.deploy import problems as rules
from ubiq.deploy.doctor import format_report
from ubiq.hardware.platform import CoralDevice, PlatformInfo

PI5 = PlatformInfo(
    machine="aarch64",
    system="Linux 6.6.51",
    os_name="Debian GNU/Linux 12 (bookworm)",
    python="3.11.2",
    board="raspberry-pi",
    model="Raspberry Pi 5 Model B Rev 1.0",
    pi_generation=5,
    coral=(CoralDevice("usb", "/sys/bus/usb/devices/2-1", "usb (firmware not loaded yet)"),),
)
PI4 = PlatformInfo(
    machine="aarch64", system="Linux", os_name="", python="3.11", board="raspberry-pi"
)
JETSON = PlatformInfo(
    machine="aarch64",
    system="Linux 5.15",
    os_name="Ubuntu 22.04",
    python="3.10.12",
    board="jetson",
    l4t="99.9.9",  # not in the JetPack table
)
LAPTOP = PlatformInfo(machine="x86_64", system="Linux", os_name="", python="3.11")

ALL_FLAGS = {"under_voltage": True, "throttled": True, "soft_temperature_limit": True}


def runtimes(opencv: str | None, gstreamer: bool, runtime: bool) -> dict:
    """The ``runtimes`` of a report: OpenCV without GStreamer, no accelerator library."""
    return {
        "opencv": {"version": opencv, "gstreamer": False},
        "onnxruntime": {
            "version": "1.20.0" if runtime else None,
            "providers": ["CPUExecutionProvider"] if runtime else [],
        },
        "ai-edge-litert": {"version": None},
        "tflite-runtime": {"version": None},
        "libedgetpu": {"library": None},
        "picamera2": {"importable": False},
        "gstreamer": {"available": gstreamer, "version": "1.22.0" if gstreamer else None},
    }


def report(opencv: str | None = "4.10.0", gstreamer: bool = False, runtime: bool = False):
    """A report with everything wrong that can be wrong at once."""
    return {
        "root": "/fake",
        "runtimes": runtimes(opencv, gstreamer, runtime),
        "cameras": [],
        "health": {
            "temperature_c": 85.5,
            "throttled": {"hex": "0x50005", "now": ALL_FLAGS, "since_boot": ALL_FLAGS},
        },
    }


def _rules() -> dict[int, str]:
    """Every ``_problem(...)`` call in ubiq.deploy.problems: its line and its source."""
    source = inspect.getsource(rules)
    return {
        node.lineno: ast.get_source_segment(source, node)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == "_problem"
    }


@pytest.fixture
def all_problems(monkeypatch, tmp_path) -> list[dict]:
    """The problems of reports that, together, make every rule fire (checked)."""
    camera = tmp_path / "video0"  # a camera node this user cannot open
    camera.touch(mode=0o000)
    unreadable = {**report(runtime=True), "root": "/", "cameras": [{"path": str(camera)}]}
    cases = [
        (report(), PI5),
        (report(opencv=None), PI4),
        (report(gstreamer=True, runtime=True), JETSON),
        (unreadable, LAPTOP),
    ]
    fired = set()
    make = rules._problem

    def recording(severity: str, problem: str, fix: str) -> dict:
        fired.add(sys._getframe(1).f_lineno)
        return make(severity, problem, fix)

    monkeypatch.setattr(rules, "_problem", recording)
    found = [p for case, platform in cases for p in rules.find_problems(case, platform)]
    expected = _rules()
    if os.geteuid() == 0:  # root opens any node: that one rule cannot fire
        expected = {line: text for line, text in expected.items() if "not readable" not in text}
    assert len(expected) >= 14 and fired == set(expected), set(expected) - fired
    return found


def test_each_problem_has_a_severity_and_a_fix(all_problems):
    assert {p["severity"] for p in all_problems} == {"error", "warning", "info"}
    for problem in all_problems:
        assert set(problem) == {"severity", "problem", "fix"} and problem["fix"]
    problems = " ".join(p["problem"] for p in all_problems)
    assert "picamera2 is not importable: the Pi camera (source picam)" in problems
    assert "under-voltage since boot (0x50005)" in problems
    assert "L4T 99.9.9 is not in ubiq's JetPack table" in problems


def test_every_ubiq_command_in_a_fix_runs(all_problems, tmp_path, blazeface_path):
    texts = [p["fix"] for p in all_problems] + [p["problem"] for p in all_problems]
    for text in texts:
        assert loose_mentions(text) == [], text
    commands = {tuple(words) for text in texts for words in printed_commands(text)}
    assert commands == {
        ("ubiq", "detect", "--source", "demo"),
        ("ubiq", "detect", "--source", "picam"),
    }
    for words in sorted(commands):
        words = list(words)
        if needs_camera(words):  # picam: no Pi camera here, only that may fail
            assert_ran(words, run_printed(words, tmp_path), hardware_ok=True)
            words = without_camera(words)
        assert_ran(words, run_printed(words, tmp_path), hardware_ok=False)


def test_the_table_shows_each_problem_and_fix():
    data, platform = report(), PI5
    found = rules.find_problems(data, platform)
    full = {
        **data,
        "platform": platform.to_dict(),
        "microphones": [],
        "speech": {
            "silero_vad": None,
            "portaudio": None,
            "sounddevice": None,
            "espeak_ng": None,
            "transcribers": [],
        },
        "accelerators": [],
        "problems": found,
    }
    full["runtimes"] = {
        **full["runtimes"],
        "python": {"version": "3.11.2"},
        "numpy": {"version": "2.1.0"},
    }
    table = format_report(full)
    first = table.splitlines()[0]
    assert first.split(maxsplit=1) == [
        "platform",
        "aarch64, Debian GNU/Linux 12 (bookworm), Raspberry Pi 5 Model B Rev 1.0",
    ]
    assert f"{len(found)} problem(s)" in table
    for problem in found:
        assert f"  [{problem['severity']}] {problem['problem']}" in table
        assert f"      fix: {problem['fix']}" in table
    assert re.search(r"^temperature +85\.5 C$", table, re.MULTILINE)
    assert printed_commands(table) and loose_mentions(table) == []
