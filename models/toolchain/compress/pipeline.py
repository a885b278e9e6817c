"""``ubiq compress``: run the recipe's steps in order, measure every artifact, apply the gates.

Each step writes its artifact (a checkpoint and its ONNX export, or a quantized ONNX
file) with its manifest into ``out/NN-step/``, then the whole report is rewritten. Gates:
an artifact slower than the model it replaces, or whose metric drops by more than
``max_drop`` points from it (after the step's own fallbacks), is kept and reported but not
handed over: the previous artifact stays the result. The result is copied to
``out/model.<kind>.onnx`` with its manifest, so ``ubiq detect --model`` runs it as is.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ubiq.errors import ConfigError
from ubiq.manifest import ModelManifest, manifest_path_for
from ubiq.models.toolchain.compress.recipe import CompressRecipe
from ubiq.models.toolchain.compress.report import ArtifactRow

__all__ = ["CompressResult", "compress"]

log = logging.getLogger(__name__)


@dataclass
class _Artifact:
    name: str
    step: str
    onnx: Path
    checkpoint: Path | None = None
    params: int | None = None
    macs: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class CompressResult:
    """What ``compress`` handed over and where the report is."""

    result: Path
    report: dict[str, Path]
    rows: list[ArtifactRow]
    gates: list[str]


def _copy_with_manifest(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    manifest_file = manifest_path_for(source)
    if manifest_file.is_file():
        manifest = ModelManifest.load(manifest_file).with_updates(name=target.stem)
        manifest.save(manifest_path_for(target))
    return target


def _record_step(onnx: Path, entry: dict, previous: Path) -> None:
    """Writes the steps so far (``previous``'s, then ``entry``) into ``onnx``'s sidecar
    manifest, which is what runtimes read."""
    path = manifest_path_for(onnx)
    chain = ModelManifest.load(manifest_path_for(previous)).compression
    ModelManifest.load(path).with_updates(compression=(*chain, entry)).save(path)


def _torch_size(checkpoint: Path) -> tuple[int | None, int | None]:
    from ubiq.models.toolchain.backbones.profile import count_macs, count_parameters
    from ubiq.models.toolchain.export.onnx_export import load_checkpoint

    model, config, _ = load_checkpoint(checkpoint)
    if hasattr(model, "export_mode"):
        model.export_mode = False
    height, width = config.imgsz
    shape = (1, config.in_channels, height, width)
    return count_parameters(model), count_macs(model, shape)


class _Runner:
    def __init__(self, model: Path, recipe: CompressRecipe, out: Path, progress: bool) -> None:
        self.recipe = recipe
        self.out = out
        self.progress = progress
        self.gates: list[str] = []
        self.artifacts: list[_Artifact] = []
        self.rejected: set[str] = set()
        self.metrics: dict[str, float | None] = {}
        self.openvino_note: str | None = None
        self.openvino_failures: dict[Path, str] = {}  # artifact -> why OpenVINO cannot read it
        self.task = "detect"
        self.val = Path(recipe.data.val) if recipe.data.val else None
        if self.val is not None and not self.val.exists():
            raise ConfigError(f"recipe data.val {self.val} does not exist")
        self.current = self._baseline(model)

    def _baseline(self, model: Path) -> _Artifact:
        if not model.is_file():
            raise ConfigError(f"model {model} does not exist")
        folder = self.out / "00-fp32"
        if model.suffix == ".pt":
            from ubiq.models.toolchain.export.onnx_export import export_onnx

            exported = export_onnx(model, folder / "model.fp32.onnx")
            self.task = exported.manifest.task
            params, macs = _torch_size(model)
            artifact = _Artifact("fp32", "baseline", exported.path, model, params, macs)
        else:
            if model.suffix != ".onnx":
                raise ConfigError(
                    f"{model.name}: compress takes a .pt checkpoint or an .onnx model"
                )
            from ubiq.models.runtime.backend import load_backend
            from ubiq.models.runtime.model import find_manifest

            manifest = find_manifest(model, load_backend(model))
            self.task = manifest.task
            onnx = _copy_with_manifest(model, folder / "model.fp32.onnx")
            if not manifest_path_for(onnx).is_file():
                manifest.with_updates(name=onnx.stem).save(manifest_path_for(onnx))
            artifact = _Artifact("fp32", "baseline", onnx)
        self.artifacts.append(artifact)
        self.metrics["fp32"] = self.metric(artifact.onnx)
        return artifact

    @property
    def metric_name(self) -> str | None:
        """What :meth:`metric` measures for this task, or None when it measures nothing."""
        names = {"detect": "mAP50", "classify": "top-1", "segment": "mIoU", "kws": "top-1"}
        return names.get(self.task)

    def metric(self, path: Path) -> float | None:
        """The task metric in points (mAP50, top-1 or mIoU x 100), or None without
        validation data (the recipe's ``data.val``)."""
        if self.val is None or self.metric_name is None:
            return None
        from ubiq.models.runtime.evaluate import (
            evaluate_classifier,
            evaluate_detector,
            evaluate_keywords,
            evaluate_segmenter,
        )

        if self.task == "kws":
            return 100.0 * evaluate_keywords(path, self.val, num_threads=1)["top1"]
        if self.task == "classify":
            return 100.0 * evaluate_classifier(path, self.val, num_threads=1)["top1"]
        if self.task == "segment":
            return 100.0 * evaluate_segmenter(path, self.val, num_threads=1)["miou"]
        return 100.0 * float(evaluate_detector(path, self.val)["map50"])

    def _gate(self, candidate: _Artifact) -> bool:
        """Accepts ``candidate`` as the new current artifact, or records why not."""
        from ubiq.models.toolchain.compress.quantize import measure_latency

        timings = measure_latency(
            [self.current.onnx, candidate.onnx], threads=self.recipe.threads, runs=40
        )
        before = timings[self.current.onnx].p50_ms
        after = timings[candidate.onnx].p50_ms
        metric_before = self.metrics.get(self.current.name)
        metric_after = self.metrics.get(candidate.name)
        reasons = []
        if after >= before:
            reasons.append(
                f"{candidate.name} is slower than {self.current.name} "
                f"(p50 {after:.2f} ms vs {before:.2f} ms)"
            )
        if metric_before is not None and metric_after is not None:
            drop = metric_before - metric_after
            if drop > self.recipe.max_drop:
                reasons.append(
                    f"{candidate.name} loses {drop:.2f} points of {self.metric_name} against "
                    f"{self.current.name} (more than max_drop {self.recipe.max_drop})"
                )
        if reasons:
            self.gates.append("; ".join(reasons) + f": the result stays {self.current.name}")
            self.rejected.add(candidate.name)
            return False
        self.current = candidate
        return True

    def prune(self, index: int, options) -> None:
        from ubiq.models.toolchain.compress.prune_checkpoint import prune_checkpoint
        from ubiq.models.toolchain.export.onnx_export import export_onnx

        checkpoint = self._checkpoint("prune")
        folder = self.out / f"{index:02d}-prune"
        result = prune_checkpoint(
            checkpoint,
            folder,
            target_macs_ratio=options.target_macs_ratio,
            data=self.recipe.data.train,
            finetune_epochs=options.finetune_epochs,
            lr=options.lr,
            round_to=options.round_to,
            distill=options.distill,
            progress=self.progress,
        )
        best = Path(result.checkpoint)
        exported = export_onnx(best, folder / "model.pruned.onnx")
        params, macs = _torch_size(best)
        artifact = _Artifact("pruned", "prune", exported.path, best, params, macs)
        artifact.notes.append(f"MACs x{options.target_macs_ratio:g} target")
        _record_step(
            exported.path,
            {
                "step": "prune",
                "method": "structured (DepGraph)",
                "target_macs_ratio": options.target_macs_ratio,
                "macs": macs,
                "params": params,
                "finetune_epochs": options.finetune_epochs,
            },
            self.current.onnx,
        )
        self._add(artifact)

    def distill(self, index: int, options) -> None:
        from ubiq.models.toolchain.compress.distill import load_teacher
        from ubiq.models.toolchain.export.onnx_export import export_onnx, load_checkpoint
        from ubiq.models.toolchain.train.trainer import TrainOptions, train

        checkpoint = self._checkpoint("distill")
        student, config, state = load_checkpoint(checkpoint)
        if hasattr(student, "export_mode"):
            student.export_mode = False
        teacher = load_teacher(options.teacher, config)
        folder = self.out / f"{index:02d}-distill"
        stored = dict(state.get("options", {}))
        data = self.recipe.data.train or stored.get("data")
        if not data:
            raise ConfigError(
                "distill needs training data: the recipe's data.train (the checkpoint records none)"
            )
        train_options = TrainOptions(
            task=config.task,
            data=str(data),
            out=str(folder),
            backbone=config.backbone,
            width=config.width,
            epochs=options.epochs,
            imgsz=config.imgsz[0],
            lr=options.lr,
            progress=self.progress,
            teacher=str(options.teacher),
            kd_weight=options.weight,
            kd_temperature=options.temperature,
        )
        result = train(train_options, model=student, teacher=teacher)
        exported = export_onnx(result.best, folder / "model.distilled.onnx")
        params, macs = _torch_size(result.best)
        _record_step(
            exported.path,
            {"step": "distill", "teacher": str(options.teacher), "epochs": options.epochs},
            self.current.onnx,
        )
        self._add(_Artifact("distilled", "distill", exported.path, result.best, params, macs))

    def quantize(self, index: int, options) -> None:
        from ubiq.models.toolchain.compress import quantize as q
        from ubiq.models.toolchain.compress.autoquant import auto_quantize

        folder = self.out / f"{index:02d}-quantize"
        source = self.current
        if options.method == "int8":
            if not self.recipe.data.calib:
                raise ConfigError(
                    "quantize int8 needs calibration data: the recipe's data.calib "
                    "(images or a data.yaml)"
                )
            images = q.calibration_images(self.recipe.data.calib, options.calibration_images)
            evaluate = self.metric if self.val is not None and self.metric_name else None
            report = auto_quantize(
                source.onnx,
                folder,
                images,
                evaluate=evaluate,
                max_drop=self.recipe.max_drop,
                threads=self.recipe.threads,
                progress=self.progress,
            )
            self.quantize_report = report.to_dict()
            if report.sensitive_nodes:
                worst = ", ".join(
                    f"{n['name']} {n['own_sqnr_db']:.1f}" for n in report.sensitive_nodes[:4]
                )
                self.gates.append(f"int8 fallback: most sensitive nodes (own SQNR, dB): {worst}")
            if report.chosen is None:
                self.gates.append(f"int8: {report.gate_reason}: the result stays {source.name}")
                return
            artifact = _Artifact(
                "int8",
                "quantize",
                Path(report.result),
                source.checkpoint,
                source.params,
                source.macs,
            )
            artifact.notes.append(str(report.chosen))
        else:
            target = folder / f"model.{options.method}.onnx"
            manifest = ModelManifest.load(manifest_path_for(source.onnx))
            convert = q.quantize_dynamic if options.method == "dynamic" else q.convert_fp16
            path = convert(source.onnx, target, manifest=manifest)
            artifact = _Artifact(
                options.method,
                "quantize",
                Path(path),
                source.checkpoint,
                source.params,
                source.macs,
            )
        self._add(artifact)

    def _checkpoint(self, step: str) -> Path:
        if self.current.checkpoint is None or self.current.step == "quantize":
            raise ConfigError(
                f"{step} needs a training checkpoint (.pt) as input; an ONNX model can only "
                "be quantized (put quantize last)"
            )
        return self.current.checkpoint

    def _add(self, artifact: _Artifact) -> None:
        self.artifacts.append(artifact)
        self.metrics[artifact.name] = self.metric(artifact.onnx)
        self._gate(artifact)

    def rows(self, final: bool) -> list[ArtifactRow]:
        from ubiq.models.toolchain.compress.quantize import fidelity
        from ubiq.models.toolchain.compress.report import detection_agreement, peak_rss_mb

        paths = [a.onnx for a in self.artifacts]
        runs = 50 if final else 20
        timings, openvino = self._timings(paths, runs)
        reference = self.artifacts[0]
        base_metric = self.metrics.get("fp32")
        images = self._val_images()
        rows = []
        for artifact in self.artifacts:
            metric = self.metrics.get(artifact.name)
            row = ArtifactRow(
                name=artifact.name,
                step=artifact.step,
                path=str(artifact.onnx),
                size_bytes=artifact.onnx.stat().st_size,
                params=artifact.params,
                macs=artifact.macs,
                latency_p50_ms=timings[artifact.onnx].p50_ms,
                latency_p90_ms=timings[artifact.onnx].p90_ms,
                openvino_p50_ms=openvino.get(artifact.onnx),
                peak_rss_mb=peak_rss_mb(artifact.onnx, self.recipe.threads) if final else None,
                metric_name=self.metric_name if metric is not None else None,
                metric=metric,
                metric_change=None
                if metric is None or base_metric is None
                else metric - base_metric,
                accepted=artifact.name not in self.rejected,
                notes=list(artifact.notes)
                + (
                    [self.openvino_failures[artifact.onnx]]
                    if artifact.onnx in self.openvino_failures
                    else []
                ),
            )
            if artifact is not reference and images:
                values = fidelity(reference.onnx, artifact.onnx, images[:8])
                row.fidelity = {
                    k: float(v) for k, v in values.items() if _is_number(v) and k != "images"
                }
                if self.task == "detect":
                    row.fidelity["det_map50_vs_fp32"] = detection_agreement(
                        reference.onnx, artifact.onnx, images
                    )
            rows.append(row)
        return rows

    def _timings(self, paths: list[Path], runs: int) -> tuple[dict, dict[Path, float]]:
        """onnxruntime latency of every artifact and, where OpenVINO is installed, OpenVINO's
        p50 at its default precision, all in the same interleaved rounds (the report's
        OpenVINO column, so a user sees which runtime and precision win on their box)."""
        from ubiq.errors import BackendUnavailable, ModelError
        from ubiq.models.toolchain.compress.latency import measure_runtimes, openvino_available
        from ubiq.models.toolchain.compress.quantize import measure_latency

        threads = self.recipe.threads
        if openvino_available():
            # an artifact OpenVINO cannot read (a QOperator int8 model, the quantizer's
            # choice where QDQ was slower on onnxruntime) leaves its own cell empty, with the
            # reason among its notes, not the column
            failed: dict = {}
            try:
                both = measure_runtimes(
                    paths, ("onnxruntime", "openvino"), threads=threads, runs=runs, failed=failed
                )
                if any(runtime == "onnxruntime" for runtime, _ in failed):
                    raise ModelError(next(iter(failed.values())))
            except (BackendUnavailable, ModelError) as error:
                self.openvino_note = f"OpenVINO column left empty: {error}"
                log.warning("%s", self.openvino_note)
            else:
                self.openvino_failures = {path: reason for (_, path), reason in failed.items()}
                if failed:
                    self.openvino_note = "; ".join(failed.values())
                    log.warning("%s", self.openvino_note)
                return (
                    {path: both[("onnxruntime", path)] for path in paths},
                    {
                        path: both[("openvino", path)].p50_ms
                        for path in paths
                        if ("openvino", path) in both
                    },
                )
        return measure_latency(paths, threads=threads, runs=runs), {}

    def _val_images(self) -> list[Path]:
        if self.val is None or self.task == "kws":  # fidelity runs on images only
            return []
        if self.val.is_dir():  # an image-folder classification set
            from ubiq.models.datasets.classify import load_image_folder

            paths = load_image_folder(self.val, "val")[0]  # sorted by class: spread the pick
            return paths[:: max(1, len(paths) // 64)][:64]
        from ubiq.models.datasets.yolo import load_yolo_split

        return [item.image_path for item in load_yolo_split(self.val, "val").items]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def compress(
    model: Path,
    recipe: CompressRecipe,
    out: Path,
    *,
    progress: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> CompressResult:
    """Runs ``recipe`` on ``model`` (a ``.pt`` checkpoint or an ``.onnx`` file) into ``out``.

    Raises:
        ConfigError: For a bad recipe, a missing input or a step the input cannot take.
        ModelError: If a model cannot be loaded, exported or quantized.
    """
    from ubiq.models.toolchain.compress import report as report_module

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runner = _Runner(Path(model), recipe, out, progress)
    runner.quantize_report = None
    fingerprint = report_module.machine_fingerprint(recipe.threads)
    for index, (name, options) in enumerate(recipe.step_list(), start=1):
        if on_step:
            on_step(f"step {index}: {name}")
        getattr(runner, name)(index, options)
        report_module.write(
            out,
            runner.rows(final=False),
            fingerprint=fingerprint,
            result=str(runner.current.onnx),
            gates=runner.gates,
            extra={"quantize": runner.quantize_report, "openvino": runner.openvino_note},
        )
    result = _copy_with_manifest(runner.current.onnx, out / f"model.{runner.current.name}.onnx")
    rows = runner.rows(final=True)
    paths = report_module.write(
        out,
        rows,
        fingerprint=fingerprint,
        result=str(result),
        gates=runner.gates,
        extra={"quantize": runner.quantize_report, "openvino": runner.openvino_note},
    )
    return CompressResult(result=result, report=paths, rows=rows, gates=runner.gates)
