"""`ubiq deploy`: the systemd unit (checked by systemd-analyze), device bundles, and every
`ubiq ...` command that `ubiq deploy` prints, run."""

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from printed_commands import (
    assert_ran,
    loose_mentions,
    needs_camera,
    printed_commands,
    run_printed,
    without_camera,
)

from ubiq.cli import main
from ubiq.deploy.bundle import build_bundle
from ubiq.deploy.units import EXAMPLE_COMMAND, exec_start, render_unit, unit_template
from ubiq.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "deploy/systemd/ubiq@.service.in"


def test_the_unit_template_is_the_one_in_deploy():
    assert unit_template() == TEMPLATE.read_text()
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    NEEDLE = "ExecStart=" + "@EXEC_START@"  # split, so this file is not a match
    copies = [
        name
        for name in tracked
        if name and (REPO / name).is_file() and NEEDLE in _text(REPO / name)
    ]
    assert copies == ["deploy/systemd/ubiq@.service.in"]  # no second copy anywhere


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return ""


def test_rendered_unit_fields():
    unit = render_unit("people", "/usr/bin/true --flag 'two words' 50%", user="edge")
    lines = unit.splitlines()
    for expected in (
        "Type=notify",
        "NotifyAccess=main",
        "WatchdogSec=60",
        "TimeoutStartSec=10min",
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
    unit_path.write_text(
        render_unit("people", "/usr/bin/true detect --source csi:0 --model blazeface")
    )
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
    assert info["conversion"] == ["blazeface.tflite: shipped as is (LiteRT)"]
    assert info["alternatives"] == [] and info["device"] == "cpu"
    assert info["model"]["file"] == "model/blazeface.tflite"
    assert info["model"]["manifest"] == "model/blazeface.json"
    assert len(info["model"]["sha256"]) == 64
    assert info["config"] == "config/people.yaml"
    assert check.startswith("#!/bin/sh")
    assert "doctor --json" in check
    assert '"$UBIQ" bench model/blazeface.tflite --device cpu --runs 20' in check
    assert not list((tmp_path / "dist").glob("*.partial"))


def test_bundle_cli_without_config(tmp_path, capsys):
    code = main(
        ["deploy", "bundle", "cam", "--target", "jetson", "--model", "ubiq-det-mnv2"]
        + ["--out", str(tmp_path)]
    )
    assert code == 0
    assert "cam-jetson.tar.gz" in capsys.readouterr().out
    found = members(tmp_path / "cam-jetson.tar.gz")
    assert "cam/config" not in " ".join(found)
    assert {"cam/model/ubiq-det-mnv2.onnx", "cam/model/ubiq-det-mnv2.json"} <= set(found)
    with tarfile.open(tmp_path / "cam-jetson.tar.gz") as tar:
        info = json.load(tar.extractfile("cam/bundle.json"))
        check = tar.extractfile("cam/check.sh").read().decode()
    assert info["device"] == "tensorrt"
    assert "input shape [1, 3, 256, 256]: static, as TensorRT wants" in info["conversion"]
    assert "--device tensorrt" in check and "builds the engine" in check
    assert not (tmp_path / "cam-jetson.models").exists()  # nothing was converted here


def test_coral_bundle_needs_an_edgetpu_or_full_int8_model(tmp_path, blazeface_path):
    with pytest.raises(ConfigError, match=r"blazeface\.tflite is not full int8 \(input float32"):
        build_bundle("cam", "coral", blazeface_path, tmp_path)
    with pytest.raises(ConfigError, match=r"needs a TFLite model, got ubiq-det-mnv2\.onnx"):
        build_bundle("cam", "coral", "ubiq-det-mnv2", tmp_path)
    compiled = tmp_path / "blazeface_edgetpu.tflite"
    compiled.write_bytes(blazeface_path.read_bytes())
    archive = build_bundle("cam", "coral", compiled, tmp_path / "out")
    with tarfile.open(archive) as tar:
        info = json.load(tar.extractfile("cam/bundle.json"))
        check = tar.extractfile("cam/check.sh").read().decode()
    assert info["conversion"] == [
        "blazeface_edgetpu.tflite: already compiled for the Edge TPU, shipped as is"
    ]
    assert info["model"]["manifest"] is None and info["device"] == "coral"
    assert "--device coral" in check


def test_jetson_refuses_tflite_and_dynamic_shapes(tmp_path, blazeface_path):
    import onnx

    from ubiq.manifest import manifest_path_for
    from ubiq.models.zoo import resolve_model

    with pytest.raises(ConfigError, match="jetson runs ONNX through TensorRT"):
        build_bundle("cam", "jetson", blazeface_path, tmp_path)
    source = Path(resolve_model("ubiq-det-mnv2"))
    model = onnx.load(str(source))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    dynamic = tmp_path / "dynamic.onnx"
    onnx.save(model, str(dynamic))
    shutil.copy(manifest_path_for(source), manifest_path_for(dynamic))
    with pytest.raises(ConfigError, match=r"dynamic input shape \['\?', 3, 256, 256\]"):
        build_bundle("cam", "jetson", dynamic, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.tar.gz*"))


@pytest.fixture(scope="module")
def calib_images(tmp_path_factory):
    from ubiq.models.datasets.synth import generate_detection_set

    out = tmp_path_factory.mktemp("calib")
    # a data.yaml: its 16 train images calibrate, and it trains the tiny checkpoint
    return generate_detection_set(
        out, train_images=16, val_images=4, imgsz=96, seed=5, progress=False
    )


def test_x86_bundle_with_calib_ships_fp32_and_int8_and_check_sh_times_both(tmp_path, calib_images):
    archive = build_bundle("cam", "x86", "ubiq-det-mnv2", tmp_path, calib=str(calib_images))
    found = members(archive)
    assert {
        "cam/model/ubiq-det-mnv2.onnx",
        "cam/model/ubiq-det-mnv2.json",
        "cam/model/ubiq-det-mnv2.int8.onnx",
        "cam/model/ubiq-det-mnv2.int8.json",
    } <= set(found)
    assert (
        found["cam/model/ubiq-det-mnv2.int8.onnx"].size
        < found["cam/model/ubiq-det-mnv2.onnx"].size / 2
    )
    with tarfile.open(archive) as tar:
        info = json.load(tar.extractfile("cam/bundle.json"))
        manifest = json.load(tar.extractfile("cam/model/ubiq-det-mnv2.int8.json"))
        tar.extractall(tmp_path / "device", filter="data")
    (alternative,) = info["alternatives"]
    assert alternative["file"] == "model/ubiq-det-mnv2.int8.onnx"
    assert alternative["agreement"]["cosine"] > 0.99 and alternative["agreement"]["images"] == 16
    assert manifest["compression"][-1]["activation_type"] == "uint8"  # x86: u8 activations
    assert "QDQ u8/s8 per-channel minmax on 16 calibration images" in info["conversion"][1]
    # check.sh on this machine (an x86 target): doctor, then both models side by side.
    ubiq = Path(sys.executable).parent / "ubiq"
    done = subprocess.run(
        ["sh", str(tmp_path / "device" / "cam" / "check.sh")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "UBIQ": str(ubiq)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "device" / "cam" / "doctor.json").is_file()
    rows = [line for line in done.stdout.splitlines() if line.startswith("model/ubiq-det-mnv2")]
    assert len(rows) == 2 and rows[0].endswith("1.00x") and rows[1].endswith("x")


def test_pi5_int8_uses_int8_activations(tmp_path, calib_images):
    archive = build_bundle("cam", "pi5", "ubiq-det-mnv2", tmp_path, calib=str(calib_images))
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("cam/model/ubiq-det-mnv2.int8.json"))
    assert manifest["compression"][-1]["activation_type"] == "int8"


FAKE_EDGETPU_COMPILER = r"""
# Stands in for Coral's edgetpu_compiler (x86-64 Debian package, not installable here):
# same options (-s, -o/--out_dir), same output file names and the same report lines.
import os, shutil, sys
from pathlib import Path
args = sys.argv[1:]
out = Path(".")
models = []
while args:
    arg = args.pop(0)
    if arg in ("-o", "--out_dir"):
        out = Path(args.pop(0))
    elif arg in ("-s", "--show_operations"):
        pass
    else:
        models.append(Path(arg))
model = models[0]
if model.read_bytes()[4:8] != b"TFL3":
    print(f"Invalid model: {model}")
    sys.exit(1)
target = out / (model.stem + "_edgetpu.tflite")
shutil.copy(model, target)
(out / (model.stem + "_edgetpu.log")).write_text("Operator Count Status\n")
print("Edge TPU Compiler version 16.0.384591198")
print("\nModel compiled successfully in 412 ms.\n")
print(f"Input model: {model}\nOutput model: {target}")
print("Number of Edge TPU subgraphs: 1\nTotal number of operations: 64")
if os.environ.get("FAKE_ALL_ON_TPU") != "1":  # the real one prints these only then
    print("Number of operations that will run on Edge TPU: 62")
    print("Number of operations that will run on CPU: 2")
"""


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, calib_images):
    pytest.importorskip("torch")
    from ubiq.models.toolchain.train.trainer import TrainOptions, train

    out = tmp_path_factory.mktemp("tiny-run")
    options = TrainOptions(
        task="detect",
        data=str(calib_images),
        out=str(out),
        backbone="mobilenet_v2",
        width=0.25,
        epochs=1,
        imgsz=96,
        batch=8,
        threads=1,
        progress=False,
    )
    return train(options).best


def _fake_compiler(folder: Path) -> dict:
    folder.mkdir(exist_ok=True)
    program = folder / "edgetpu_compiler"
    program.write_text(f"#!{sys.executable}" + FAKE_EDGETPU_COMPILER)
    program.chmod(0o755)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.slow
def test_coral_bundle_from_a_checkpoint(tmp_path, tiny_checkpoint, calib_images, monkeypatch):
    pytest.importorskip("litert_torch", reason="litert-torch (TFLite export) is not installed")
    pytest.importorskip("ai_edge_quantizer", reason="ai-edge-quantizer is not installed")
    from ubiq.errors import BackendUnavailable

    with pytest.raises(ConfigError, match="needs calib data"):
        build_bundle("cam", "coral", tiny_checkpoint, tmp_path)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no edgetpu_compiler
    with pytest.raises(BackendUnavailable, match="apt-get install edgetpu-compiler") as caught:
        build_bundle("cam", "coral", tiny_checkpoint, tmp_path, calib=str(calib_images))
    kept = tmp_path / "cam-coral.models" / "model_int8.tflite"
    assert kept.is_file() and str(kept) in str(caught.value)  # the int8 model is not lost
    assert not list(tmp_path.glob("*.tar.gz*"))
    monkeypatch.setenv("PATH", _fake_compiler(tmp_path / "bin")["PATH"])
    archive = build_bundle("cam", "coral", tiny_checkpoint, tmp_path / "b", calib=str(calib_images))
    found = members(archive)
    assert {"cam/model/model_int8_edgetpu.tflite", "cam/model/model_int8_edgetpu.json"} <= set(
        found
    )
    with tarfile.open(archive) as tar:
        info = json.load(tar.extractfile("cam/bundle.json"))
        manifest = json.load(tar.extractfile("cam/model/model_int8_edgetpu.json"))
    assert manifest["input"]["dtype"] == "int8" and manifest["name"] == "model_int8_edgetpu"
    assert any(
        "exported to full-int8 TFLite on 16 calibration images" in s for s in info["conversion"]
    )
    assert (
        "model_int8_edgetpu.tflite: compiled by edgetpu_compiler "
        "(62 ops on the Edge TPU, 2 on the CPU)" in info["conversion"]
    )
    assert info["device"] == "coral"


def test_a_failing_edgetpu_compiler_is_one_line(tmp_path, blazeface_path, monkeypatch):
    from ubiq.errors import ModelError
    from ubiq.models.toolchain.export.targets import compile_edgetpu

    monkeypatch.setenv("PATH", _fake_compiler(tmp_path / "bin")["PATH"])
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a model at all")
    with pytest.raises(
        ModelError, match=r"edgetpu_compiler failed on broken\.tflite \(exit 1\): Invalid model"
    ):
        compile_edgetpu(broken, tmp_path / "out")


def test_compiler_reports_all_ops_on_the_tpu_and_a_compiler_that_cannot_run(tmp_path, monkeypatch):
    from ubiq.errors import BackendUnavailable
    from ubiq.models.toolchain.export.targets import compile_edgetpu

    model = tmp_path / "m_int8.tflite"
    model.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(32))
    monkeypatch.setenv("PATH", _fake_compiler(tmp_path / "bin")["PATH"])
    monkeypatch.setenv("FAKE_ALL_ON_TPU", "1")
    compiled, steps = compile_edgetpu(model, tmp_path / "out")
    assert compiled == tmp_path / "out" / "m_int8_edgetpu.tflite" and compiled.is_file()
    assert steps == [
        "m_int8_edgetpu.tflite: compiled by edgetpu_compiler (all 64 ops on the Edge TPU)"
    ]
    (tmp_path / "bin" / "edgetpu_compiler").write_bytes(b"\x7fELF not for this machine")
    with pytest.raises(BackendUnavailable, match="a runnable edgetpu_compiler"):
        compile_edgetpu(model, tmp_path / "out2")


def test_an_edgetpu_model_ships_with_its_int8_models_manifest(tmp_path, blazeface_path):
    from ubiq.manifest import ModelManifest

    folder = tmp_path / "models"
    folder.mkdir()
    compiled = folder / "det_int8_edgetpu.tflite"
    compiled.write_bytes(blazeface_path.read_bytes())
    manifest = ModelManifest.load(blazeface_path.with_suffix(".json"))
    manifest.with_updates(name="det_int8").save(folder / "det_int8.json")
    archive = build_bundle("cam", "coral", compiled, tmp_path / "out")
    found = members(archive)
    assert "cam/model/det_int8_edgetpu.json" in found
    with tarfile.open(archive) as tar:
        shipped = json.load(tar.extractfile("cam/model/det_int8_edgetpu.json"))
    assert shipped["name"] == "det_int8_edgetpu"
    assert not (folder / "det_int8_edgetpu.json").exists()  # the user's folder is untouched


def test_check_sh_passes_odd_model_names_intact(tmp_path):
    from ubiq.manifest import manifest_path_for
    from ubiq.models.zoo import resolve_model

    source = Path(resolve_model("ubiq-det-mnv2"))
    odd = tmp_path / "my det (v2) $HOME.onnx"
    shutil.copy(source, odd)
    shutil.copy(manifest_path_for(source), manifest_path_for(odd))
    archive = build_bundle("cam", "x86", odd, tmp_path / "out")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "device", filter="data")
    fake = tmp_path / "fake-ubiq"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$(dirname "$0")/args-$1.txt"\n')
    fake.chmod(0o755)
    done = subprocess.run(
        ["sh", str(tmp_path / "device" / "cam" / "check.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "UBIQ": str(fake)},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    args = (tmp_path / "args-bench.txt").read_text().splitlines()
    assert args == ["bench", "model/my det (v2) $HOME.onnx", "--device", "cpu", "--runs", "20"]


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


# Every `ubiq ...` command that `ubiq deploy` prints (help, epilogs, hints) is run here.


def _help(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out


def test_commands_in_deploy_help_run(tmp_path, capsys, monkeypatch, blazeface_path):
    monkeypatch.setenv("COLUMNS", "60")  # argparse wraps examples across lines
    texts = [_help(capsys, "deploy", *action) for action in ((), ("install",), ("bundle",))]
    for text in texts:
        assert loose_mentions(text) == [], text
    commands = [words for text in texts for words in printed_commands(text)]
    assert [words[1] for words in commands] == ["deploy", "detect", "doctor"], commands
    example, detect, doctor = commands
    assert_ran(doctor, run_printed(doctor, tmp_path), hardware_ok=False)
    assert example[1:4] == ["deploy", "install", "people"] and example[-1] == "--dry-run"
    assert detect == EXAMPLE_COMMAND.split()

    done = run_printed(example, tmp_path)  # the epilog: a dry run of the example
    assert_ran(example, done, hardware_ok=False)
    assert "ExecStart=" in done.stdout and EXAMPLE_COMMAND.split(maxsplit=1)[1] in done.stdout

    assert needs_camera(detect)  # no camera here: a missing device is the only failure allowed
    assert_ran(detect, run_printed(detect, tmp_path), hardware_ok=True)
    on_demo = without_camera(detect)
    assert_ran(on_demo, run_printed(on_demo, tmp_path), hardware_ok=False)
    assert len((tmp_path / "detections.jsonl").read_text().splitlines()) == 2


def test_the_needs_root_hint_is_the_same_install(tmp_path, capsys):
    missing = tmp_path / "missing"
    args = ["deploy", "install", "cam1", "--command", EXAMPLE_COMMAND, "--user", "edge"]
    assert main([*args, "--unit-dir", str(missing)]) != 0
    error = capsys.readouterr().err
    prefix = "ubiq deploy: error: "
    assert error.startswith(prefix) and "needs root" in error
    assert loose_mentions(error[len(prefix) :]) == []
    (hint,) = printed_commands(error)
    assert Path(hint[0]).is_absolute()  # a venv's ubiq is not on sudo's PATH
    assert hint[1:] == [*args, "--unit-dir", str(missing)]
    again = run_printed(hint, tmp_path)  # as printed, without sudo: still needs root
    assert again.returncode != 0 and "needs root" in again.stderr
    assert "usage:" not in again.stderr
    dry = run_printed([*hint, "--dry-run"], tmp_path)
    assert_ran(hint, dry, hardware_ok=False)
    assert f"# {missing / 'ubiq@cam1.service'}" in dry.stdout and "User=edge" in dry.stdout


def test_install_next_steps_name_no_ubiq_command(tmp_path, capsys):
    assert (
        main(
            ["deploy", "install", "cam1", "--command", "/usr/bin/true", "--unit-dir"]
            + [str(tmp_path)]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert printed_commands(out) == [] and loose_mentions(out) == []
    assert "journalctl -u ubiq@cam1 -f" in out


def test_the_bundle_hint_runs_on_the_device(tmp_path, capsys, blazeface_path):
    out_dir = tmp_path / "dist"
    args = ["deploy", "bundle", "people", "--target", "x86", "--model", str(blazeface_path)]
    assert main([*args, "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert printed_commands(out) == [] and loose_mentions(out) == []
    (hint,) = [line for line in out.splitlines() if line.startswith("on the device: ")]
    device = tmp_path / "device"
    device.mkdir()
    shutil.copy(out_dir / "people-x86.tar.gz", device)
    ubiq = Path(sys.executable).parent / "ubiq"
    done = subprocess.run(
        ["sh", "-c", hint.removeprefix("on the device: ")],
        cwd=device,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "UBIQ": str(ubiq)},
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((device / "people" / "doctor.json").read_text())["platform"]
    assert any(line.startswith("model/blazeface.tflite") for line in done.stdout.splitlines())
