"""The wheel ships every package under the ubiq namespace; the runtime never needs torch."""

import shutil
import subprocess
import sys
import zipfile

import pytest
from support import REPO

PACKAGES = [
    "ubiq",
    "ubiq.cli",
    "ubiq.data",
    "ubiq.data.models",
    "ubiq.deploy",
    "ubiq.deploy.systemd",
    "ubiq.models",
    "ubiq.models.runtime",
    "ubiq.models.runtime.decoders",
    "ubiq.models.zoo",
    "ubiq.models.toolchain.backbones",
    "ubiq.models.toolchain.heads",
    "ubiq.models.datasets",
    "ubiq.models.toolchain.train",
    "ubiq.models.toolchain.export",
    "ubiq.models.toolchain.compress",
    "ubiq.pipelines",
    "ubiq.pipelines.sinks",
    "ubiq.pipelines.speech",
    "ubiq.hardware",
    "ubiq.hardware.sources",
    "ubiq.hardware.fakes",
    "ubiq.apps",
]


@pytest.mark.slow
def test_wheel_contains_and_imports_every_package(tmp_path):
    # Build from a copy of the tracked files, so no stale build/ folder can hide a missing file.
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    source = tmp_path / "src"
    for name in tracked:
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    # Data folders are declared as packages: setuptools has nothing to warn about.
    assert "Warning" not in built.stdout + built.stderr, built.stdout + built.stderr
    (wheel,) = (tmp_path / "dist").glob("ubiq-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"ubiq", "ubiq-0.1.0.dist-info"}, top_level  # no top-level `models`
    assert "ubiq/data/astronaut.jpg" in names
    assert "ubiq/data/models/ubiq-det-mnv2.onnx" in names
    assert "ubiq/data/models/ubiq-det-mnv2-320.onnx" in names
    assert "ubiq/data/models/ubiq-seg-mnv2.onnx" in names
    assert "ubiq/data/models/ubiq-commands-demo.yaml" in names
    assert "ubiq/deploy/systemd/ubiq@.service.in" in names
    assert not [name for name in names if "docker" in name or name.endswith(".md")]
    zipfile.ZipFile(wheel).extractall(tmp_path / "site")
    code = (
        "import importlib, sys\n"
        f"for name in {PACKAGES!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    where = module.__file__ or list(module.__path__)[0]  # data folders: namespaces\n"
        f"    assert where.startswith({str(tmp_path / 'site')!r}), where\n"
        "from ubiq.deploy.units import render_unit\n"
        "assert 'Type=notify' in render_unit('app', '/usr/bin/true')\n"
        "assert 'torch' not in sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert result.stdout.strip() == "ok", result.stderr[-2000:]


def test_importing_ubiq_has_no_side_effects(tmp_path):
    code = (
        "import os, sys\n"
        "import cv2  # OpenCV's own loader sets LD_LIBRARY_PATH; not ubiq's doing\n"
        "before = dict(os.environ)\n"
        "import ubiq, ubiq.cli, ubiq.models.runtime.model, ubiq.models.zoo, ubiq.hardware.sources\n"
        "import ubiq.pipelines.runner, ubiq.pipelines.sinks\n"
        "assert dict(os.environ) == before, set(os.environ) ^ set(before)\n"
        "heavy = [m for m in ('torch', 'ultralytics', 'torchvision') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        cwd=tmp_path,
    )
    assert result.stdout.strip() == "ok", result.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []  # no settings or cache files written


# Modules outside ubiq/cli that import ubiq.cli: none may.
IMPORTS_CLI_TODAY: set[str] = set()


def test_only_the_cli_imports_the_cli():
    import ast

    folders = ["ubiq", "models", "pipelines", "hardware", "apps", "deploy"]
    offenders = set()
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative.startswith("ubiq/cli/") or relative == "ubiq/__main__.py":
                continue  # the CLI itself, and `python -m ubiq`, which runs it
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                if any(name == "ubiq.cli" or name.startswith("ubiq.cli.") for name in names):
                    offenders.add(relative)
    assert offenders <= IMPORTS_CLI_TODAY, offenders - IMPORTS_CLI_TODAY


def test_the_runtime_side_never_imports_the_toolchain():
    """models/runtime, models/zoo, models/datasets, pipelines and hardware are the device
    side: no torch, and no ubiq.models.toolchain, anywhere in them (only the zoo's
    Ultralytics adapter imports ultralytics, inside the functions that export)."""
    import ast

    folders = ["models/runtime", "models/zoo", "models/datasets", "pipelines", "hardware"]
    offenders = []
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    root = name.split(".")[0]
                    if root == "torch" or name.startswith("ubiq.models.toolchain"):
                        offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert offenders == []
    assert (REPO / "models" / "toolchain" / "train" / "trainer.py").is_file()
