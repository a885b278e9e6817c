"""Segmentation speed: the whole pipeline against inference alone, and the privacy blur.

On the 640x480 demo source (150 frames), per round and per model:

1. inference alone: the model's ``infer`` back to back on tensors prepared up front from
   the demo frames (no preprocessing, no decoding), one frame at a time with the runtime's
   default threads (the inference-only FPS of the bar); and the way ``ubiq segment`` runs a
   file, ``--streams`` frames at once (default one per core), from as many threads;
2. end to end: ``Pipeline([Segment(model)])`` over the demo source, as ``ubiq segment``
   runs it (capture, preprocessing on the prefetch thread, inference of ``--streams``
   frames at once, decoding and the mask mapped to frame size), and the same one frame at
   a time;
3. with ``--blur background`` (``Pipeline([Segment(model), Blur("background")])``).

Prints FPS of each and the ratios end-to-end / inference-only; the median round is shown
(the machine may be shared: rerun when the numbers look odd). Also the main thread's CPU
time per frame in both (``time.thread_time``, which other processes on a shared machine do
not inflate the way they inflate wall time): what the pipeline adds to inference on the
thread that runs the stages, and the ratio that leaves when the capture and prefetch
threads have a core of their own. And the ceiling: the CPU a frame needs
besides inference (reading the MP4, preprocessing, decoding; measured alone) added
to inference's CPU per frame at ``--streams`` at once (cores / that FPS), so the FPS end to
end could not pass ``cores / total`` even with no pipeline at all. ``--pictures DIR`` also
writes an overlay and a blurred frame of the demo source (``segment-overlay.jpg``,
``segment-blur.jpg``).

    .venv/bin/python benchmarks/segment_fps.py [--model selfie-seg] [--rounds 3]
        [--threads N] [--pictures docs]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _demo_frames(count: int) -> list:
    from ubiq.hardware.sources import open_source

    with open_source("demo") as source:
        return [frame for _, frame in zip(range(count), source)]


def _streams_fps(model, frames) -> float:
    """FPS of ``infer`` alone with ``model.backend.streams`` calls in flight."""
    from concurrent.futures import ThreadPoolExecutor

    tensors = [model.prepare(frame.image)[0] for frame in frames]
    with ThreadPoolExecutor(model.backend.streams) as pool:
        list(pool.map(model.infer, tensors[:10]))
        started = time.perf_counter()
        list(pool.map(model.infer, tensors))
        return len(tensors) / (time.perf_counter() - started)


def _inference_fps(model, frames) -> tuple[float, float]:
    """FPS of ``infer`` alone and the main thread's CPU ms per frame."""
    tensors = [model.prepare(frame.image)[0] for frame in frames]
    model.infer(tensors[0])
    started, cpu_started = time.perf_counter(), time.thread_time()
    for tensor in tensors:
        model.infer(tensor)
    cpu_ms = (time.thread_time() - cpu_started) * 1e3 / len(tensors)
    return len(tensors) / (time.perf_counter() - started), cpu_ms


def _pipeline_fps(stages) -> tuple[float, float, float]:
    """FPS of the pipeline over the demo source, the main thread's CPU ms per frame (first
    to last frame) and the median ``segment.decode`` ms."""
    from ubiq.pipelines.pipeline import Pipeline

    cpu_at, decode_ms = [], []

    def on_result(result) -> None:
        cpu_at.append(time.thread_time())
        decode_ms.append(result.timings_ms.get("segment.decode", 0.0))

    fps = Pipeline(stages, on_result=on_result).run("demo").fps
    cpu_ms = (cpu_at[-1] - cpu_at[0]) * 1e3 / max(1, len(cpu_at) - 1)
    return fps, cpu_ms, statistics.median(decode_ms)


def _pictures(model, folder: Path) -> list[Path]:
    import cv2

    from ubiq.pipelines.pipeline import Pipeline
    from ubiq.pipelines.segment import Blur, Segment
    from ubiq.pipelines.sinks import draw

    frame = _demo_frames(1)[0]
    folder.mkdir(parents=True, exist_ok=True)
    overlay = draw(Pipeline([Segment(model)]).process(frame))
    blurred = Pipeline([Segment(model), Blur("background")]).process(frame).frame.image
    paths = [folder / "segment-overlay.jpg", folder / "segment-blur.jpg"]
    for path, image in zip(paths, (overlay, blurred), strict=True):
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return paths


def main(argv: list[str] | None = None) -> int:
    import cv2

    from ubiq.models.runtime.segment import Segmenter
    from ubiq.pipelines.segment import Blur, Segment

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="selfie-seg", help="zoo name or model file")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (median shown)")
    parser.add_argument("--threads", type=int, default=None, help="inference threads")
    parser.add_argument("--pictures", default=None, help="write an overlay and a blur here")
    parser.add_argument(
        "--streams", type=int, default=None, help="frames at once (default: as ubiq segment)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    from ubiq.models.runtime.backend import choose_streams

    cv2.setNumThreads(1)  # as ubiq segment does
    model = Segmenter.load(args.model, num_threads=args.threads)
    streams = choose_streams(True, args.threads, args.streams)  # what ubiq segment picks
    many = Segmenter.load(args.model, num_threads=args.threads, streams=streams)
    frames = _demo_frames(150)
    rounds, cpu = [], []
    for _ in range(args.rounds):
        inference, inference_cpu_ms = _inference_fps(model, frames)
        at_once = _streams_fps(many, frames)
        one_at_a_time, end_to_end_cpu_ms, decode_ms = _pipeline_fps([Segment(model)])
        end_to_end = _pipeline_fps([Segment(many)])[0]
        blur = _pipeline_fps([Segment(many), Blur("background")])[0]
        rounds.append((end_to_end / inference, inference, end_to_end, blur, at_once, one_at_a_time))
        cpu.append((inference_cpu_ms, end_to_end_cpu_ms, decode_ms))
    ratio, inference, end_to_end, blur, at_once, one_at_a_time = sorted(rounds)[len(rounds) // 2]
    print(
        f"{model.manifest.name} ({model.decoder}, {model.backend.name}, "
        f"{many.backend.streams} frames at once) on demo 640x480, median of {args.rounds}: "
        f"inference-only {inference:.1f} FPS one frame at a time, {at_once:.1f} FPS "
        f"{many.backend.streams} at once; end to end {end_to_end:.1f} FPS (ratio {ratio:.2f} "
        f"to one at a time, {end_to_end / at_once:.2f} to {many.backend.streams} at once), "
        f"with --blur background {blur:.1f} FPS"
    )
    print(
        f"  one frame at a time end to end: {one_at_a_time:.1f} FPS "
        f"(ratio {one_at_a_time / inference:.2f})"
    )
    print(f"  ratios per round: {', '.join(f'{r[0]:.2f}' for r in rounds)}")
    print(f"  blur FPS per round: {', '.join(f'{r[3]:.1f}' for r in rounds)}")
    inference_cpu_ms, end_to_end_cpu_ms, decode_ms = (
        statistics.median(values) for values in zip(*cpu)
    )
    print(
        f"  main-thread CPU per frame (median): inference-only {inference_cpu_ms:.2f} ms, "
        f"end to end {end_to_end_cpu_ms:.2f} ms (+{end_to_end_cpu_ms - inference_cpu_ms:.2f} "
        f"ms, of which decode {decode_ms:.2f} ms wall; one frame at a time): CPU-bound ratio "
        f"{inference_cpu_ms / end_to_end_cpu_ms:.2f}"
    )
    # The most end to end could reach here: the cores busy with nothing but inference at
    # `streams` at once (its CPU per frame from that FPS) and the rest of each frame.
    from ceiling import ceiling_fps, cores, rest_cpu_ms

    from ubiq.hardware.sources import demo_clip_path

    rest = rest_cpu_ms(
        demo_clip_path(),
        [frame.image for frame in frames],
        model.prepare,
        model.infer,
        model.decode,
    )
    ceiling = ceiling_fps(at_once, rest)
    print(
        f"  ceiling on {cores()} cores: inference {many.backend.streams} at once takes "
        f"{cores() * 1e3 / at_once:.2f} ms of CPU a frame, the rest "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in rest.items())
        + f" ms: at most {ceiling:.1f} FPS end to end, ratio at most "
        f"{ceiling / inference:.2f} to one at a time"
    )
    if args.pictures:
        for path in _pictures(model, Path(args.pictures)):
            print(f"  wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
