"""Clips of objects crossing a counting line, with the true counts.

Objects cut out of the generated photo set (:mod:`.photos`: cat, cup, rocket, motorcycle,
astronaut) move over a photograph: one at a time across a vertical line in both
directions, pairs crossing at the same moment and overlapping (the farther one drawn
first, partly hidden), and one object that walks up to the line, waits beside it with a
small jitter and turns back without crossing. Each path is known, so the true count per
class and direction is exact: a crossing is the object's centre passing the line from one
side to the other within the line's length.

``python -m ubiq.models.datasets.crossings OUT --seed N`` writes ``OUT/clip.mp4`` and
``OUT/truth.json`` (``{"line": [x1, y1, x2, y2], "counts": {label: {"in", "out"}},
"tracks": [...]}``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ubiq.models.datasets import photos

CLASSES = ("cat", "cup", "rocket", "motorcycle", "astronaut")
WIDTH, HEIGHT = 384, 288
SCENES = ("brick.png", "grass.png", "gravel.png")


@dataclass(frozen=True)
class CrossingSpec:
    """What to render.

    Attributes:
        seed: Random seed (same seed, same clip).
        fps: Frame rate.
        singles: Objects crossing one at a time.
        pairs: Pairs crossing together (overlapping).
        stoppers: Objects stopping beside the line and turning back.
        object_height: Height range of the objects in pixels.
    """

    seed: int = 0
    fps: float = 15.0
    singles: int = 6
    pairs: int = 2
    stoppers: int = 1
    object_height: tuple[int, int] = (110, 150)


@dataclass
class _Walker:
    label: str
    cutout: photos.Cutout
    xs: np.ndarray
    ys: np.ndarray
    depth: float
    start_t: float = 0.0
    start_x: float = 0.0
    direction: float = 1.0
    speed: float = 100.0
    y: float = 0.0
    stop: bool = False
    half: float = 0.0
    sprite: np.ndarray | None = field(default=None, repr=False)
    alpha: np.ndarray | None = field(default=None, repr=False)


@dataclass
class CrossingClip:
    """A rendered clip's paths and the true counts (line ``x = WIDTH / 2``, top to bottom)."""

    spec: CrossingSpec
    walkers: list[_Walker]
    frames: int
    background: np.ndarray

    @property
    def line(self) -> tuple[float, float, float, float]:
        """The counting line ``X1, Y1, X2, Y2`` (pointing down: ``in`` is right to left)."""
        return (WIDTH / 2, 0.0, WIDTH / 2, float(HEIGHT))

    def truth(self) -> dict:
        """``{label: {"in": n, "out": n}}`` from the paths: with the line pointing down,
        ``side = -(HEIGHT) * (x - X)``, so moving right to left is ``in``."""
        counts: dict[str, dict[str, int]] = {}
        x_line = WIDTH / 2
        for walker in self.walkers:
            visible = ~np.isnan(walker.xs)
            sides = np.sign(walker.xs[visible] - x_line)
            sides = sides[sides != 0]
            if len(sides) < 2 or sides[0] == sides[-1]:
                continue
            direction = "in" if sides[0] > 0 else "out"
            per_label = counts.setdefault(walker.label, {"in": 0, "out": 0})
            per_label[direction] += 1
        return dict(sorted(counts.items()))

    def boxes(self, frame: int) -> tuple[list[int], np.ndarray, np.ndarray]:
        """The objects in ``frame``: their indices in ``walkers``, the ``(N, 4)`` box of each
        one's pixels (alpha at least 0.5, cut at the frame's edges) and the fraction of those
        pixels no nearer object covers (1.0 in the open, near 0 behind a pair's near one).

        An object wholly outside the frame is left out.
        """
        rows, boxes, visible = [], [], []
        covered = np.zeros((HEIGHT, WIDTH), bool)
        # nearest first, so `covered` holds what is in front of each object as it comes
        for index in sorted(range(len(self.walkers)), key=lambda i: self.walkers[i].depth):
            walker = self.walkers[index]
            x, y = walker.xs[frame], walker.ys[frame]
            if np.isnan(x):
                continue
            height, width = walker.alpha.shape
            x0, y0 = int(round(x - width / 2)), int(round(y - height / 2))
            sx0, sy0 = max(0, -x0), max(0, -y0)
            sx1, sy1 = min(width, WIDTH - x0), min(height, HEIGHT - y0)
            if sx1 <= sx0 or sy1 <= sy0:
                continue
            solid = walker.alpha[sy0:sy1, sx0:sx1] >= 0.5
            ys, xs = np.nonzero(solid)
            if not len(xs):
                continue
            region = covered[y0 + sy0 : y0 + sy1, x0 + sx0 : x0 + sx1]
            rows.append(index)
            left, top = x0 + sx0, y0 + sy0
            boxes.append([left + xs.min(), top + ys.min(), left + xs.max() + 1, top + ys.max() + 1])
            visible.append(float((solid & ~region).sum() / len(xs)))
            region |= solid
        order = np.argsort(rows, kind="stable")
        return (
            [rows[i] for i in order],
            np.array(boxes, np.float32).reshape(-1, 4)[order],
            np.array(visible, np.float32)[order],
        )

    def render(self, frame: int) -> np.ndarray:
        """Frame ``frame`` (from 0) as BGR uint8."""
        image = self.background.astype(np.float32)
        for walker in sorted(self.walkers, key=lambda w: -w.depth):  # far first
            x, y = walker.xs[frame], walker.ys[frame]
            if np.isnan(x):
                continue
            sprite, alpha = walker.sprite, walker.alpha
            h, w = alpha.shape
            x0, y0 = int(round(x - w / 2)), int(round(y - h / 2))
            sx0, sy0 = max(0, -x0), max(0, -y0)
            sx1, sy1 = min(w, WIDTH - x0), min(h, HEIGHT - y0)
            if sx1 <= sx0 or sy1 <= sy0:
                continue
            region = image[y0 + sy0 : y0 + sy1, x0 + sx0 : x0 + sx1]
            a = alpha[sy0:sy1, sx0:sx1, None]
            region[:] = region * (1 - a) + sprite[sy0:sy1, sx0:sx1] * a
        return np.clip(image, 0, 255).astype(np.uint8)


def _sprite(cutout: photos.Cutout, height: float) -> tuple[np.ndarray, np.ndarray]:
    scale = height / cutout.image.shape[0]
    size = (max(1, round(cutout.image.shape[1] * scale)), max(1, round(height)))
    sprite = cv2.resize(cutout.image, size, interpolation=cv2.INTER_AREA).astype(np.float32)
    alpha = cv2.resize(cutout.mask.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    return sprite, cv2.GaussianBlur(alpha, (3, 3), 0)


def generate(spec: CrossingSpec) -> CrossingClip:
    """Lays out the paths (deterministic for a given spec)."""
    rng = np.random.default_rng(spec.seed)
    cutouts = [c for c in photos.load_cutouts() if c.class_name in CLASSES]
    by_class = {name: [c for c in cutouts if c.class_name == name] for name in CLASSES}
    # Ground-like textures (a floor, a lawn, a path): what a counting camera looks at.
    name = SCENES[int(rng.integers(len(SCENES)))]
    photo = photos.read_photo(name)
    scale = max(WIDTH / photo.shape[1], HEIGHT / photo.shape[0])
    background = cv2.resize(
        photo, (int(np.ceil(photo.shape[1] * scale)), int(np.ceil(photo.shape[0] * scale)))
    )[:HEIGHT, :WIDTH]
    dt = 1.0 / spec.fps
    gap = 0.6  # seconds between one crossing's exit and the next one's entry
    walkers: list[_Walker] = []
    t = 0.3

    def add(label, start_t, direction, y, speed, *, stop=False, depth=1.0):
        cutout = by_class[label][int(rng.integers(len(by_class[label])))]
        height = rng.uniform(*spec.object_height) / depth
        sprite, alpha = _sprite(cutout, height)
        half = sprite.shape[1] / 2
        start_x = -half + 2 if direction > 0 else WIDTH + half - 2
        walker = _Walker(
            label,
            cutout,
            np.array([]),
            np.array([]),
            depth,
            start_t=start_t,
            start_x=start_x,
            direction=direction,
            speed=speed,
            y=y,
            stop=stop,
            half=half,
            sprite=sprite,
            alpha=alpha,
        )
        walkers.append(walker)
        travel = (WIDTH + 2 * half) / speed
        return start_t + (travel if not stop else 2 * (WIDTH / 2 - 20) / speed + 2.0)

    plan = ["single"] * spec.singles + ["pair"] * spec.pairs + ["stop"] * spec.stoppers
    rng.shuffle(plan)
    for kind in plan:
        label = CLASSES[int(rng.integers(len(CLASSES)))]
        direction = rng.choice([-1.0, 1.0])
        speed = rng.uniform(60, 100)
        y = rng.uniform(0.4 * HEIGHT, 0.6 * HEIGHT)
        if kind == "single":
            end = add(label, t, direction, y, speed)
        elif kind == "pair":
            other = CLASSES[int(rng.integers(len(CLASSES)))]
            opposite = rng.random() < 0.5
            end = add(label, t, direction, y, speed, depth=1.0)
            end = max(
                end,
                add(
                    other,
                    t,
                    -direction if opposite else direction,
                    y + rng.uniform(-25, 25),
                    speed * rng.uniform(0.9, 1.1),
                    depth=1.25,
                ),
            )
        else:
            end = add(label, t, direction, y, speed, stop=True)
        t = end + gap
    frames = int(np.ceil((t + 0.5) / dt))
    times = np.arange(frames) * dt
    for walker in walkers:
        xs = np.full(frames, np.nan)
        ys = np.full(frames, np.nan)
        elapsed = times - walker.start_t
        active = elapsed >= 0
        if walker.stop:
            # Walk to 20 px short of the line (centre), wait 2 s jittering, walk back out.
            stop_x = WIDTH / 2 - walker.direction * 20
            reach = abs(stop_x - walker.start_x) / walker.speed
            position = np.where(
                elapsed < reach,
                walker.start_x + walker.direction * walker.speed * elapsed,
                np.where(
                    elapsed < reach + 2.0,
                    stop_x + rng.normal(0, 3, frames),
                    stop_x - walker.direction * walker.speed * (elapsed - reach - 2.0),
                ),
            )
            done = elapsed > 2 * reach + 2.0
        else:
            position = walker.start_x + walker.direction * walker.speed * elapsed
            done = (position < -walker.half - 2) | (position > WIDTH + walker.half + 2)
        keep = active & ~done
        xs[keep] = position[keep]
        ys[keep] = walker.y + rng.normal(0, 1.0, keep.sum())
        walker.xs, walker.ys = xs, ys
    return CrossingClip(spec, walkers, frames, background)


def write(clip: CrossingClip, folder: str | Path) -> Path:
    """Writes ``clip.mp4`` and ``truth.json`` into ``folder``; returns the video's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    video = folder / "clip.mp4"
    writer = cv2.VideoWriter(
        str(video), cv2.VideoWriter_fourcc(*"mp4v"), clip.spec.fps, (WIDTH, HEIGHT)
    )
    for frame in range(clip.frames):
        writer.write(clip.render(frame))
    writer.release()
    truth = {
        "line": list(clip.line),
        "fps": clip.spec.fps,
        "frames": clip.frames,
        "counts": clip.truth(),
        "tracks": [
            {"label": w.label, "first_frame": int(np.flatnonzero(~np.isnan(w.xs))[0])}
            for w in clip.walkers
            if (~np.isnan(w.xs)).any()
        ],
    }
    (folder / "truth.json").write_text(json.dumps(truth, indent=2), encoding="utf-8")
    return video


def main(argv: list[str] | None = None) -> int:
    """``python -m ubiq.models.datasets.crossings OUT [--seed N]``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m ubiq.models.datasets.crossings",
        description="Write a clip of objects crossing a line, and its true counts.",
    )
    parser.add_argument("out", help="folder for clip.mp4 and truth.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--singles", type=int, default=6)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--stoppers", type=int, default=1)
    args = parser.parse_args(argv)
    clip = generate(
        CrossingSpec(seed=args.seed, singles=args.singles, pairs=args.pairs, stoppers=args.stoppers)
    )
    video = write(clip, args.out)
    sys.stdout.write(f"wrote {video} ({clip.frames} frames), truth {clip.truth()}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
