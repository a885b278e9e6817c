"""The most FPS a whole pipeline could reach on this machine, for the speed benchmarks.

A frame costs its inference (at frames in flight, ``cores / FPS`` of CPU when inference
alone keeps every core busy) plus what it needs besides: reading it from the video,
preprocessing, decoding the outputs. With no pipeline at all around them, the FPS end to
end cannot pass ``cores / (inference + rest)``: a ratio bar above that cannot be met here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


def rest_cpu_ms(
    video: str,
    frames: Sequence[Any],
    prepare: Callable[[Any], tuple],
    infer: Callable[[Any], Any],
    decode: Callable[[Any, Any], Any],
) -> dict[str, float]:
    """CPU ms per frame of reading, preparing and decoding.

    Reading is the whole ``video`` decoded with one FFmpeg thread, as ubiq's sources open
    files (the process's CPU time); preparing (``prepare(frame) -> (tensor, transform)``)
    and decoding (``decode(outputs, transform)``, of ``infer(tensor)``'s outputs) are
    timed on this thread only, so the runtimes' idle threads do not count, the best of
    three passes over ``frames``.

    Raises:
        ValueError: If ``video`` gives no frame.
    """
    import cv2

    capture = cv2.VideoCapture(str(video), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    started, count = time.process_time(), 0
    while capture.read()[0]:
        count += 1
    capture.release()
    if not count:
        raise ValueError(f"cannot read a frame of {video}")
    costs = {"reading": (time.process_time() - started) * 1e3 / count}
    prepared = [prepare(frame) for frame in frames]
    outputs = [infer(tensor) for tensor, _ in prepared[:20]]
    pairs = [(outputs[i % len(outputs)], prepared[i][1]) for i in range(len(prepared))]
    for name, step, items in (
        ("preparing", prepare, frames),
        ("decoding", lambda pair: decode(*pair), pairs),
    ):
        passes = []
        for _ in range(3):
            started = time.thread_time()
            for item in items:
                step(item)
            passes.append((time.thread_time() - started) * 1e3 / len(items))
        costs[name] = min(passes)
    return costs


def ceiling_fps(inference_fps: float, rest: dict[str, float], count: int | None = None) -> float:
    """``cores / (cores / inference_fps + sum(rest))`` in FPS (ms of CPU per frame)."""
    count = count or cores()
    return count * 1e3 / (count * 1e3 / inference_fps + sum(rest.values()))
