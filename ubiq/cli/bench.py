"""``ubiq bench``: inference-only latency and peak memory, one fresh process per model.

``ubiq bench MODEL --devices all`` instead times every backend and device that can run the
model here, checks each against the reference, and records the fastest agreeing one for
``--device auto``.
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    from ubiq.models.runtime.backend import BACKENDS

    parser = subparsers.add_parser(
        "bench",
        help="time inference of one or more models (p50/p90 latency, FPS, peak RSS)",
        description="Inference-only latency after warm-up with fixed threads, and peak RSS. "
        "Each model runs in its own process; with two or more, ratios to the first are shown.",
    )
    parser.add_argument("models", nargs="+", help="zoo names or model files")
    parser.add_argument("--runs", type=int, default=200, help="timed runs (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs first (default 20)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    parser.add_argument("--backend", choices=tuple(BACKENDS), default=None)
    parser.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda, tensorrt, openvino (onnxruntime's provider), "
        "openvino:CPU|GPU|NPU|AUTO[:bf16|f16|f32] (the openvino backend) or "
        "coral[:usb|usb:N|pci|pci:N] (default: auto)",
    )
    parser.add_argument(
        "--devices",
        default=None,
        metavar="all|DEVICE,...",
        help="time every backend and device that can run the model here (all), or those "
        "listed; check each against the reference (cosine, and mAP50 for detectors) and "
        "record the fastest agreeing one, which --device auto then uses",
    )
    parser.add_argument(
        "--min-cosine", type=float, default=0.99, help="--devices: cosine floor (default 0.99)"
    )
    parser.add_argument(
        "--min-map50",
        type=float,
        default=0.98,
        help="--devices: detector mAP50 floor against the reference (default 0.98)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)


def _bench_in_process(args: argparse.Namespace, model: str) -> dict:
    from ubiq.models.runtime.bench import bench_model

    return bench_model(
        model,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads,
        backend=args.backend,
        device=args.device,
    ).to_dict()


def _bench_in_child(args: argparse.Namespace, model: str) -> dict:
    from ubiq.models.runtime.isolated import bench_in_child

    return bench_in_child(
        model,
        runs=args.runs,
        warmup=args.warmup,
        threads=args.threads or None,
        backend=args.backend,
        device=args.device,
    )


def run(args: argparse.Namespace) -> int:
    from ubiq.hardware.accelerators import parse_device

    parse_device(args.device)  # a bad --device fails once, before any child starts
    if args.devices is not None:
        return _run_devices(args)
    if args.in_process or len(args.models) == 1:
        results = [_bench_in_process(args, model) for model in args.models]
    else:
        results = [_bench_in_child(args, model) for model in args.models]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    base = results[0]
    header = f"{'model':40} {'backend':11} {'device':9} {'p50 ms':>8} {'p90 ms':>8}"
    header += f" {'FPS':>8} {'RSS MB':>8}"
    if len(results) > 1:
        header += f" {'speed-up':>9}"
    print(header)
    for result in results:
        line = (
            f"{result['model'][-40:]:40} {result['backend']:11} {result.get('device', ''):9} "
            f"{result['latency_p50_ms']:8.2f} "
            f"{result['latency_p90_ms']:8.2f} {result['fps']:8.1f} {result['peak_rss_mb']:8.1f}"
        )
        if len(results) > 1:
            line += f" {base['latency_p50_ms'] / result['latency_p50_ms']:8.2f}x"
        print(line)
    return 0


def _candidates(args: argparse.Namespace, model: str):
    """The ``--devices`` list as candidates (``None`` for ``all``)."""
    from ubiq.errors import ConfigError
    from ubiq.hardware.accelerators import parse_device
    from ubiq.models.runtime.backend import _backend_for
    from ubiq.models.runtime.device_sweep import Candidate
    from ubiq.models.runtime.model import resolve_model_path

    if args.devices.strip().lower() == "all":
        return None
    items = [item.strip() for item in args.devices.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"--devices must be all or a list of devices, got {args.devices!r}")
    path = resolve_model_path(model)
    reference = "cpu" if path.suffix.lower() != ".xml" else "openvino:CPU:f32"
    if items[0] != reference:
        items.insert(0, reference)  # the reference comes first
    return [
        Candidate(args.backend or _backend_for(path, parse_device(item)), item) for item in items
    ]


def _run_devices(args: argparse.Namespace) -> int:
    from ubiq.errors import ConfigError
    from ubiq.models.runtime.device_sweep import bench_devices

    if len(args.models) != 1:
        raise ConfigError(f"--devices measures one model at a time, got {len(args.models)}")
    if args.device != "auto":
        raise ConfigError("--devices and --device exclude each other: --devices lists them")
    sweep = bench_devices(
        args.models[0],
        candidates=_candidates(args, args.models[0]),
        runs=args.runs,
        warmup=args.warmup,
        rounds=min(5, max(1, args.runs)),
        threads=args.threads,
        min_cosine=args.min_cosine,
        min_map50=args.min_map50,
    )
    if args.json:
        print(json.dumps(sweep.to_dict(), indent=2))
        return 0 if sweep.winner else 1
    reference = sweep.results[0]
    print(
        f"{sweep.model}: every backend and device here, against {reference.backend} "
        f"{reference.device}"
    )
    print(
        f"{'backend':12} {'device':18} {'runs on':14} {'p50 ms':>8} {'FPS':>8} "
        f"{'speed-up':>9} {'cosine':>8} {'mAP50':>6}  agrees"
    )
    for result in sweep.results:
        if result.error is not None:
            print(f"{result.backend:12} {result.device:18} not measured: {result.error}")
            continue
        map50 = "-" if result.map50 is None else f"{result.map50:.3f}"
        speed_up = reference.latency_p50_ms / result.latency_p50_ms
        print(
            f"{result.backend:12} {result.device:18} {result.runs_on:14} "
            f"{result.latency_p50_ms:8.2f} {result.fps:8.1f} {speed_up:8.2f}x "
            f"{result.cosine:8.5f} {map50:>6}  {'yes' if result.agrees else 'NO'}"
        )
    winner = sweep.winner
    if winner is None:
        print("no backend agreed with the reference; nothing recorded")
        return 1
    print(
        f"winner: {winner.backend} {winner.device} ({winner.runs_on}, "
        f"{winner.latency_p50_ms:.2f} ms p50, "
        f"{reference.latency_p50_ms / winner.latency_p50_ms:.2f}x the reference); "
        f"recorded in {sweep.recorded_in}: --device auto now uses it for this model here"
    )
    return 0
