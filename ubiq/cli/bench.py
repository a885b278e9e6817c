"""``ubiq bench``: inference-only latency and peak memory, one fresh process per model."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
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
    parser.add_argument("--backend", choices=("onnxruntime", "litert"), default=None)
    parser.add_argument(
        "--device",
        default="auto",
        help="auto, cpu, cuda, tensorrt, openvino or coral[:usb|usb:N|pci|pci:N] (default: auto)",
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
