"""A model in the form a device runs best, for ``ubiq deploy bundle --target``.

- ``x86`` and ``pi5``: ONNX fp32, plus an int8 ONNX model with ``calib``. Made from a
  checkpoint (exported), an ONNX file (as is) or a ``.tflite`` (as is, for LiteRT).
- ``jetson``: ONNX fp32 with a static input shape, from a checkpoint or an ONNX file.
- ``coral``: a ``*_edgetpu.tflite``, from a checkpoint with ``calib`` (full-int8 export,
  then ``edgetpu_compiler``), a full-int8 ``.tflite`` (compiled) or an ``_edgetpu.tflite``
  (as is).

What cannot be done on the build machine is left to the device and said so: which of fp32
and int8 is faster on a Pi's Cortex-A76 is measured by the bundle's ``check.sh``
(``ubiq bench`` prints both with ratios), and a TensorRT engine is specific to the
Jetson, its TensorRT version and its GPU, so the first ``check.sh`` run builds it
into the engine cache. The int8 format per CPU follows onnxruntime's kernels: QDQ with
uint8 activations on x86-64 (its int8-activation path is the slow one there, measured in
issue 4), int8 activations and weights on ARM64 (``sdot``).
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ubiq.errors import BackendUnavailable, ConfigError, ModelError

logger = logging.getLogger(__name__)

TARGETS = ("pi5", "jetson", "coral", "x86")
INT8_CANDIDATES = {
    "x86": {"quant_format": "QDQ", "activation_type": "uint8", "weight_type": "int8"},
    "pi5": {"quant_format": "QDQ", "activation_type": "int8", "weight_type": "int8"},
}
EDGETPU_INSTALL = (
    "x86-64 Linux only: add Coral's apt repository (https://coral.ai/docs/edgetpu/compiler/) "
    "and run `sudo apt-get install edgetpu-compiler`"
)


@dataclass
class TargetModel:
    """What :func:`convert_for_target` made.

    Attributes:
        primary: The model the bundle's config and ``check.sh`` use first.
        alternatives: Other forms worth timing on the device (the int8 model).
        files: Every file to ship (models and their sidecar manifests).
        steps: What was done, one line each, for ``bundle.json``.
        device: The ``--device`` to time it with on the target.
        fidelity: Per alternative file name, its agreement with the primary model.
    """

    primary: Path
    alternatives: list[Path] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    device: str = "cpu"
    fidelity: dict[str, Any] = field(default_factory=dict)

    def add(self, model: Path) -> None:
        """Ships ``model`` and its sidecar manifest when it has one."""
        from ubiq.manifest import manifest_path_for

        self.files.append(model)
        manifest = manifest_path_for(model)
        if manifest.is_file() and manifest != model:
            self.files.append(manifest)


def convert_for_target(
    model: str | Path, target: str, work: str | Path, *, calib: str | None = None
) -> TargetModel:
    """Converts ``model`` for ``target`` (see the module docstring).

    Args:
        model: A ``ubiq train`` checkpoint (``.pt``), a model file or a zoo name.
        target: One of :data:`TARGETS`.
        work: An empty folder for the files made here.
        calib: Calibration images (data.yaml, folder or glob) for int8: optional for
            ``x86`` and ``pi5``, needed for ``coral`` from a checkpoint.

    Raises:
        ConfigError: For a model the target cannot use, with what to give instead.
        BackendUnavailable: If a tool the conversion needs is missing (torch for a
            checkpoint, edgetpu_compiler for the Edge TPU).
        ModelError: If a conversion fails.
    """
    if target not in TARGETS:
        raise ConfigError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    path = _resolve(model)
    if calib and target != "jetson":
        from ubiq.models.toolchain.compress.sensitivity import calibration_images

        calibration_images(calib, count=1)  # a bad --calib fails before any export
    if target == "coral":
        return _for_coral(path, work, calib)
    if path.suffix == ".tflite":
        if target == "jetson":
            raise ConfigError(
                f"target jetson runs ONNX through TensorRT, got {path.name}; bundle the "
                "ONNX model or the ubiq train checkpoint (.pt)"
            )
        if calib:
            raise ConfigError(f"calib makes an int8 ONNX model; {path.name} is TFLite")
        result = TargetModel(primary=path, steps=[f"{path.name}: shipped as is (LiteRT)"])
        result.add(path)
        return result
    onnx_path, steps = _as_onnx(path, work)
    result = TargetModel(primary=onnx_path, steps=steps)
    result.add(onnx_path)
    if target == "jetson":
        result.device = "tensorrt"
        result.steps.append(_check_static(onnx_path))
        result.steps.append(
            "TensorRT engine (fp16): built on the Jetson by the first check.sh run and "
            "cached (engines are specific to the GPU and the TensorRT version)"
        )
        if calib:
            result.steps.append("calib ignored for jetson: its TensorRT engine is fp16")
        return result
    if calib:
        int8 = _int8_onnx(onnx_path, target, work, calib, result)
        result.alternatives.append(int8)
        result.add(int8)
    return result


def _resolve(model: str | Path) -> Path:
    path = Path(model).expanduser()
    if path.suffix == ".pt":
        if not path.is_file():
            raise ModelError(f"checkpoint not found: {path}")
        return path
    from ubiq.models.zoo import resolve_model

    return Path(resolve_model(model))


def _as_onnx(path: Path, work: Path) -> tuple[Path, list[str]]:
    if path.suffix == ".onnx":
        return path, [f"{path.name}: ONNX fp32, shipped as is"]
    if path.suffix != ".pt":
        raise ConfigError(f"model must be a .pt checkpoint, .onnx or .tflite, got {path.name}")
    export_onnx = _exporter()
    result = export_onnx(path, work / "model.onnx")
    return result.path, [
        f"{path.name}: exported to ONNX (max |onnx - torch| {result.max_abs_diff:.1e})"
    ]


def _exporter():
    try:
        from ubiq.models.toolchain.export.onnx_export import export_onnx
    except ImportError as error:
        raise BackendUnavailable(
            "bundling a checkpoint", error.name or "torch", "pip install 'ubiq[train]'"
        ) from error
    return export_onnx


def _check_static(onnx_path: Path) -> str:
    from ubiq.models.runtime.backend import load_backend

    shape = load_backend(onnx_path, num_threads=1).inputs[0].shape
    dims = [d if isinstance(d, int) and d > 0 else "?" for d in shape]
    if not all(isinstance(d, int) and d > 0 for d in dims):
        raise ConfigError(
            f"{onnx_path.name} has a dynamic input shape {dims}; TensorRT on a Jetson "
            "needs a static one: export it with a fixed batch and image size"
        )
    return f"input shape {dims}: static, as TensorRT wants"


def _int8_onnx(onnx_path: Path, target: str, work: Path, calib: str, result: TargetModel) -> Path:
    from ubiq.models.toolchain.compress.quantize import QuantCandidate, quantize_static
    from ubiq.models.toolchain.compress.sensitivity import calibration_images, fidelity

    images = calibration_images(calib, count=64)
    candidate = QuantCandidate(**INT8_CANDIDATES[target])
    out = work / f"{onnx_path.stem}.int8.onnx"
    quantize_static(onnx_path, out, images, candidate)
    agreement = fidelity(onnx_path, out, images[:16])
    result.fidelity[out.name] = agreement
    result.steps.append(
        f"{out.name}: {candidate.label()} on {len(images)} calibration images "
        f"(output cosine to fp32 {agreement['cosine']:.4f}, SQNR {agreement['sqnr_db']:.1f} dB); "
        f"check.sh times it against fp32 on the {target}: use it only where it is faster"
    )
    return out


def _for_coral(path: Path, work: Path, calib: str | None) -> TargetModel:
    if path.name.lower().endswith("_edgetpu.tflite"):
        shipped = _with_source_manifest(path, work)
        result = TargetModel(primary=shipped, device="coral")
        result.steps.append(f"{path.name}: already compiled for the Edge TPU, shipped as is")
        if shipped != path:
            result.steps.append(f"its manifest: the int8 model's, {path.stem[:-8]}.json")
        result.add(shipped)
        return result
    if path.suffix == ".pt":
        if not calib:
            raise ConfigError(
                "target coral from a checkpoint needs calib data: the Edge TPU runs "
                "full-int8 models only"
            )
        int8, steps = _full_int8_tflite(path, work, calib)
    elif path.suffix == ".tflite":
        int8, steps = path, []
    else:
        raise ConfigError(
            f"target coral needs a TFLite model, got {path.name}: bundle the ubiq train "
            "checkpoint (.pt) with calib data, or a full-int8 .tflite "
            "(`ubiq export CKPT --format tflite --int8 --calib DATA`)"
        )
    _check_full_int8(int8, exported=path.suffix == ".pt")
    compiled, compile_steps = compile_edgetpu(int8, work)
    result = TargetModel(primary=compiled, steps=[*steps, *compile_steps], device="coral")
    result.add(compiled)
    return result


def _full_int8_tflite(checkpoint: Path, work: Path, calib: str) -> tuple[Path, list[str]]:
    from ubiq.models.toolchain.compress.sensitivity import calibration_images
    from ubiq.models.toolchain.export.tflite import export_checkpoint_tflite

    exported = _exporter()(checkpoint, work / "model.onnx")
    images = calibration_images(calib, count=64)
    tflite = export_checkpoint_tflite(checkpoint, exported, int8=True, calib=images)
    assert tflite.int8_model is not None  # int8=True always writes it
    cosine = ", ".join(f"{c:.4f}" for c in tflite.int8_cosine)
    return tflite.int8_model.path, [
        f"{checkpoint.name}: exported to full-int8 TFLite on {len(images)} calibration "
        f"images (output cosine to torch {cosine})",
        *tflite.notes,
    ]


def _check_full_int8(path: Path, exported: bool = False) -> None:
    from ubiq.models.toolchain.export.tflite import describe_tflite

    info = describe_tflite(path)
    dtype = info.inputs[0].dtype
    if exported and info.float_ops:
        raise ModelError(
            f"the int8 export left ops in float ({', '.join(info.float_ops)}): the Edge TPU "
            "compiler would run them on the CPU; this model cannot be fully quantized"
        )
    if dtype not in ("int8", "uint8") or info.float_ops:
        raise ConfigError(
            f"{path.name} is not full int8 (input {dtype}"
            + (f", float ops {', '.join(info.float_ops)}" if info.float_ops else "")
            + "); the Edge TPU compiler needs one: "
            "`ubiq export CKPT --format tflite --int8 --calib DATA`"
        )


def _with_source_manifest(compiled: Path, work: Path) -> Path:
    """An ``X_edgetpu.tflite`` without its own manifest but beside ``X.json`` (the int8
    model's) is copied into ``work`` with that manifest, so the device does not have to
    guess its preprocessing and quantization. Otherwise ``compiled`` is returned as is."""
    from ubiq.manifest import ModelManifest, manifest_path_for

    stem = compiled.name[: -len("_edgetpu.tflite")]
    source = compiled.with_name(f"{stem}.json")
    if manifest_path_for(compiled).is_file() or not source.is_file():
        return compiled
    copy = work / compiled.name
    shutil.copyfile(compiled, copy)
    ModelManifest.load(source).with_updates(name=copy.stem, sha256="").save(manifest_path_for(copy))
    return copy


_ON_TPU = re.compile(r"operations that will run on Edge TPU:\s*(\d+)")
_ON_CPU = re.compile(r"operations that will run on CPU:\s*(\d+)")
_TOTAL = re.compile(r"Total number of operations:\s*(\d+)")
_FAILURE = re.compile(r"error|invalid|unsupported|not |fail", re.IGNORECASE)


def compile_edgetpu(model: Path, out_dir: Path, timeout_s: float = 600.0) -> tuple[Path, list[str]]:
    """Runs ``edgetpu_compiler -s -o OUT_DIR MODEL`` and returns ``OUT_DIR/<stem>_edgetpu.tflite``.

    The compiled file gets a copy of the input's sidecar manifest. The compiler's count of
    operations left on the CPU is reported, since those run far slower (it prints the two
    counts only when some ops stay on the CPU; otherwise all of its total run on the TPU).

    Raises:
        BackendUnavailable: If ``edgetpu_compiler`` is not on PATH or cannot run here.
        ModelError: If it fails or writes no model.
    """
    from ubiq.manifest import ModelManifest, manifest_path_for

    program = shutil.which("edgetpu_compiler")
    if program is None:
        raise BackendUnavailable(
            "edgetpu-compiler",
            "edgetpu_compiler",
            f"{EDGETPU_INSTALL}; then rerun with model {model}",
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [program, "-s", "-o", str(out_dir), str(model)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise ModelError(f"edgetpu_compiler ran past {timeout_s:.0f} s on {model.name}") from error
    except OSError as error:  # e.g. the x86-64 compiler on an ARM64 machine
        raise BackendUnavailable(
            "edgetpu-compiler", f"a runnable edgetpu_compiler ({error.strerror})", EDGETPU_INSTALL
        ) from error
    compiled = out_dir / f"{model.stem}_edgetpu.tflite"
    if done.returncode != 0 or not compiled.is_file():
        said = [line.strip() for line in (done.stdout + "\n" + done.stderr).splitlines()]
        said = [line for line in said if line] or ["no output"]
        reason = next((line for line in reversed(said) if _FAILURE.search(line)), said[-1])
        raise ModelError(
            f"edgetpu_compiler failed on {model.name} (exit {done.returncode}): {reason}"
        )
    on_tpu, on_cpu = _ON_TPU.search(done.stdout), _ON_CPU.search(done.stdout)
    total = _TOTAL.search(done.stdout)
    steps = [f"{compiled.name}: compiled by edgetpu_compiler"]
    if on_tpu and on_cpu:
        steps[0] += f" ({on_tpu.group(1)} ops on the Edge TPU, {on_cpu.group(1)} on the CPU)"
        if int(on_cpu.group(1)):
            log = out_dir / f"{model.stem}_edgetpu.log"
            steps.append(
                f"{on_cpu.group(1)} ops stay on the CPU: {log} on the build machine says which"
            )
    elif total:
        steps[0] += f" (all {total.group(1)} ops on the Edge TPU)"
    source_manifest = manifest_path_for(model)
    if source_manifest.is_file():
        manifest = ModelManifest.load(source_manifest)
        manifest.with_updates(name=compiled.stem, sha256="").save(manifest_path_for(compiled))
    return compiled, steps
