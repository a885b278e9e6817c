"""Counting people across a line on MOTChallenge sequences: the counter's counts against
the crossings of the ground-truth tracks, and supervision's LineZone on Roboflow
``trackers`` on the same public detections.

A MOTChallenge sequence (``SEQ/gt/gt.txt``, ``SEQ/det/det.txt``, ``SEQ/seqinfo.ini``, as
MOT17 and MOT20 ship them) is real pedestrian tracks with the detections a real detector
made. The true crossings come from ``gt.txt``: a pedestrian (class 1, marked to be
considered) crosses when the anchor of its box (``--anchor``, the counter's) moves from
one side of the line to the other within the line's length; each track counts once per
direction, as the counter counts. Then, on ``det.txt`` (boxes at ``--conf`` or above):

- ubiq: the ``counter`` app's stages (Track + Rules with its shipped defaults, ``--set``
  to change them), the line given as the app takes it;
- peer: ``trackers.ByteTrackTracker`` (defaults, and with thresholds 0.3) feeding
  ``supervision.LineZone`` (the same anchor, 3 frames of hysteresis, as ubiq's).

    python benchmarks/counter_on_mot.py --data MOT17/train --line 0.5,0,0.5,1
    python benchmarks/counter_on_mot.py --generate 1 2 3 --workdir /tmp/mot-count

Zones too (``--zone``, a polygon; default the middle band of the frame, 35% to 65% of its
width): the ``zone-alert`` app's stages time each pedestrian's stay, against the frames its
ground-truth anchor is inside (``--zone-anchor``, the zone-alert app's ``bottom``: the
feet). A pedestrian with one stay (not at the start or end of its track or of the
sequence) is right when the tracks matched to it (most of their boxes over it, IoU 0.3)
made one ``zone.enter`` and one ``zone.exit`` whose ``dwell_s`` is within one frame of
the truth. Occupancy, frame by frame, against the pedestrians inside: ubiq's (the rules'
``occupancy``, 3 frames of hysteresis) and supervision's ``PolygonZone`` count on the peer's
tracks (thresholds 0.3).

Without ``--data`` it writes generated sequences (``ubiq.pipelines.track.synthetic``:
people walking both ways at different depths, in groups hiding one another, some
stopping; a ``strong`` and a ``weak`` detector) and counts on those. It prints, per
sequence, the true in/out counts, each counter's and how far off it is, and how many true
crossings the detections never showed on one side of the line (no detection matching the
person at IoU 0.5 in 3 frames or more there: what no counter can count from them).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from counter_vs_supervision import add_set_option  # noqa: E402

from ubiq.apps.app import App  # noqa: E402
from ubiq.errors import ConfigError  # noqa: E402
from ubiq.pipelines.track import synthetic  # noqa: E402
from ubiq.pipelines.track.evaluate import sequences  # noqa: E402
from ubiq.pipelines.track.mot import read_detections  # noqa: E402
from ubiq.types import Detections, Frame, FrameResult, iou_matrix  # noqa: E402

PEERS = {
    "trackers ByteTrack + LineZone": {},
    "trackers ByteTrack (thresholds 0.3) + LineZone": dict(
        track_activation_threshold=0.3, high_conf_det_threshold=0.3
    ),
}


def seqinfo(folder: Path) -> dict:
    """``frameRate``, ``imWidth``, ``imHeight`` of ``seqinfo.ini`` (30 fps and the
    ground truth's extent when absent)."""
    info = {}
    path = folder / "seqinfo.ini"
    if path.is_file():
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition("=")
            info[key.strip()] = value.strip()
    return info


def parse_line(text: str, width: int, height: int) -> tuple[float, float, float, float]:
    """``X1,Y1,X2,Y2`` in pixels, or as fractions of the frame when every value is in
    [0, 1]; the line in pixels."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--line {text!r}: expected X1,Y1,X2,Y2 numbers") from None
    if len(values) != 4:
        raise ConfigError(f"--line {text!r}: expected 4 numbers X1,Y1,X2,Y2")
    if all(0.0 <= v <= 1.0 for v in values):
        values = [v * (width if i % 2 == 0 else height) for i, v in enumerate(values)]
    if values[0] == values[2] and values[1] == values[3]:
        raise ConfigError(f"--line {text!r} has zero length")
    return tuple(values)


# The truth's geometry (anchors, sides, polygons) is written here on purpose rather than
# taken from ubiq.pipelines.rules: the code under test does not also grade itself.


def anchors(xyxy: np.ndarray, anchor: str) -> np.ndarray:
    """The reference point of each box: its centre, or the middle of its bottom edge."""
    x = (xyxy[:, 0] + xyxy[:, 2]) / 2
    y = (xyxy[:, 1] + xyxy[:, 3]) / 2 if anchor == "center" else xyxy[:, 3]
    return np.stack([x, y], axis=1)


def side(line, points: np.ndarray) -> np.ndarray:
    """``(Bx-Ax)(Py-Ay) - (By-Ay)(Px-Ax)``: negative left of A->B (y down), positive right."""
    ax, ay, bx, by = line
    return (bx - ax) * (points[:, 1] - ay) - (by - ay) * (points[:, 0] - ax)


def read_gt(folder: Path) -> np.ndarray:
    """``SEQ/gt/gt.txt``'s pedestrians (see :func:`pedestrians`)."""
    return pedestrians(np.loadtxt(folder / "gt" / "gt.txt", delimiter=",", ndmin=2))


def pedestrians(rows: np.ndarray) -> np.ndarray:
    """``gt.txt`` rows (``frame, id, x, y, w, h, consider, class, visibility``) of
    pedestrians (class 1, when classes are given) to be considered, as ``(frame, id, x1,
    y1, x2, y2, visibility)``."""
    keep = rows[:, 6] != 0
    if rows.shape[1] >= 8 and not np.all(rows[:, 7] == -1):
        keep &= rows[:, 7] == 1
    rows = rows[keep]
    vis = rows[:, 8] if rows.shape[1] >= 9 else np.ones(len(rows))
    boxes = np.concatenate([rows[:, 2:4], rows[:, 2:4] + rows[:, 4:6]], axis=1)
    return np.column_stack([rows[:, 0], rows[:, 1], boxes, vis])


def true_crossings(gt: np.ndarray, line, anchor: str) -> list[dict]:
    """Each ground-truth track's crossings, once per direction: ``{"id", "frame",
    "direction"}``; a crossing is the anchor changing sides between two annotated frames
    with the straight step between them passing within the line's length."""
    out = []
    ax, ay, bx, by = line
    direction_vector = np.array([bx - ax, by - ay])
    length2 = float(direction_vector @ direction_vector)
    for track_id in np.unique(gt[:, 1]):
        rows = gt[gt[:, 1] == track_id]
        rows = rows[np.argsort(rows[:, 0])]
        points = anchors(rows[:, 2:6], anchor)
        signs = np.sign(side(line, points))
        counted: set[str] = set()
        previous = None
        for k in range(len(rows)):
            if signs[k] == 0:
                continue
            if previous is not None and signs[k] != signs[previous]:
                s0, s1 = side(line, points[[previous, k]])
                t = s0 / (s0 - s1)
                point = points[previous] + t * (points[k] - points[previous])
                along = float((point - [ax, ay]) @ direction_vector) / length2
                direction = "in" if signs[k] > 0 else "out"
                if 0.0 <= along <= 1.0 and direction not in counted:
                    counted.add(direction)
                    out.append(
                        {"id": int(track_id), "frame": int(rows[k, 0]), "direction": direction}
                    )
            previous = k
    return out


def rows_by_frame(gt: np.ndarray) -> dict[int, np.ndarray]:
    """The ground-truth rows of each frame."""
    order = np.argsort(gt[:, 0], kind="stable")
    frames, starts = np.unique(gt[order, 0].astype(int), return_index=True)
    return dict(zip(frames.tolist(), np.split(gt[order], starts[1:]), strict=True))


def seen_sides(gt: np.ndarray, frames, line, anchor: str, conf: float) -> dict[int, tuple]:
    """Per ground-truth id, in how many frames a detection (score >= ``conf``) matched it
    (IoU >= 0.5, each other's best) on the negative and on the positive side."""
    counts: dict[int, list[int]] = {}
    by_frame = rows_by_frame(gt)
    for mot in frames:
        truth = by_frame.get(mot.frame)
        keep = mot.scores >= conf
        if truth is None or not keep.any():
            continue
        iou = iou_matrix(mot.xyxy[keep].astype(np.float32), truth[:, 2:6].astype(np.float32))
        best_truth = iou.argmax(axis=1)
        best_det = iou.argmax(axis=0)
        points = anchors(truth[:, 2:6], anchor)
        signs = np.sign(side(line, points))
        for det, row in enumerate(best_truth):
            if iou[det, row] >= 0.5 and best_det[row] == det and signs[row] != 0:
                slot = counts.setdefault(int(truth[row, 1]), [0, 0])
                slot[int(signs[row] > 0)] += 1
    return {k: tuple(v) for k, v in counts.items()}


def tally(crossings: list[dict]) -> dict[str, int]:
    out = {"in": 0, "out": 0}
    for crossing in crossings:
        out[crossing["direction"]] += 1
    return out


def app_stages(app: str, conf: float, anchor: str, shapes: str, sets=()):
    """The ``app``'s Track and Rules stages as its YAML sets them, with ``conf``,
    ``anchor`` and the first camera's ``shapes`` (``lines=[...]`` or ``zones=[...]``)."""
    found = App.from_yaml(
        None,
        [f"conf={conf}", f"anchor={anchor}", f"cameras.0.{shapes}", *sets],
        app=app,
    )
    return found.track_stage(), found.rules_for(found.config.cameras[0])


def ubiq_counts(frames, line, fps: float, size: tuple[int, int], conf: float, anchor: str, sets=()):
    """The counter app's Track + Rules on the detections; ``{"in", "out"}`` of ``person``."""
    points = ",".join(f"{v:g}" for v in line)
    track, rules = app_stages(
        "counter", conf, anchor, f"lines=[{{name: line, points: [{points}]}}]", sets
    )
    image = np.zeros((size[1], size[0], 3), np.uint8)
    for index, mot in enumerate(frames):
        rules(track(_frame_result(mot, index, fps, image, conf)))
    track.finish()
    counts = rules.counts()["lines"]["line"].get("person", {})
    return {"in": int(counts.get("in", 0)), "out": int(counts.get("out", 0))}


def _sv_detections(mot, conf: float):
    """The frame's boxes at ``conf`` or above as supervision ``Detections`` (class 0)."""
    import supervision as sv

    keep = mot.scores >= conf
    return sv.Detections(
        xyxy=mot.xyxy[keep].astype(np.float32),
        confidence=mot.scores[keep].astype(np.float32),
        class_id=np.zeros(int(keep.sum()), int),
    )


def _peer_track(tracker, mot, conf: float):
    """Roboflow trackers' update on the frame, its confirmed tracks only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracked = tracker.update(_sv_detections(mot, conf))
    if tracked.tracker_id is not None:
        tracked = tracked[tracked.tracker_id >= 0]
    return tracked


def peer_counts(frames, line, fps: float, conf: float, anchor: str, options: dict):
    """Roboflow trackers' ByteTrack + supervision's LineZone; ``{"in", "out"}`` in ubiq's
    direction convention."""
    import supervision as sv
    import trackers

    tracker = trackers.ByteTrackTracker(frame_rate=fps, **options)
    x1, y1, x2, y2 = line
    position = sv.Position.CENTER if anchor == "center" else sv.Position.BOTTOM_CENTER
    zone = sv.LineZone(
        start=sv.Point(x1, y1),
        end=sv.Point(x2, y2),
        triggering_anchors=[position],
        minimum_crossing_threshold=3,
    )
    for mot in frames:
        zone.trigger(_peer_track(tracker, mot, conf))
    # supervision's "in" is the opposite side to ubiq's (see counter_vs_supervision.py).
    return {"in": int(zone.out_count), "out": int(zone.in_count)}


def parse_polygon(text: str, width: int, height: int) -> np.ndarray:
    """``X1,Y1,X2,Y2,...`` (3 points or more), in pixels or as fractions of the frame when
    every value is in [0, 1]; ``(K, 2)`` pixels."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"--zone {text!r}: expected X1,Y1,X2,Y2,... numbers") from None
    if len(values) < 6 or len(values) % 2:
        raise ConfigError(f"--zone {text!r}: expected 3 or more X,Y points")
    points = np.array(values, np.float64).reshape(-1, 2)
    if (points >= 0).all() and (points <= 1).all():
        points *= [width, height]
    if abs(cv2.contourArea(points.astype(np.float32))) == 0:
        raise ConfigError(f"--zone {text!r} has no area")
    return points


def inside(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Whether each point lies in the polygon (its edge included)."""
    contour = polygon.astype(np.float32).reshape(-1, 1, 2)
    return np.array(
        [cv2.pointPolygonTest(contour, (float(x), float(y)), False) >= 0 for x, y in points],
        bool,
    )


def framed_anchors(xyxy: np.ndarray, anchor: str, size: tuple[int, int]) -> np.ndarray:
    """Anchors moved onto the frame (a box the frame cuts, annotated past its border)."""
    return np.clip(anchors(xyxy, anchor), 0.0, [float(size[0]), float(size[1])])


def true_stays(gt: np.ndarray, polygon: np.ndarray, anchor: str, last_frame: int, size) -> dict:
    """Per ground-truth id with one stay in the zone, away from the ends of its track and
    of the sequence: ``(first frame inside, frames inside)``."""
    out = {}
    for track_id in np.unique(gt[:, 1]):
        rows = gt[gt[:, 1] == track_id]
        rows = rows[np.argsort(rows[:, 0])]
        here = np.flatnonzero(inside(polygon, framed_anchors(rows[:, 2:6], anchor, size)))
        if not len(here) or here[-1] - here[0] + 1 != len(here):
            continue  # never inside, or more than one stay
        first, last = int(rows[here[0], 0]), int(rows[here[-1], 0])
        if last - first + 1 != len(here) or here[0] == 0 or here[-1] == len(rows) - 1:
            continue  # a gap in its annotation, or inside when its track starts or ends
        if first <= 3 or last >= last_frame - 3:
            continue
        out[int(track_id)] = (first, len(here))
    return out


def _frame_result(mot, index: int, fps: float, image: np.ndarray, conf: float) -> FrameResult:
    keep = mot.scores >= conf
    return FrameResult(
        Frame(image, index, int(index * 1e9 / fps)),
        Detections(
            mot.xyxy[keep].astype(np.float32),
            mot.scores[keep].astype(np.float32),
            np.zeros(int(keep.sum()), np.int64),
            labels=("person",),
        ),
    )


def ubiq_zone(frames, gt, polygon, fps: float, size, conf: float, anchor: str, sets=()):
    """The zone-alert app's Track + Rules: ``(events per ground-truth id, occupancy per
    frame)``; each track's events go to the id most of its boxes overlapped (IoU 0.3)."""
    from collections import Counter

    points = ", ".join(f"{v:g}" for v in polygon.reshape(-1))
    track, rules = app_stages(
        "zone-alert", conf, anchor, f"zones=[{{name: zone, points: [{points}]}}]", sets
    )
    image = np.zeros((size[1], size[0], 3), np.uint8)
    by_frame = rows_by_frame(gt)
    owner: dict[int, Counter] = {}
    events, occupancy = [], []
    for index, mot in enumerate(frames):
        result = rules(track(_frame_result(mot, index, fps, image, conf)))
        events += result.events
        occupancy.append(sum(result.data["occupancy"]["zone"].values()))
        truth, found = by_frame.get(mot.frame), result.detections
        if truth is not None and len(found):
            overlap = iou_matrix(found.xyxy.astype(np.float32), truth[:, 2:6].astype(np.float32))
            for row, track_id in enumerate(found.tracker_id.tolist()):
                best = int(overlap[row].argmax())
                if overlap[row, best] >= 0.3:
                    owner.setdefault(track_id, Counter())[int(truth[best, 1])] += 1
    events += track.finish() or []
    events += rules.finish()
    person_of = {t: c.most_common(1)[0][0] for t, c in owner.items()}
    per_person: dict[int, list] = {}
    for event in events:
        if event.kind in ("zone.enter", "zone.exit"):
            person = person_of.get(event.payload.get("track_id"))
            per_person.setdefault(person, []).append(event)
    return per_person, occupancy


def peer_occupancy(frames, polygon, fps: float, conf: float, anchor: str, options: dict):
    """supervision's ``PolygonZone`` count on Roboflow trackers' ByteTrack, per frame."""
    import supervision as sv
    import trackers

    tracker = trackers.ByteTrackTracker(frame_rate=fps, **options)
    position = sv.Position.CENTER if anchor == "center" else sv.Position.BOTTOM_CENTER
    zone = sv.PolygonZone(polygon.astype(int), triggering_anchors=(position,))
    counts = []
    for mot in frames:
        zone.trigger(_peer_track(tracker, mot, conf))
        counts.append(int(zone.current_count))
    return counts


def true_occupancy(gt, polygon, anchor: str, frames, size) -> list[int]:
    """Pedestrians whose ground-truth anchor is in the zone, per frame of ``frames``."""
    out, by_frame = [], rows_by_frame(gt)
    for mot in frames:
        rows = by_frame.get(mot.frame)
        if rows is None:
            out.append(0)
            continue
        out.append(int(inside(polygon, framed_anchors(rows[:, 2:6], anchor, size)).sum()))
    return out


def stays_right(stays: dict, per_person: dict, fps: float) -> tuple[int, list[float]]:
    """How many true stays the rules timed right (one enter, one exit, dwell within a
    frame), and the dwell errors in frames of those with one enter and one exit."""
    right, errors = 0, []
    for person, (_, frames_inside) in stays.items():
        events = per_person.get(person, [])
        enters = [e for e in events if e.kind == "zone.enter"]
        exits = [e.payload["dwell_s"] for e in events if e.kind == "zone.exit"]
        if len(enters) == 1 and len(exits) == 1:
            error = exits[0] * fps - frames_inside
            errors.append(error)
            right += abs(error) <= 1.02  # dwell_s is rounded to the millisecond
    return right, errors


def generated(seeds, workdir: Path, frames: int, people: int = 40) -> list[Path]:
    """Writes a strong- and a weak-detector sequence per seed; their folders."""
    folders = []
    for seed in seeds:
        for detector in synthetic.DETECTORS:
            spec = synthetic.SequenceSpec(
                name=f"SYN-{detector}-{seed}",
                seed=seed,
                frames=frames,
                people=people,
                detector=detector,
            )
            folders.append(synthetic.write(synthetic.generate(spec), workdir))
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="a MOTChallenge split or one sequence")
    parser.add_argument(
        "--generate",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        metavar="SEED",
        help="without --data: generated sequences of these seeds (strong and weak detector)",
    )
    parser.add_argument("--frames", type=int, default=900, help="length of generated ones")
    parser.add_argument(
        "--people",
        type=int,
        default=40,
        help="people walking through a generated one (80: a crowd)",
    )
    parser.add_argument("--workdir", default="/tmp/ubiq-counter-mot")
    parser.add_argument(
        "--line", default="0.5,0,0.5,1", help="X1,Y1,X2,Y2, pixels or fractions of the frame"
    )
    parser.add_argument(
        "--anchor", choices=("center", "bottom"), default="center", help="the line's anchor"
    )
    parser.add_argument(
        "--zone",
        default="0.35,0,0.65,0,0.65,1,0.35,1",
        help="polygon X1,Y1,X2,Y2,..., pixels or fractions of the frame",
    )
    parser.add_argument(
        "--zone-anchor", choices=("center", "bottom"), default="bottom", help="the zone's"
    )
    parser.add_argument("--conf", type=float, default=0.2, help="the counter's default")
    add_set_option(parser, "counter")
    args = parser.parse_args(argv)
    try:
        if args.data:
            folders = sequences(args.data)
        else:
            folders = generated(args.generate, Path(args.workdir), args.frames, args.people)
        names = ["ubiq counter", *PEERS]
        off = dict.fromkeys(names, 0)
        exact = dict.fromkeys(names, 0)
        total = {"in": 0, "out": 0}
        unseen_total = 0
        zone_right, zone_total, dwell_errors = 0, 0, []
        occupancy_exact = {"ubiq zone-alert": [0, 0], "trackers ByteTrack + PolygonZone": [0, 0]}
        for folder in folders:
            info = seqinfo(folder)
            gt = read_gt(folder)
            width = int(float(info.get("imWidth", np.ceil(gt[:, 4].max()))))
            height = int(float(info.get("imHeight", np.ceil(gt[:, 5].max()))))
            fps = float(info.get("frameRate", 30))
            line = parse_line(args.line, width, height)
            frames = read_detections(folder / "det" / "det.txt")
            truth_rows = true_crossings(gt, line, args.anchor)
            truth = tally(truth_rows)
            seen = seen_sides(gt, frames, line, args.anchor, args.conf)
            unseen = [row for row in truth_rows if min(seen.get(row["id"], (0, 0))) < 3]
            unseen_total += len(unseen)
            results = {
                "ubiq counter": ubiq_counts(
                    frames, line, fps, (width, height), args.conf, args.anchor, tuple(args.set)
                )
            }
            for name, options in PEERS.items():
                results[name] = peer_counts(frames, line, fps, args.conf, args.anchor, options)
            print(
                f"{folder.name}: {len(frames)} frames at {fps:g} fps, truth in {truth['in']} "
                f"out {truth['out']} ({len(unseen)} of them never detected on one side)"
            )
            for key in total:
                total[key] += truth[key]
            for name, counts in results.items():
                wrong = sum(abs(counts[k] - truth[k]) for k in truth)
                off[name] += wrong
                exact[name] += wrong == 0
                verdict = "exact" if wrong == 0 else f"{wrong} off"
                print(f"  {name:48s} in {counts['in']:3d} out {counts['out']:3d}  {verdict}")
            polygon = parse_polygon(args.zone, width, height)
            stays = true_stays(gt, polygon, args.zone_anchor, len(frames), (width, height))
            per_person, occupancy = ubiq_zone(
                frames, gt, polygon, fps, (width, height), args.conf, args.zone_anchor
            )
            right, errors = stays_right(stays, per_person, fps)
            zone_right, zone_total = zone_right + right, zone_total + len(stays)
            dwell_errors += errors
            truth_occupancy = np.array(
                true_occupancy(gt, polygon, args.zone_anchor, frames, (width, height))
            )
            peer = peer_occupancy(
                frames, polygon, fps, args.conf, args.zone_anchor, PEERS[names[2]]
            )
            line_out = f"  zone: {right}/{len(stays)} stays timed within a frame; occupancy exact"
            for name, counted in zip(occupancy_exact, (occupancy, peer)):
                hits = int((np.array(counted) == truth_occupancy).sum())
                occupancy_exact[name][0] += hits
                occupancy_exact[name][1] += len(frames)
                line_out += f", {name} {hits}/{len(frames)} frames"
            print(line_out)
        print(
            f"\n{len(folders)} sequences, {total['in']} in + {total['out']} out true crossings "
            f"({unseen_total} never detected on one side); exact sequences (sum of |counted - "
            f"true| over sequences and directions):"
        )
        for name in names:
            print(f"  {name:48s} {exact[name]} ({off[name]})")
        print(
            f"\nzone stays with one enter, one exit and the dwell within one frame: "
            f"{zone_right}/{zone_total}"
        )
        if dwell_errors:
            errors = np.abs(dwell_errors)
            print(
                f"  |dwell error| of the stays with one enter and one exit (frames): median "
                f"{np.median(errors):.2f}, within 3 frames {int((errors <= 3.02).sum())}/"
                f"{len(errors)}"
            )
        for name, (hits, count) in occupancy_exact.items():
            print(f"occupancy exact, {name}: {hits}/{count} frames ({hits / count:.1%})")
    except ConfigError as error:
        print(f"counter_on_mot: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
