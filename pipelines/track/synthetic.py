"""Generated pedestrian sequences in MOTChallenge layout, with ground truth and detections.

People walk on a ground plane seen by a pinhole camera 3 m up (1920x1080, focal 1000 px):
walking speeds of 1.0-1.6 m/s, groups of two or three side by side, crossings from both
sides at different depths, some stopping for a few seconds, headings that wander. Boxes
are the projected 1.6-1.9 m tall bodies, so they grow as people come closer. A closer
person hides a farther one: the hidden fraction lowers the detector's score and past a
point drops the box. Detections carry box noise proportional to their size, false
positives at low scores (and one recurring false detection at a fixed place), for a
``strong`` detector (confident boxes at 0.75-0.95) or a ``weak`` embedded one (0.3-0.55).
A ``pan`` sequence turns the camera left and right, shifting the whole image.

:func:`render` draws a frame (a textured background shifted with the pan, people as
coloured blocks) for trackers that estimate camera motion from the images.

Written as MOT17 expects: ``gt/gt.txt`` rows ``frame,id,x,y,w,h,1,1,visibility``,
``det/det.txt`` rows ``frame,-1,x,y,w,h,score,-1,-1,-1`` and ``seqinfo.ini``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

FOCAL = 1000.0
CAMERA_HEIGHT = 3.0
WIDTH, HEIGHT = 1920, 1080
HORIZON = 380.0
DETECTORS = ("strong", "weak")


@dataclass(frozen=True)
class SequenceSpec:
    """What to generate.

    Attributes:
        name: Sequence folder name.
        seed: Random seed (same seed, same sequence).
        frames: Length in frames.
        fps: Frame rate.
        people: People who walk through over the sequence.
        detector: ``strong`` or ``weak`` (see the module docstring).
        pan: Camera pan amplitude in pixels (0: a fixed camera).
    """

    name: str
    seed: int
    frames: int = 600
    fps: float = 30.0
    people: int = 40
    detector: str = "strong"
    pan: float = 0.0

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.frames < 1 or self.people < 1 or self.fps <= 0:
            raise ValueError("frames, people and fps must be positive")


@dataclass
class Sequence:
    """A generated sequence: rows as MOTChallenge writes them, and the camera shift."""

    spec: SequenceSpec
    gt: np.ndarray  # (M, 9) frame, id, x, y, w, h, 1, 1, visibility
    det: np.ndarray  # (K, 7) frame, -1, x, y, w, h, score
    shift: np.ndarray  # (frames,) horizontal image shift of the pan, pixels

    @property
    def name(self) -> str:
        return self.spec.name

    def detections(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """``xyxy (N, 4)`` and ``scores (N,)`` of a 1-based frame."""
        rows = self.det[self.det[:, 0] == frame]
        xyxy = np.concatenate([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], axis=1)
        return xyxy, rows[:, 6]


def _walkers(spec: SequenceSpec, rng: np.random.Generator) -> list[dict]:
    """Paths of every person on the ground plane: X (m, lateral) and Z (m, depth) per frame."""
    dt = 1.0 / spec.fps
    duration = spec.frames * dt
    people: list[dict] = []
    while len(people) < spec.people:
        start = 0.0 if len(people) < spec.people // 4 else rng.uniform(-2.0, duration - 2.0)
        group = int(rng.choice([1, 1, 1, 2, 2, 3]))
        z = rng.uniform(5.0, 22.0)
        half_view = (WIDTH / 2 + 200) * z / FOCAL
        direction = rng.choice([-1.0, 1.0])
        speed = rng.uniform(1.0, 1.6)
        heading = rng.normal(0.0, 0.25)
        if start <= 0.0:
            x = rng.uniform(-half_view * 0.9, half_view * 0.9)
        else:
            x = -direction * (half_view + rng.uniform(0.5, 2.0))
        stop_at = rng.uniform(0, duration) if rng.random() < 0.3 else None
        stop_for = rng.uniform(1.0, 4.0)
        for member in range(group):
            people.append(
                dict(
                    start=max(start, 0.0) + member * rng.uniform(0.0, 0.3),
                    x=x - direction * member * rng.uniform(0.5, 0.9),
                    z=z + member * rng.uniform(-0.6, 0.6),
                    direction=direction,
                    speed=speed * rng.uniform(0.97, 1.03),
                    heading=heading,
                    stop_at=stop_at,
                    stop_for=stop_for,
                    height=rng.uniform(1.6, 1.9),
                    wobble=rng.normal(0, 0.05, size=spec.frames),
                )
            )
    paths = []
    for person in people[: spec.people]:
        xs = np.full(spec.frames, np.nan)
        zs = np.full(spec.frames, np.nan)
        x, z, heading = person["x"], person["z"], person["heading"]
        for frame in range(spec.frames):
            t = frame * dt
            if t < person["start"]:
                continue
            stopped = person["stop_at"] is not None and (
                person["stop_at"] <= t < person["stop_at"] + person["stop_for"]
            )
            if not stopped:
                heading = float(np.clip(heading + person["wobble"][frame] * dt * 3, -0.6, 0.6))
                x += person["direction"] * person["speed"] * np.cos(heading) * dt
                z = float(np.clip(z + person["speed"] * np.sin(heading) * dt, 4.5, 24.0))
            xs[frame], zs[frame] = x, z
        paths.append(dict(x=xs, z=zs, height=person["height"]))
    return paths


def generate(spec: SequenceSpec) -> Sequence:
    """Generates one sequence (deterministic for a given spec)."""
    rng = np.random.default_rng(spec.seed)
    paths = _walkers(spec, rng)
    t = np.arange(spec.frames) / spec.fps
    shift = spec.pan * np.sin(2 * np.pi * t / 9.0) * (1 + 0.15 * np.sin(2 * np.pi * t / 2.3))
    strong = spec.detector == "strong"
    gt_rows, det_rows = [], []
    for frame in range(spec.frames):
        boxes, ids, depth = [], [], []
        for number, path in enumerate(paths, start=1):
            x, z = path["x"][frame], path["z"][frame]
            if np.isnan(x):
                continue
            h = FOCAL * path["height"] / z
            w = 0.41 * h
            cx = WIDTH / 2 + FOCAL * x / z - shift[frame]
            foot = HORIZON + FOCAL * CAMERA_HEIGHT / z
            boxes.append((cx - w / 2, foot - h, cx + w / 2, foot))
            ids.append(number)
            depth.append(z)
        if not boxes:
            continue
        boxes = np.array(boxes)
        ids = np.array(ids)
        depth = np.array(depth)
        visible = _visibility(boxes, depth)
        clipped = np.clip(boxes, [0, 0, 0, 0], [WIDTH, HEIGHT, WIDTH, HEIGHT])
        area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
        inside = np.prod(np.clip(clipped[:, 2:] - clipped[:, :2], 0, None), axis=1) / area
        keep = inside >= 0.4
        for box, number, vis in zip(clipped[keep], ids[keep], visible[keep] * inside[keep]):
            x1, y1, x2, y2 = box
            gt_rows.append((frame + 1, number, x1, y1, x2 - x1, y2 - y1, 1, 1, round(vis, 3)))
            if strong:
                found = rng.random() < np.clip((vis - 0.15) / 0.35, 0.0, 0.98)
                score = rng.uniform(0.75, 0.95) * (0.45 + 0.55 * vis)
            else:
                found = rng.random() < np.clip((vis - 0.2) / 0.4, 0.0, 0.93)
                score = rng.uniform(0.32, 0.52) * (0.6 + 0.4 * vis)
            if not found:
                continue
            height = y2 - y1
            noise = (
                rng.normal(0, 0.04 if strong else 0.06, 4)
                * height
                * np.array([0.41, 1.0, 0.41, 1.0])
            )
            nx1, ny1, nx2, ny2 = np.array([x1, y1, x2, y2]) + noise
            if nx2 - nx1 < 4 or ny2 - ny1 < 8:
                continue
            det_rows.append((frame + 1, -1, nx1, ny1, nx2 - nx1, ny2 - ny1, round(score, 4)))
        # False positives: scattered at low scores, and one recurring at a fixed place.
        for _ in range(rng.poisson(1.5 if strong else 2.5)):
            z = rng.uniform(5.0, 22.0)
            h = FOCAL * 1.7 / z * rng.uniform(0.5, 1.2)
            cx = rng.uniform(0, WIDTH)
            foot = HORIZON + FOCAL * CAMERA_HEIGHT / z
            score = rng.uniform(0.1, 0.45) if strong else rng.uniform(0.1, 0.33)
            det_rows.append((frame + 1, -1, cx - 0.2 * h, foot - h, 0.41 * h, h, round(score, 4)))
        if rng.random() < 0.3:
            cx = 1500 - shift[frame]
            score = rng.uniform(0.3, 0.55) if strong else rng.uniform(0.2, 0.36)
            det_rows.append((frame + 1, -1, cx, 300, 60, 150, round(score, 4)))
    gt = np.array(gt_rows, np.float64).reshape(-1, 9)
    det = np.array(det_rows, np.float64).reshape(-1, 7)
    det = det[np.argsort(det[:, 0], kind="stable")]
    return Sequence(spec, gt, det, shift)


def _visibility(boxes: np.ndarray, depth: np.ndarray, grid: int = 8) -> np.ndarray:
    """Fraction of each box not hidden by a closer one (sampled on a grid)."""
    fractions = (np.arange(grid) + 0.5) / grid
    visible = np.ones(len(boxes))
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        closer = boxes[depth < depth[i]]
        if not len(closer):
            continue
        px = x1 + fractions * (x2 - x1)
        py = y1 + fractions * (y2 - y1)
        gx, gy = np.meshgrid(px, py)
        gx, gy = gx.reshape(-1, 1), gy.reshape(-1, 1)
        hidden = (
            (gx >= closer[:, 0])
            & (gx <= closer[:, 2])
            & (gy >= closer[:, 1])
            & (gy <= closer[:, 3])
        ).any(axis=1)
        visible[i] = 1.0 - hidden.mean()
    return visible


def write(sequence: Sequence, root: str | Path) -> Path:
    """Writes ``root/NAME/{gt/gt.txt, det/det.txt, seqinfo.ini}``; returns the folder."""
    folder = Path(root) / sequence.name
    (folder / "gt").mkdir(parents=True, exist_ok=True)
    (folder / "det").mkdir(parents=True, exist_ok=True)
    np.savetxt(
        folder / "gt" / "gt.txt",
        sequence.gt,
        fmt=["%d", "%d", "%.2f", "%.2f", "%.2f", "%.2f", "%d", "%d", "%.3f"],
        delimiter=",",
    )
    rows = np.concatenate([sequence.det, -np.ones((len(sequence.det), 3))], axis=1)
    np.savetxt(
        folder / "det" / "det.txt",
        rows,
        fmt=["%d", "%d", "%.2f", "%.2f", "%.2f", "%.2f", "%.4f", "%d", "%d", "%d"],
        delimiter=",",
    )
    spec = sequence.spec
    (folder / "seqinfo.ini").write_text(
        "[Sequence]\n"
        f"name={spec.name}\nimDir=img1\nframeRate={spec.fps:g}\nseqLength={spec.frames}\n"
        f"imWidth={WIDTH}\nimHeight={HEIGHT}\nimExt=.jpg\n",
        encoding="utf-8",
    )
    return folder


_TEXTURES: dict[int, np.ndarray] = {}


def render(sequence: Sequence, frame: int, scale: float = 0.5) -> np.ndarray:
    """Draws a 1-based frame at ``scale`` of full size: the background moves with the pan.

    Camera-motion estimation works on a downscaled frame anyway, so half size is enough.
    """
    seed = sequence.spec.seed
    width, height = round(WIDTH * scale), round(HEIGHT * scale)
    margin = round((abs(sequence.spec.pan) * 1.2 + 8) * scale)
    texture = _TEXTURES.get(seed)
    if texture is None or texture.shape[:2] != (height, width + 2 * margin):
        rng = np.random.default_rng(seed + 7919)
        texture = rng.integers(40, 200, (height // 8 + 1, (width + 2 * margin) // 8 + 1, 3))
        texture = cv2.resize(
            texture.astype(np.uint8), (width + 2 * margin, height), interpolation=cv2.INTER_NEAREST
        )
        texture = cv2.GaussianBlur(texture, (3, 3), 0)
        _TEXTURES.clear()
        _TEXTURES[seed] = texture
    offset = margin + int(round(sequence.shift[frame - 1] * scale))
    image = np.ascontiguousarray(texture[:, offset : offset + width])
    rows = sequence.gt[sequence.gt[:, 0] == frame]
    for row in rows[np.argsort(rows[:, 3] + rows[:, 5])]:  # far (higher feet) first
        x, y, w, h = row[2:6] * scale
        colour = tuple(int(c) for c in np.random.default_rng(int(row[1])).integers(0, 255, 3))
        cv2.rectangle(image, (int(x), int(y)), (int(x + w), int(y + h)), colour, -1)
    return image


def main(argv: list[str] | None = None) -> int:
    """``python -m ubiq.pipelines.track.synthetic OUT [--seed N] ...``: writes one sequence."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m ubiq.pipelines.track.synthetic",
        description="Write a generated pedestrian sequence in MOTChallenge layout.",
    )
    parser.add_argument("out", help="folder to write OUT/NAME/{gt,det,seqinfo.ini} into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default=None, help="sequence name (default: SYN-SEED)")
    parser.add_argument("--frames", type=int, default=600)
    parser.add_argument("--people", type=int, default=40)
    parser.add_argument("--detector", choices=DETECTORS, default="strong")
    parser.add_argument("--pan", type=float, default=0.0, help="camera pan amplitude, pixels")
    args = parser.parse_args(argv)
    try:
        spec = SequenceSpec(
            name=args.name or f"SYN-{args.seed}",
            seed=args.seed,
            frames=args.frames,
            people=args.people,
            detector=args.detector,
            pan=args.pan,
        )
    except ValueError as error:
        parser.error(str(error))
    folder = write(generate(spec), args.out)
    sys.stdout.write(f"wrote {folder}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
