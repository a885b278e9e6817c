"""Segmentation speed: the whole pipeline against inference alone, and the privacy blur.

On the 640x480 demo source (150 frames), per round and per model:

1. inference alone: the model's ``infer`` back to back on tensors prepared up front from
   the demo frames (no preprocessing, no decoding);
2. end to end: ``Pipeline([Segment(model)])`` over the demo source, as ``ubiq segment``
   runs it (capture, preprocessing on the prefetch thread, inference, decoding and the mask
   mapped to frame size);
3. with ``--blur background`` (``Pipeline([Segment(model), Blur("background")])``).

Prints FPS of each and the ratio end-to-end / inference-only; the median round is shown
(the machine may be shared: rerun when the numbers look odd). ``--pictures DIR`` also writes
an overlay and a blurred frame of the demo source (``segment-overlay.jpg``,
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


def _demo_frames(count: int) -> list:
    from ubiq.hardware.sources import open_source

    with open_source("demo") as source:
        return [frame for _, frame in zip(range(count), source)]


def _inference_fps(model, frames) -> float:
    tensors = [model.prepare(frame.image)[0] for frame in frames]
    model.infer(tensors[0])
    started = time.perf_counter()
    for tensor in tensors:
        model.infer(tensor)
    return len(tensors) / (time.perf_counter() - started)


def _pipeline_fps(stages) -> float:
    from ubiq.pipelines.pipeline import Pipeline

    return Pipeline(stages).run("demo").fps


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
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    cv2.setNumThreads(1)  # as ubiq segment does
    model = Segmenter.load(args.model, num_threads=args.threads)
    frames = _demo_frames(150)
    rounds = []
    for _ in range(args.rounds):
        inference = _inference_fps(model, frames)
        end_to_end = _pipeline_fps([Segment(model)])
        blur = _pipeline_fps([Segment(model), Blur("background")])
        rounds.append((end_to_end / inference, inference, end_to_end, blur))
    ratio, inference, end_to_end, blur = sorted(rounds)[len(rounds) // 2]
    print(
        f"{model.manifest.name} ({model.decoder}, {model.backend.name}) on demo 640x480, "
        f"median of {args.rounds}: inference-only {inference:.1f} FPS, end to end "
        f"{end_to_end:.1f} FPS (ratio {ratio:.2f}), with --blur background {blur:.1f} FPS"
    )
    print(f"  ratios per round: {', '.join(f'{r[0]:.2f}' for r in rounds)}")
    print(f"  blur FPS per round: {statistics.median(r[3] for r in rounds):.1f} median")
    if args.pictures:
        for path in _pictures(model, Path(args.pictures)):
            print(f"  wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
