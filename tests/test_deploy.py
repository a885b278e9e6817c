"""`ubiq deploy`: the systemd unit (checked by systemd-analyze) and device bundles."""

import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from ubiq.cli import main
from ubiq.cli.deploy import UNIT_TEMPLATE, build_bundle, exec_start, render_unit
from ubiq.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_template_file_matches_the_built_in_one():
    template = (REPO / "deploy/systemd/ubiq@.service.in").read_text()
    assert template == UNIT_TEMPLATE


def test_rendered_unit_fields():
    unit = render_unit("people", "/usr/bin/true --flag 'two words' 50%", user="edge")
    lines = unit.splitlines()
    for expected in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=60",
        "User=edge",
        "SupplementaryGroups=video audio",
        "Restart=on-failure",
        "RestartSec=5",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=15",
        "StandardOutput=journal",
        'ExecStart=/usr/bin/true --flag "two words" 50%%',
    ):
        assert expected in lines
    assert "@" not in unit.replace("ubiq@", "")  # every placeholder filled


def test_relative_program_is_resolved_to_an_absolute_path():
    assert exec_start("true").split()[0] == shutil.which("true")
    with pytest.raises(ConfigError, match="'no-such-program-xyz' is not on PATH"):
        exec_start("no-such-program-xyz --x")
    with pytest.raises(ConfigError, match="must not be empty"):
        exec_start("  ")
    with pytest.raises(ConfigError, match="APP must be"):
        render_unit("../evil", "/usr/bin/true")


# systemd-analyze verify prints warnings but still exits 0 for unknown keys or bad values,
# so the test also asserts that nothing was said about the unit. Lines about the service
# user are allowed: the `ubiq` user does not exist on a build machine (some systemd
# versions mention it; 252 does not).
ALLOWED = re.compile(r"user|User=|getpwnam|ubiq.*not found", re.IGNORECASE)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_unit_passes_systemd_analyze_verify(tmp_path):
    unit_path = tmp_path / "ubiq@people.service"
    unit_path.write_text(render_unit("people", "/usr/bin/true detect csi:0 --model blazeface"))
    completed = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    output = (completed.stdout + completed.stderr).splitlines()
    complaints = [line for line in output if line.strip() and not ALLOWED.search(line)]
    assert completed.returncode == 0, output
    assert complaints == []


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_systemd_analyze_does_catch_a_broken_unit(tmp_path):
    """Guards the test above: verify must complain about a bad line in our unit."""
    unit_path = tmp_path / "ubiq@broken.service"
    unit = render_unit("broken", "/usr/bin/true").replace("RestartSec=5", "RestartSec=soon")
    unit_path.write_text(unit)
    completed = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit_path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert "ubiq@broken.service:" in completed.stdout + completed.stderr
    assert "soon" in completed.stdout + completed.stderr


def test_install_dry_run_prints_and_writes_nothing(tmp_path, capsys):
    code = main(
        ["deploy", "install", "cam1", "--command", "/usr/bin/true x", "--unit-dir", str(tmp_path)]
        + ["--dry-run"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert f"# {tmp_path / 'ubiq@cam1.service'}" in out
    assert "ExecStart=/usr/bin/true x" in out
    assert list(tmp_path.iterdir()) == []


def test_install_writes_the_unit_and_prints_next_steps(tmp_path, capsys):
    command = ["deploy", "install", "cam1", "--command", "/usr/bin/true x"]
    code = main([*command, "--unit-dir", str(tmp_path), "--user", "no-such-user-xyz"])
    assert code == 0
    unit = (tmp_path / "ubiq@cam1.service").read_text()
    assert "User=no-such-user-xyz" in unit
    out = capsys.readouterr().out
    assert "sudo useradd --system --groups video,audio no-such-user-xyz" in out
    assert "sudo systemctl enable --now ubiq@cam1" in out


def test_install_into_a_missing_folder_says_root_is_needed(tmp_path, capsys):
    code = main(
        ["deploy", "install", "cam1", "--command", "/usr/bin/true", "--unit-dir"]
        + [str(tmp_path / "missing")]
    )
    assert code != 0
    assert "needs root" in capsys.readouterr().err


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {member.name: member for member in tar.getmembers()}


def test_bundle_contents(tmp_path, blazeface_path):
    config = tmp_path / "people.yaml"
    config.write_text("source: csi:0\n")
    archive = build_bundle("people", "pi5", blazeface_path, tmp_path / "dist", config)
    assert archive == tmp_path / "dist" / "people-pi5.tar.gz"
    found = members(archive)
    assert set(found) == {
        "people/bundle.json",
        "people/check.sh",
        "people/model/blazeface.tflite",
        "people/model/blazeface.json",
        "people/config/people.yaml",
    }
    assert found["people/check.sh"].mode & 0o111 == 0o111
    assert found["people/model/blazeface.tflite"].size == blazeface_path.stat().st_size
    with tarfile.open(archive) as tar:
        info = json.load(tar.extractfile("people/bundle.json"))
        check = tar.extractfile("people/check.sh").read().decode()
    assert info["app"] == "people" and info["target"] == "pi5"
    assert info["conversion"] == "none (ubiq has no converter for pi5 yet)"
    assert info["model"]["file"] == "model/blazeface.tflite"
    assert info["model"]["manifest"] == "model/blazeface.json"
    assert len(info["model"]["sha256"]) == 64
    assert info["config"] == "config/people.yaml"
    assert check.startswith("#!/bin/sh")
    assert "doctor --json" in check
    assert 'bench "model/blazeface.tflite" --runs 20' in check
    assert not list((tmp_path / "dist").glob("*.partial"))


def test_bundle_cli_without_config(tmp_path, blazeface_path, capsys):
    code = main(
        ["deploy", "bundle", "cam", "--target", "jetson", "--model", str(blazeface_path)]
        + ["--out", str(tmp_path)]
    )
    assert code == 0
    assert "cam-jetson.tar.gz" in capsys.readouterr().out
    assert "cam/config" not in " ".join(members(tmp_path / "cam-jetson.tar.gz"))


def test_coral_bundle_needs_an_edgetpu_model(tmp_path, blazeface_path):
    with pytest.raises(ConfigError, match=r"_edgetpu\.tflite.*got blazeface\.tflite"):
        build_bundle("cam", "coral", blazeface_path, tmp_path)
    compiled = tmp_path / "blazeface_edgetpu.tflite"
    compiled.write_bytes(blazeface_path.read_bytes())
    archive = build_bundle("cam", "coral", compiled, tmp_path / "out")
    with tarfile.open(archive) as tar:
        info = json.load(tar.extractfile("cam/bundle.json"))
    assert info["conversion"] == "none (already compiled for the Edge TPU)"
    assert info["model"]["manifest"] is None


def test_bundle_rejects_bad_inputs(tmp_path, blazeface_path):
    with pytest.raises(ConfigError, match="--config file not found"):
        build_bundle("cam", "pi5", blazeface_path, tmp_path, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="--target must be one of"):
        build_bundle("cam", "pi3", blazeface_path, tmp_path)


def test_install_errors_name_the_subcommand_not_the_service_command(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ubiq",
            "deploy",
            "install",
            "bad name/x",
            "--command",
            "ubiq detect",
            "--dry-run",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.startswith("ubiq deploy: error: APP must be")


def test_bundle_into_an_unwritable_folder_is_one_line(blazeface_path, tmp_path):
    import subprocess
    import sys

    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ubiq",
            "deploy",
            "bundle",
            "app",
            "--target",
            "pi5",
            "--model",
            str(blazeface_path),
            "--out",
            str(blocker / "sub"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("ubiq deploy: error: --out: cannot write")
    assert not list(tmp_path.glob("**/*.partial"))
