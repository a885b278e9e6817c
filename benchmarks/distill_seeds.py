"""The distillation bar of the compression issue: the gain of KD over the same student
trained without it, over several seeds, with mean and spread.

```bash
.venv/bin/python benchmarks/distill_seeds.py [--seeds 0 1 2] [--epochs 10] \
    [--teacher-net mobilenet_v2:1.0] [--teacher-epochs 10] [--student-net squeezenet1_1:0.25] \
    [--kd-weight 1.0] [--kd-temperature 4.0] [--threads 1] [--workdir DIR] \
    [--detect-epochs 0 --detect-teacher RUN/weights/best.pt --detect-data DATA.yaml \
     --detect-kd-temperature 1.0]
```

1. Writes scikit-learn's 1,797 handwritten digits as a 32 px image folder (fixed split:
   1,437 train, 360 val) and trains the teacher once (seed 0).
2. For each seed, trains the student twice with that seed, so both runs start from the
   same weights and see the same data order and augmentation: once alone, once with
   ``--teacher`` (``loss = CE + kd_weight * KL * T**2``).
3. Prints per seed the val top-1 of the last epoch without and with KD and the gain, then
   the gain's mean and sample standard deviation over the seeds (the best epoch's top-1
   too, for reference; it picks the epoch on the val split, so it flatters both runs).

``--detect-epochs N`` adds the same seed pairs for a detector student (mobilenet_v3_small
0.5) distilled from ``--detect-teacher`` on ``--detect-data`` for N epochs, reporting the
mAP50-95 and mAP50 gains with mean and spread (slow on a CPU; ``--no-classify`` runs it
alone).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path


def _net(text: str) -> tuple[str, float]:
    backbone, _, width = text.partition(":")
    return backbone, float(width or 1.0)


def _parameters(checkpoint: Path) -> int:
    from ubiq.models.toolchain.export.onnx_export import load_checkpoint

    model, _, _ = load_checkpoint(checkpoint)
    return sum(p.numel() for p in model.parameters())


def _classify(args: argparse.Namespace, work: Path) -> dict:
    from ubiq.models.datasets.classify import make_digits_set
    from ubiq.models.toolchain.train.trainer import TrainOptions, train

    data = work / "digits"
    if not (data / "train").is_dir():
        make_digits_set(data, size=32)

    def options(out: Path, net: tuple[str, float], epochs: int, seed: int, **kd) -> TrainOptions:
        return TrainOptions(
            task="classify",
            data=str(data),
            out=str(out),
            backbone=net[0],
            width=net[1],
            epochs=epochs,
            imgsz=32,
            batch=32,
            seed=seed,
            threads=args.threads,
            progress=False,
            **kd,
        )

    started = time.perf_counter()
    teacher = train(options(work / "teacher", _net(args.teacher_net), args.teacher_epochs, 0))
    teacher_top1 = teacher.history[-1]["val_top1"]
    print(
        f"teacher {args.teacher_net}: top-1 {teacher_top1:.4f} (last of {args.teacher_epochs} "
        f"epochs), {_parameters(teacher.last) / 1e6:.2f} M parameters, "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    rows = []
    for seed in args.seeds:
        runs = {}
        for name, kd in (
            ("plain", {}),
            (
                "kd",
                dict(
                    teacher=str(teacher.last),
                    kd_weight=args.kd_weight,
                    kd_temperature=args.kd_temperature,
                ),
            ),
        ):
            out = work / f"student-seed{seed}-{name}"
            runs[name] = train(options(out, _net(args.student_net), args.epochs, seed, **kd))
        last = {name: run.history[-1]["val_top1"] for name, run in runs.items()}
        best = {name: max(r["val_top1"] for r in run.history) for name, run in runs.items()}
        rows.append(
            {
                "seed": seed,
                "plain": last["plain"],
                "kd": last["kd"],
                "gain": last["kd"] - last["plain"],
                "best_plain": best["plain"],
                "best_kd": best["kd"],
                "seconds_plain": runs["plain"].seconds,
                "seconds_kd": runs["kd"].seconds,
            }
        )
        print(f"seed {seed}: {json.dumps(rows[-1])}", flush=True)
    student_parameters = _parameters(work / f"student-seed{args.seeds[0]}-plain/weights/last.pt")
    print()
    print(
        f"student {args.student_net} ({student_parameters / 1e6:.3f} M parameters), "
        f"{args.epochs} epochs, kd_weight {args.kd_weight}, T {args.kd_temperature}; "
        f"val top-1 (360 digits) at the last epoch"
    )
    print(f"{'seed':>4} | {'no KD':>7} | {'KD':>7} | {'gain':>7} || {'best no KD':>10} | best KD")
    for row in rows:
        print(
            f"{row['seed']:>4} | {row['plain']:7.4f} | {row['kd']:7.4f} | {row['gain']:+7.4f} "
            f"|| {row['best_plain']:10.4f} | {row['best_kd']:.4f}"
        )
    gains = [row["gain"] for row in rows]
    spread = statistics.stdev(gains) if len(gains) > 1 else float("nan")
    wins = sum(gain > 0 for gain in gains)
    print(
        f"gain of KD: mean {statistics.mean(gains):+.4f} +- {spread:.4f} (sample std, "
        f"n={len(gains)}); KD better on {wins}/{len(gains)} seeds; "
        f"no KD {statistics.mean(r['plain'] for r in rows):.4f}, "
        f"KD {statistics.mean(r['kd'] for r in rows):.4f}, teacher {teacher_top1:.4f}"
    )
    return {"teacher_top1": teacher_top1, "rows": rows, "gain_mean": statistics.mean(gains)}


def _detect(args: argparse.Namespace, work: Path) -> dict:
    import torch

    from ubiq.models.toolchain.train.trainer import TrainOptions, train

    config = torch.load(args.detect_teacher, map_location="cpu", weights_only=False)["config"]
    rows = []
    for seed in args.seeds:
        results = {}
        for name, kd in (
            ("plain", {}),
            (
                "kd",
                dict(
                    teacher=str(args.detect_teacher),
                    kd_weight=args.kd_weight,
                    kd_temperature=args.detect_kd_temperature,
                ),
            ),
        ):
            options = TrainOptions(
                task="detect",
                data=str(args.detect_data),
                out=str(work / f"detector-seed{seed}-{name}"),
                backbone="mobilenet_v3_small",
                width=0.5,
                epochs=args.detect_epochs,
                imgsz=int(config["imgsz"][0]),
                batch=16,
                seed=seed,
                threads=args.threads,
                progress=False,
                **kd,
            )
            run = train(options)
            results[name] = {k: v for k, v in run.history[-1].items() if k.startswith("val_")}
            results[name]["seconds"] = run.seconds
        row = {
            "seed": seed,
            "plain": results["plain"],
            "kd": results["kd"],
            "gain_map50_95": results["kd"]["val_map50_95"] - results["plain"]["val_map50_95"],
            "gain_map50": results["kd"]["val_map50"] - results["plain"]["val_map50"],
        }
        rows.append(row)
        print(f"detector seed {seed}: {json.dumps(row)}", flush=True)
    print()
    print(
        f"detector student mobilenet_v3_small 0.5, {args.detect_epochs} epochs, teacher "
        f"{args.detect_teacher}, T {args.detect_kd_temperature}; val at the last epoch"
    )
    print(f"{'seed':>4} | {'mAP50-95 no KD':>14} | {'KD':>7} | {'gain':>7} || mAP50 no KD | KD")
    for row in rows:
        print(
            f"{row['seed']:>4} | {row['plain']['val_map50_95']:14.4f} | "
            f"{row['kd']['val_map50_95']:7.4f} | {row['gain_map50_95']:+7.4f} || "
            f"{row['plain']['val_map50']:11.4f} | {row['kd']['val_map50']:.4f}"
        )
    summary = {}
    for key in ("gain_map50_95", "gain_map50"):
        gains = [row[key] for row in rows]
        spread = statistics.stdev(gains) if len(gains) > 1 else float("nan")
        summary[key] = (statistics.mean(gains), spread)
        print(
            f"{key}: mean {statistics.mean(gains):+.4f} +- {spread:.4f} (sample std, "
            f"n={len(gains)}); KD better on {sum(g > 0 for g in gains)}/{len(gains)} seeds"
        )
    return {"rows": rows, "summary": summary}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10, help="student epochs")
    parser.add_argument("--teacher-net", default="mobilenet_v2:1.0", help="BACKBONE:WIDTH")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--student-net", default="squeezenet1_1:0.25", help="BACKBONE:WIDTH")
    parser.add_argument("--kd-weight", type=float, default=1.0)
    parser.add_argument("--kd-temperature", type=float, default=4.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir")
    parser.add_argument("--detect-epochs", type=int, default=0, help="0: no detector pair")
    parser.add_argument("--detect-teacher", default="/work/runs/pilot/weights/best.pt")
    parser.add_argument("--detect-data", default="/work/runs/data256/data.yaml")
    parser.add_argument("--detect-kd-temperature", type=float, default=1.0)
    parser.add_argument("--no-classify", action="store_true", help="the detector pair only")
    parser.add_argument("--verbose", action="store_true", help="log every epoch")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.ERROR)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="ubiq-distill-"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict = {"args": vars(args)}
    if not args.no_classify:
        report["classify"] = _classify(args, work)
    if args.detect_epochs > 0:
        report["detect"] = _detect(args, work)
    (work / "distill_seeds.json").write_text(json.dumps(report, indent=2))
    print(f"report: {work / 'distill_seeds.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
