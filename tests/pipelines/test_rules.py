"""Lines, zones and the rules stage on hand-made tracked detections."""

from __future__ import annotations

import numpy as np
import pytest

from ubiq.errors import ConfigError
from ubiq.pipelines.rules.geometry import Line, Zone, anchor_points
from ubiq.pipelines.rules.rules import Rules
from ubiq.types import Detections, Frame, FrameResult

LABELS = ("person", "car")
FPS = 10


def box(cx, cy, w=20, h=40):
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def run(
    rules: Rules,
    tracks_per_frame: list[list[tuple[int, int, float, float]]],
    ends: dict[int, list[int]] | None = None,
):
    """``tracks_per_frame``: per frame, ``(track_id, class_id, cx, cy)`` rows (or ``(...,
    w, h)``: the box's size, 20 x 40 without); ``ends``: per frame, the tracks the tracker
    drops there (their ``track.end`` events)."""
    events = []
    for index, rows in enumerate(tracks_per_frame):
        frame = Frame(np.zeros((200, 400, 3), np.uint8), index, int(index * 1e9 / FPS))
        detections = Detections(
            np.array([box(*row[2:]) for row in rows], np.float32).reshape(-1, 4),
            np.full(len(rows), 0.9, np.float32),
            np.array([row[1] for row in rows], np.int64),
            tracker_id=np.array([row[0] for row in rows], np.int64),
            labels=LABELS,
        )
        result = FrameResult(frame, detections)
        for track_id in (ends or {}).get(index, []):
            result.add_event("track.end", track_id=track_id)
        result = rules(result)
        events += [(index, e.kind, dict(e.payload)) for e in result.events]
    events += [(None, e.kind, dict(e.payload)) for e in rules.finish()]
    return events


def test_side_sign_follows_the_documented_formula():
    line = Line("l", (0, 0), (10, 0))  # pointing right; y grows downwards
    # (Bx-Ax)(Py-Ay) - (By-Ay)(Px-Ax) = 10 * Py: below the line (y > 0) is positive.
    assert line.side(np.array([[5, 3], [5, -3]])).tolist() == [30.0, -30.0]
    assert anchor_points(np.array([[0, 0, 10, 20]]), "bottom").tolist() == [[5.0, 20.0]]


def test_crossings_count_once_per_track_and_direction_with_hysteresis():
    rules = Rules([Line("door", (200, 0), (200, 200))], min_frames=3)
    # Line A->B points down; side = (0)(..) - (200)(Px-200): left of x=200 is positive.
    # Track 1 walks right (positive -> negative: out), jitters on the line, comes back (in),
    # and goes out again (not counted twice).
    path = [
        150,
        170,
        190,
        199,
        201,
        199,
        201,
        210,
        230,
        250,
        230,
        210,
        190,
        170,
        150,
        170,
        190,
        210,
        230,
        250,
    ]
    events = run(rules, [[(1, 0, x, 100)] for x in path])
    crossings = [(p["direction"], p["label"]) for _, kind, p in events if kind == "line.cross"]
    assert crossings == [("out", "person"), ("in", "person")]
    (counts,) = [p for _, kind, p in events if kind == "counts"]
    assert counts["lines"] == {"door": {"person": {"in": 1, "out": 1}}}


def test_the_majority_label_is_counted_and_passing_beside_the_line_is_not():
    rules = Rules([Line("gate", (200, 0), (200, 100))], min_frames=2)
    rows = []
    for step, x in enumerate(range(150, 260, 10)):
        label = 1 if step == 5 else 0  # one frame misread as a car
        rows.append([(1, label, x, 50), (2, 0, x, 180)])  # track 2 passes below the line's end
    events = run(rules, rows)
    crossings = [(p["track_id"], p["label"]) for _, kind, p in events if kind == "line.cross"]
    assert crossings == [(1, "person")]


def test_zone_enter_exit_dwell_intrusion_and_occupancy_to_the_frame():
    zone = Zone("yard", ((100, 0), (300, 0), (300, 200), (100, 200)))
    rules = Rules(zones=[zone], min_frames=2, dwell_s=1.0, forbidden=["car"])
    frames = []
    for index in range(40):
        rows = []
        x = 50 + 10 * index  # inside from x = 100 (index 5) to x = 290 (index 24)
        rows.append((1, 0, x, 100))
        if 10 <= index < 15:
            rows.append((2, 1, 200, 50))  # a car inside for 5 frames
        frames.append(rows)
    events = run(rules, frames)
    kinds = [(i, k, p.get("track_id")) for i, k, p in events if k.startswith("zone.")]
    enter = [i for i, k, t in kinds if k == "zone.enter" and t == 1]
    exits = [p for _, k, p in events if k == "zone.exit" and p["track_id"] == 1]
    assert enter == [6]  # the second frame inside confirms it...
    assert exits[0]["dwell_s"] == pytest.approx(2.0)  # ...timed from the first: 20 frames
    dwell = [(i, p["dwell_s"]) for i, k, p in events if k == "zone.dwell"]
    assert dwell == [(15, 1.0)]
    assert [p["label"] for _, k, p in events if k == "zone.intrusion"] == ["car"]
    occupancy = [(i, p["counts"]) for i, k, p in events if k == "zone.occupancy"]
    assert occupancy[:3] == [
        (6, {"person": 1}),
        (11, {"car": 1, "person": 1}),
        (26, {"car": 1}),  # the car's track has not ended (no track.end): still inside
    ]
    (counts,) = [p for _, k, p in events if k == "counts"]
    assert counts["zones"]["yard"]["entered"] == {"car": 1, "person": 1}


def test_a_track_that_ends_inside_leaves_the_zone():
    rules = Rules(zones=[Zone("z", ((0, 0), (1, 0), (1, 1), (0, 1)))], min_frames=1)
    events = run(rules, [[(1, 0, 100, 100)]] * 5)
    (exit_,) = [p for _, k, p in events if k == "zone.exit"]
    assert exit_["dwell_s"] == pytest.approx(0.4)


def test_zone_enter_says_how_long_ago_it_entered_and_a_dropped_track_exits_when_last_seen():
    zone = Zone("yard", ((100, 0), (300, 0), (300, 200), (100, 200)))
    # walks in at frame 5, is hidden from frame 12 on; the tracker drops it at frame 22
    frames = [[(1, 0, 50 + 10 * i, 100)] if i < 12 else [] for i in range(30)]
    events = run(Rules(zones=[zone], min_frames=3), frames, ends={22: [1]})
    enters = [(i, p["since_s"]) for i, k, p in events if k == "zone.enter"]
    assert enters == [(7, pytest.approx(0.2))]  # confirmed 2 frames after it entered
    exits = [(i, p["dwell_s"]) for i, k, p in events if k == "zone.exit"]
    # frames 5..11 inside, not up to frame 22; it leaves when no track has joined it within
    # join_s (1.5 s) of when it was last seen (frame 11)
    assert exits == [(27, pytest.approx(0.7))]
    occupancy = [(i, p["counts"]) for i, k, p in events if k == "zone.occupancy"]
    assert occupancy == [(7, {"person": 1}), (27, {})]


def test_a_jittering_box_does_not_move_the_times_of_a_stay():
    """An object walking right 10 px a frame is inside the zone (x 100..300) from frame 5
    to frame 24; its box jitters 12 px back at frame 5 (still outside) and 12 px ahead at
    frame 24 (already outside). The first frames of the runs inside and outside said 6
    and 24 (dwell 1.8 s); a line fitted to the track's last points says 5 and 25."""
    zone = Zone("yard", ((100, 0), (300, 0), (300, 200), (100, 200)))
    jitter = {5: -12, 24: 12}
    frames = [[(1, 0, 55 + 10 * index + jitter.get(index, 0), 100)] for index in range(35)]
    events = run(Rules(zones=[zone]), frames)
    stays = [
        (i, k, p.get("since_s", p.get("dwell_s")))
        for i, k, p in events
        if k[5:] in ("enter", "exit")
    ]
    assert stays == [(8, "zone.enter", pytest.approx(0.3)), (26, "zone.exit", pytest.approx(2.0))]


def test_feet_at_or_below_the_frames_border_are_in_a_zone_drawn_to_it():
    """A person near the camera: the frame cuts the box at its bottom edge (y 200, or a few
    pixels below, as a detector's box may reach). A zone drawn to that edge holds the feet;
    before, a point on a zone's bottom edge was outside it, and so were these feet."""
    floor = Zone("floor", ((0, 100), (400, 100), (400, 200), (0, 200)))
    frames = [[(1, 0, 200, 180)]] * 10 + [[(1, 0, 200, 184)]] * 10  # bottom 200, then 204
    events = run(Rules(zones=[floor], anchor="bottom"), frames)
    stays = [(i, k) for i, k, _ in events if k in ("zone.enter", "zone.exit")]
    assert stays == [(2, "zone.enter"), (None, "zone.exit")]  # in until the run ends
    (counts,) = [p for _, k, p in events if k == "counts"]
    assert counts["zones"]["floor"]["entered"] == {"person": 1}


def _broken_stay(
    second_start: float, *, gap: int = 4, label: int = 0, join_s: float = 1.5, end_at: int = 35
):
    """Track 1 walks right into the zone (x 100..300) from x=60, 10 px a frame, until x=160
    (frame 10); hidden for ``gap`` frames; track 3 (class ``label``) appears at
    ``second_start`` and walks on right, out of the zone. The tracker drops track 1 at
    frame ``end_at`` (a lost track is kept a while)."""
    frames = []
    for index in range(40):
        if index <= 10:
            frames.append([(1, 0, 60 + 10 * index, 100)])
        elif index > 10 + gap:
            frames.append([(3, label, second_start + 10 * (index - 11 - gap), 100)])
        else:
            frames.append([])
    rules = Rules(zones=[Zone("yard", ((100, 0), (300, 0), (300, 200), (100, 200)))], join_s=join_s)
    return run(rules, frames, ends={end_at: [1]})


def test_a_track_broken_inside_a_zone_joins_its_other_half():
    # track 1's motion puts it at 160 + 10 * 5 = 210 when track 3 appears
    events = _broken_stay(210)
    zone_events = [
        (i, k, p.get("track_id")) for i, k, p in events if k in ("zone.enter", "zone.exit")
    ]
    assert zone_events == [(6, "zone.enter", 1), (26, "zone.exit", 3)]
    (exit_,) = [p for _, k, p in events if k == "zone.exit"]
    assert exit_["dwell_s"] == pytest.approx(2.0)  # frames 4..23: one stay, hidden included
    occupancy = [p["counts"] for _, k, p in events if k == "zone.occupancy"]
    assert occupancy == [{"person": 1}, {}]
    (counts,) = [p for _, k, p in events if k == "counts"]
    assert counts["zones"]["yard"]["entered"] == {"person": 1}


def test_a_track_dropped_inside_a_zone_is_joined_within_join_s_of_when_it_was_last_seen():
    """The tracker drops track 1 (last seen at frame 10) at frame 13, and track 3 appears at
    frame 18 where track 1's motion puts it (160 + 10 * 8 = 240): one stay. Before, the
    dropped track left at once (at frame 13) and track 3 had a stay of its own."""
    events = _broken_stay(240, gap=7, end_at=13)
    zone_events = [
        (i, k, p.get("track_id"), p.get("dwell_s"))
        for i, k, p in events
        if k in ("zone.enter", "zone.exit")
    ]
    assert zone_events == [(6, "zone.enter", 1, None), (26, "zone.exit", 3, pytest.approx(2.0))]
    # nobody joins it: it leaves join_s after it was last seen, timed to then (frames 4..10)
    events = _broken_stay(290, gap=7, end_at=13)
    exits = [(i, p["track_id"], p["dwell_s"]) for i, k, p in events if k == "zone.exit"]
    assert exits[0] == (26, 1, pytest.approx(0.7))


def _joined_then_found_again(case: str):
    """Track 1 walks into the zone (x 100..300) to x=160 (frame 10) and is hidden; track 3
    appears at x=210 at frame 15 walking right (joined to track 1's stay); track 1 is found
    again at frame 20: standing at x=170 while track 3 walks on (``"other"``: two objects),
    or where track 3 was, walking on instead of it (``"same"``)."""
    frames = []
    for index in range(40):
        rows = [(1, 0, 60 + 10 * index, 100)] if index <= 10 else []
        if case == "other":
            if index >= 15:
                rows.append((3, 0, 210 + 10 * (index - 15), 100))  # past x=300 at frame 24
            if 20 <= index <= 35:
                rows.append((1, 0, 170, 100))
        else:
            if 15 <= index < 20:
                rows.append((3, 0, 210 + 10 * (index - 15), 100))
            if index >= 20:
                rows.append((1, 0, 260 + 10 * (index - 20), 100))  # past x=300 at frame 24
        frames.append(rows)
    ends = {36: [1], 38: [3]} if case == "other" else {30: [3], 38: [1]}
    rules = Rules(zones=[Zone("yard", ((100, 0), (300, 0), (300, 200), (100, 200)))])
    events = run(rules, frames, ends=ends)
    stays = [
        (i, k, p["track_id"], p.get("dwell_s", p.get("since_s")))
        for i, k, p in events
        if k in ("zone.enter", "zone.exit")
    ]
    (counts,) = [p["zones"]["yard"] for _, k, p in events if k == "counts"]
    return stays, counts


def test_a_joined_track_found_again_takes_its_stay_back():
    """Before, a track whose stay a later track had carried on was ignored for good: the
    person it followed never left the zone, and the later track left with its stay."""
    stays, counts = _joined_then_found_again("other")
    assert stays == [
        (6, "zone.enter", 1, pytest.approx(0.2)),
        (20, "zone.enter", 3, pytest.approx(0.5)),  # its own stay, since it was born
        (26, "zone.exit", 3, pytest.approx(0.9)),  # frames 15..23
        (None, "zone.exit", 1, pytest.approx(3.2)),  # frames 4..35, when the stream ends
    ]
    assert counts["entered"] == {"person": 2} and counts["occupancy"] == {}
    stays, counts = _joined_then_found_again("same")
    assert stays == [
        (6, "zone.enter", 1, pytest.approx(0.2)),
        (26, "zone.exit", 1, pytest.approx(2.0)),  # frames 4..23: one stay, handed back
    ]
    assert counts["entered"] == {"person": 1}


@pytest.mark.parametrize(
    ("why", "second_start", "options"),
    [
        ("far from where its motion puts it", 260, {}),
        ("another label", 210, {"label": 1}),
        ("hidden longer than join_s", 250, {"gap": 11, "join_s": 1.0}),  # joins at 1.5
        ("join_s 0", 210, {"join_s": 0}),
    ],
)
def test_a_track_born_inside_a_zone_is_not_joined_when(why, second_start, options):
    events = _broken_stay(second_start, **options)
    enters = [p["track_id"] for _, k, p in events if k == "zone.enter"]
    assert enters == [1, 3], why


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Zone("z", ((0, 0), (1, 1))), "zone 'z' needs at least 3 points, got 2"),
        (lambda: Zone("z", ((0, 0), (1, 1), (2, 2))), "zone 'z' has no area"),
        (lambda: Line("l", (5, 5), (5, 5)), "line 'l' has zero length"),
        (lambda: Line.parse("1,2,3"), "must be X1,Y1,X2,Y2"),
        (lambda: Line("l", (0, 0), (500, 10)).resolve((400, 200)), "(500, 10) is outside"),
        (lambda: Rules(anchor="feet"), "anchor must be one of center, bottom"),
        (lambda: Rules([Line("a", (0, 0), (1, 1)), Line("a", (0, 1), (1, 0))]), "two lines"),
        (lambda: Rules(dwell_s=0), "dwell_s must be > 0"),
        (lambda: Rules(label_s=0), "label_s must be > 0 seconds"),
        (lambda: Rules(join_s=-1), "join_s must be >= 0 seconds"),
    ],
)
def test_bad_shapes_and_options_are_named(make, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()


def test_fractions_become_pixels_of_the_frame():
    line = Line("mid", (0.5, 0.0), (0.5, 1.0)).resolve((640, 480))
    assert (line.a, line.b) == ((320.0, 0.0), (320.0, 480.0))


def test_stationary_objects_are_reported_once():
    rules = Rules(stationary_s=1.0)
    events = run(rules, [[(1, 1, 100 + (i % 2), 100)] for i in range(25)])
    stationary = [(i, p["track_id"]) for i, k, p in events if k == "object.stationary"]
    assert stationary == [(10, 1)]


def _broken_crossing(
    second_start: float, *, gap: int = 4, label: int = 0, first_moves=10, first_x=100
):
    """Track 1 walks right from ``first_x`` by ``first_moves`` px a frame (to x=180), is hidden for
    ``gap`` frames (by track 2, walking left across the line), and track 3 appears at
    ``second_start`` on the other side and walks on right (``label``: track 3's class)."""
    frames = []
    for index in range(30):
        rows = [(2, 0, 330 - 10 * index, 100)]  # the one in front: crosses right to left
        x1 = first_x + first_moves * index
        if index <= 8:
            rows.append((1, 0, x1, 100))
        elif index > 8 + gap:
            rows.append((3, label, second_start + 10 * (index - 9 - gap), 100))
        frames.append(rows)
    return frames


def test_a_track_broken_on_the_line_joins_its_other_half_and_counts_once():
    """The far object of two passing on the line is hidden for a moment and found again as
    a new track on the other side: joined (the crossing counts once, as ``out``); with
    ``join_s=0`` it is lost, as before."""
    line = Line("door", (200, 0), (200, 200))
    # where track 1's motion puts it when track 3 appears: 180 + 10 * 5 = 230
    events = run(Rules([line], min_frames=3), _broken_crossing(230))
    crossings = sorted((p["track_id"], p["direction"]) for _, k, p in events if k == "line.cross")
    assert crossings == [(2, "in"), (3, "out")]
    (counts,) = [p for _, k, p in events if k == "counts"]
    assert counts["lines"]["door"] == {"person": {"in": 1, "out": 1}}
    events = run(Rules([line], min_frames=3, join_s=0), _broken_crossing(230))
    assert [p["track_id"] for _, k, p in events if k == "line.cross"] == [2]


def test_a_half_hidden_objects_new_track_is_joined_by_the_size_its_old_track_had():
    """The far object of a pair, 60 px wide in the open, is half hidden as it nears the
    line: its old track's boxes shrink to the visible 20 px and lag behind it, and the new
    track on the other side starts from its other visible 20 px. Where the old track's
    motion puts it is more than the new box's size (40 px) from the new track, but within
    the 60 px the old track's boxes had: joined (before, no crossing)."""
    frames = _broken_crossing(275)
    for rows in frames[:6]:  # in the open: 60 px wide
        rows[:] = [(*row, 60, 40) if row[0] == 1 else row for row in rows]
    events = run(Rules([Line("door", (200, 0), (200, 200))], min_frames=3), frames)
    crossings = sorted((p["track_id"], p["direction"]) for _, k, p in events if k == "line.cross")
    assert crossings == [(2, "in"), (3, "out")]
    # the same without the larger boxes: too far for its size, not joined
    events = run(Rules([Line("door", (200, 0), (200, 200))], min_frames=3), _broken_crossing(275))
    assert [p["track_id"] for _, k, p in events if k == "line.cross"] == [2]


def test_a_track_shown_once_before_it_was_lost_is_joined_from_where_it_is_seen_again():
    """The tracker showed track 3 for one frame (a box over both objects of the pair, just
    past the line, while track 1 was still seen), lost it, and found it again on the other
    side after track 1 was hidden: its path starts again where it is seen next, so it is
    joined to track 1 (before, it had "appeared while track 1 was seen": no crossing)."""
    frames = _broken_crossing(230)
    frames[6].append((3, 0, 215, 100))  # between track 1 (160) and track 2 (270)
    line = Line("door", (200, 0), (200, 200))
    events = run(Rules([line], min_frames=3), frames)
    crossings = sorted((p["track_id"], p["direction"]) for _, k, p in events if k == "line.cross")
    assert crossings == [(2, "in"), (3, "out")]
    # seen again 0.2 s later (within REBORN_S), it keeps its first sighting: no join
    frames = _broken_crossing(230, gap=1)
    frames[8].append((3, 0, 215, 100))  # unseen at frame 9 only, back at 10
    events = run(Rules([line], min_frames=3), frames)
    assert [p["track_id"] for _, k, p in events if k == "line.cross"] == [2]


def test_a_track_ended_by_the_tracker_is_joined_up_to_join_s_after_it_was_last_seen():
    """Track 1 is last seen at frame 8 and dropped by the tracker at frame 18; track 3
    first shows 1.5 s (``join_s``) after frame 8, where track 1's motion puts it, and is
    confirmed on its side two frames later: joined (before, the ended track was forgotten
    ``join_s`` after it was last seen, before the new one could be confirmed)."""
    frames = _broken_crossing(330, gap=14)
    events = run(Rules([Line("door", (200, 0), (200, 200))], min_frames=3), frames, {18: [1]})
    crossings = sorted((p["track_id"], p["direction"]) for _, k, p in events if k == "line.cross")
    assert crossings == [(2, "in"), (3, "out")]


def test_a_joined_track_that_comes_back_under_its_old_id_does_not_count_again():
    frames = _broken_crossing(230)
    # the tracker finds the old track again (id 1 instead of 3) more than merge_s (1 s)
    # after the joined crossing
    for rows in frames[27:]:
        rows[:] = [(1 if t == 3 else t, c, x, y) for t, c, x, y in rows]
    events = run(Rules([Line("door", (200, 0), (200, 200))], min_frames=3), frames)
    crossings = sorted((p["track_id"], p["direction"]) for _, k, p in events if k == "line.cross")
    assert crossings == [(2, "in"), (3, "out")]


@pytest.mark.parametrize(
    ("why", "frames"),
    [
        ("far from where its motion puts it", _broken_crossing(330)),
        ("another label", _broken_crossing(230, label=1)),
        ("too long hidden", _broken_crossing(350, gap=16)),
        # standing 10 px from the line, 25 px from where track 3 appears (its box is 40 px)
        ("it was not moving towards the line", _broken_crossing(215, first_moves=0, first_x=190)),
    ],
)
def test_a_new_track_on_the_other_side_is_not_joined_when(why, frames):
    events = run(Rules([Line("door", (200, 0), (200, 200))], min_frames=3), frames)
    assert [p["track_id"] for _, k, p in events if k == "line.cross"] == [2], why


def test_a_crossing_right_after_a_neighbours_is_counted_and_a_broken_tracks_is_not():
    """Two people walking side by side cross the line 0.3 s apart, 20 px apart along it;
    the first is missing from the tracker's output the frame the second crosses (as a
    partly hidden person is): two crossings. Before, any crossing within ``merge_s`` of
    another near the same place by a track not seen that frame was dropped as a repeat."""
    frames = []
    for index in range(30):
        rows = [(2, 0, 150 + 5 * index, 120)]  # past x=200 from frame 11: counted at 13
        if index != 13:
            rows.append((1, 0, 165 + 5 * index, 100))  # past it from frame 8: counted at 10
        frames.append(rows)
    events = run(Rules([Line("door", (200, 0), (200, 200))], min_frames=3), frames)
    crossings = sorted((p["track_id"], p["direction"]) for _, k, p in events if k == "line.cross")
    assert crossings == [(1, "out"), (2, "out")]
    # a track that broke in two on the line: the first half crossed (counted at frame 9) and
    # was lost, the second appears back on the first side (its box jumped back) and crosses
    # again (counted at frame 17, 0.8 s later)
    frames = [[(1, 0, 170 + 5 * index, 100)] for index in range(12)]  # gone after x=225
    frames += [[(3, 0, 175 + 10 * index, 100)] for index in range(12)]  # born at x=175
    events = run(Rules([Line("door", (200, 0), (200, 200))], min_frames=3, join_s=0), frames)
    assert [p["track_id"] for _, k, p in events if k == "line.cross"] == [1]


def test_the_label_counted_is_the_majority_of_the_last_seconds():
    """A track that sat 5 s on a false 'car' before a person walked through it and took it
    over is counted as a person (its last 2 s); ``label_s=None`` is its whole life."""
    frames = [[(1, 1, 150, 100)] for _ in range(50)]  # a false car, 5 s
    # then a person walks on from there at 4 px a frame: on the line's other side 1.5 s later
    frames += [[(1, 0, 150 + 4 * step, 100)] for step in range(1, 30)]
    for label_s, expected in ((2.0, "person"), (None, "car")):
        events = run(Rules([Line("gate", (200, 0), (200, 200))], label_s=label_s), frames)
        assert [p["label"] for _, k, p in events if k == "line.cross"] == [expected]


def _faint_run(
    faint_xs, *, faint_dy=0.0, faint_size=(20, 40), first_x=220, rules=None, steps=10, wide=400
):
    """An object found only faintly (the tracker takes none of its boxes) at ``faint_xs``
    (``None``: not found that frame), then tracked as track 7 from ``first_x`` on, 10 px a
    frame to the right; the Track stage's ``tracker_input`` / ``tracked_rows`` say which
    boxes it took."""
    xs = [("faint", x) for x in faint_xs] + [("track", first_x + 10 * s) for s in range(steps)]
    return _steps_run(xs, faint_dy=faint_dy, faint_size=faint_size, rules=rules, wide=wide)


def _steps_run(xs, *, faint_dy=0.0, faint_size=(20, 40), rules=None, wide=400, end_at=None):
    """Per frame, ``("track", x)``: track 7's box at ``x``, or ``("faint", x)``: an
    untracked box there (``None``: none); the tracker ends track 7 at frame ``end_at``."""
    rules = rules or Rules([Line("door", (200, 0), (200, 200))], min_frames=3)
    events = []
    for index, (kind, x) in enumerate(xs):
        frame = Frame(np.zeros((200, wide, 3), np.uint8), index, int(index * 1e9 / FPS))
        if kind == "faint":
            width, height = faint_size
            boxes = [] if x is None else [box(x, 100 + faint_dy, width, height)]
            given = Detections(
                np.array(boxes, np.float32).reshape(-1, 4),
                np.full(len(boxes), 0.3, np.float32),
                np.zeros(len(boxes), np.int64),
                labels=LABELS,
            )
            shown, rows = Detections(given.xyxy[:0], [], [], tracker_id=[], labels=LABELS), []
        else:
            given = Detections(np.array([box(x, 100)], np.float32), [0.9], [0], labels=LABELS)
            shown = Detections(given.xyxy, [0.9], [0], tracker_id=[7], labels=LABELS)
            rows = [0]
        result = FrameResult(frame, shown)
        result.data["tracker_input"] = given
        result.data["tracked_rows"] = np.array(rows, np.int64)
        if index == end_at:
            result.add_event("track.end", track_id=7)
        events += [(index, e.kind, dict(e.payload)) for e in rules(result).events]
    return events


def _faint_then_tracked(faint_xs, **kwargs):
    events = _faint_run(faint_xs, **kwargs)
    return [(i, p["track_id"], p["direction"]) for i, k, p in events if k == "line.cross"]


def test_a_track_that_starts_past_the_line_counts_when_its_faint_boxes_came_across():
    """An object too faint to start a track until it is past the line (a thin object the
    detector scores 0.2-0.5): its untracked boxes lead back from the track's first box to
    the other side, so the crossing counts, once, as the direction it went."""
    assert _faint_then_tracked(range(130, 220, 10)) == [(11, 7, "out")]
    # with gaps of up to two frames (the faint object is not found in every frame)
    assert _faint_then_tracked([130, 140, 150, 160, 190, 210]) == [(8, 7, "out")]
    # and through the same gap when its boxes before were coming towards the line
    assert _faint_then_tracked([105, 115, 125, 135, 145, 155, 165, 175, None, None, 205, 212]) == [
        (14, 7, "out")
    ]


@pytest.mark.parametrize(
    ("why", "kwargs"),
    [
        ("no faint boxes before it: it just appeared", dict(faint_xs=[])),
        ("the faint boxes stay on its side", dict(faint_xs=range(205, 215, 3))),
        ("the faint boxes are elsewhere", dict(faint_xs=range(130, 220, 10), faint_dy=60)),
        (
            "the faint boxes are another size",
            dict(faint_xs=range(130, 220, 10), faint_size=(80, 160)),
        ),
        ("a gap of three frames", dict(faint_xs=[130, 140, 150, 160])),
        (
            # a patch of background the detector boxes, then the object's own boxes close
            # enough to it after a gap to be followed back to it: nothing came across
            "the boxes on the other side stand still",
            dict(faint_xs=[175] * 8 + [None, None, 205, 212]),
        ),
        (
            "join_s 0",
            dict(
                faint_xs=range(130, 220, 10),
                rules=Rules([Line("door", (200, 0), (200, 200))], min_frames=3, join_s=0),
            ),
        ),
    ],
)
def test_a_track_that_starts_past_the_line_does_not_count_when(why, kwargs):
    assert _faint_then_tracked(**kwargs) == [], why


def _tracked_then_faint(track_xs, faint_xs, *, faint_dy=0.0, rules=None):
    """Track 7 shown at ``track_xs``, then dropped by the tracker: its object is found only
    faintly (the tracker takes none of its boxes) at ``faint_xs`` (``None``: not found that
    frame), and the tracker ends track 7 in the last frame. The crossings, as
    ``(frame, track_id, direction)``."""
    xs = [("track", x) for x in track_xs] + [("faint", x) for x in faint_xs]
    events = _steps_run(xs, faint_dy=faint_dy, rules=rules, end_at=len(xs) - 1)
    return [(i, p["track_id"], p["direction"]) for i, k, p in events if k == "line.cross"]


def test_a_track_lost_before_the_line_counts_when_its_faint_boxes_went_across():
    """A thin object tracked up to the line, then scored too low to keep its track: its
    untracked boxes lead on from the track's last box to the other side, so the crossing
    counts when the tracker drops the track, once, as the direction it went."""
    walk = list(range(130, 190, 10))  # 130..180: on the left of x=200, heading right
    assert _tracked_then_faint(walk, range(190, 260, 10)) == [(12, 7, "out")]
    # with a gap of two frames, and ended long after its last faint box
    faint = [190, None, None, 220, 230, 240, None, None, None, None]
    assert _tracked_then_faint(walk, faint) == [(15, 7, "out")]


@pytest.mark.parametrize(
    ("why", "track_xs", "faint_xs", "kwargs"),
    [
        ("the faint boxes stay on its side", range(130, 190, 10), [185, 188, 190, 192], {}),
        ("two faint boxes past the line", range(130, 190, 10), [190, 205, 215], {}),
        ("the faint boxes are elsewhere", range(130, 190, 10), range(190, 260, 10), {"dy": 60}),
        # it crossed right to left (counted "in"), then boxes of something coming back
        ("it was moving away from the line", range(260, 140, -10), range(160, 250, 15), {}),
        ("join_s 0", range(130, 190, 10), range(190, 260, 10), {"join_s": 0}),
    ],
)
def test_a_track_lost_before_the_line_does_not_count_when(why, track_xs, faint_xs, kwargs):
    rules = Rules(
        [Line("door", (200, 0), (200, 200))], min_frames=3, join_s=kwargs.get("join_s", 1.5)
    )
    crossings = _tracked_then_faint(track_xs, faint_xs, faint_dy=kwargs.get("dy", 0.0), rules=rules)
    assert [c for c in crossings if c[2] == "out"] == [], why


def test_the_track_stage_hands_the_rules_the_boxes_it_did_not_take():
    """End to end with the tracker: boxes scoring 0.3 start no track (thresholds as written),
    the track starts at 0.9 past the line, and the crossing counts."""
    from ubiq.pipelines.track.stage import Track

    track, rules = Track(score_scale=1.0), Rules([Line("door", (200, 0), (200, 200))])
    crossings = []
    for index in range(20):
        x = 110 + 10 * index  # the line at frame 9; confident from frame 12 (x 230)
        score = 0.3 if x < 230 else 0.9
        frame = Frame(np.zeros((200, 400, 3), np.uint8), index, int(index * 1e9 / FPS))
        result = FrameResult(
            frame, Detections(np.array([box(x, 100)], np.float32), [score], [0], labels=LABELS)
        )
        result = rules(track(result))
        crossings += [e.payload["direction"] for e in result.events if e.kind == "line.cross"]
    assert crossings == ["out"]


def test_boxes_inside_a_tracked_object_are_not_followed():
    """A partial or duplicate box of a tracked object (most of it inside that object's box)
    is part of it, not a faint object: a short track born on such a box past the line does
    not count the tracked object's crossing a second time."""
    rules = Rules([Line("door", (200, 0), (200, 200))], min_frames=3)
    crossings = []
    for index in range(16):
        x = 130 + 10 * index  # a big object, tracked throughout as track 1 (line at frame 7)
        big = box(x, 100, 60, 80)
        part = box(x + 10, 90, 24, 30)  # a box on its upper part
        frame = Frame(np.zeros((200, 400, 3), np.uint8), index, int(index * 1e9 / FPS))
        rows = [(1, big)] + ([(9, part)] if index >= 10 else [])  # the part tracked from 10
        shown = Detections(
            np.array([b for _, b in rows], np.float32),
            np.full(len(rows), 0.9),
            np.zeros(len(rows), np.int64),
            tracker_id=[t for t, _ in rows],
            labels=LABELS,
        )
        given = Detections(np.array([big, part], np.float32), [0.9, 0.3], [0, 0], labels=LABELS)
        result = FrameResult(frame, shown)
        result.data["tracker_input"] = given
        result.data["tracked_rows"] = np.array([0, 1] if index >= 10 else [0])
        crossings += [
            (e.payload["track_id"], e.payload["direction"])
            for e in rules(result).events
            if e.kind == "line.cross"
        ]
    assert crossings == [(1, "out")]


def test_a_track_born_inside_a_zone_is_dated_from_when_its_faint_boxes_came_in():
    """Found faintly from x 135 (frames 0-8, inside from x 205 at frame 7), tracked from
    x 225 at frame 9, out past x 400 at frame 27 (in a 600-px frame): the stay runs from
    frame 7, not 9."""
    hall = Zone("hall", [(200, 0), (400, 0), (400, 200), (200, 200)])
    for join_s, entered in ((1.5, 7), (0, 9)):
        rules = Rules(zones=[hall], min_frames=3, join_s=join_s)
        events = _faint_run(range(135, 225, 10), rules=rules, steps=25, wide=600)
        (enter,) = [(i, p) for i, k, p in events if k == "zone.enter"]
        (exit_,) = [(i, p) for i, k, p in events if k == "zone.exit"]
        assert enter[0] == 11 and enter[1]["since_s"] == pytest.approx((11 - entered) / FPS)
        assert exit_[1]["dwell_s"] == pytest.approx((27 - entered) / FPS), join_s
    # faint boxes that were inside all along: the stay starts with the track, as before
    rules = Rules(zones=[hall], min_frames=3)
    events = _faint_run(range(215, 225, 3), rules=rules, steps=25, wide=600)
    (exit_,) = [p for _, k, p in events if k == "zone.exit"]
    assert exit_["dwell_s"] == pytest.approx(1.8)


def _lost_inside(faint_xs, *, join_s=1.5):
    """Track 4 walks into the hall (x 200-400 of a 600-px frame) from x 150, 10 px a frame,
    and is lost after
    x 290 (frame 14); its object goes on, found only faintly, at ``faint_xs``; the tracker
    drops the track 10 frames (1 s) after it was last seen. Returns the exit's dwell_s."""
    hall = Zone("hall", [(200, 0), (400, 0), (400, 200), (200, 200)])
    rules = Rules(zones=[hall], min_frames=3, join_s=join_s)
    exits = []
    faint = list(faint_xs)
    for index in range(40):
        frame = Frame(np.zeros((200, 600, 3), np.uint8), index, int(index * 1e9 / FPS))
        x = 150 + 10 * index
        tracked = [box(x, 100)] if index <= 14 else []
        loose = [box(faint[index - 15], 100)] if 15 <= index < 15 + len(faint) else []
        shown = Detections(
            np.array(tracked, np.float32).reshape(-1, 4),
            np.full(len(tracked), 0.9),
            np.zeros(len(tracked), np.int64),
            tracker_id=[4] * len(tracked),
            labels=LABELS,
        )
        result = FrameResult(frame, shown)
        given = np.array(tracked + loose, np.float32).reshape(-1, 4)
        result.data["tracker_input"] = Detections(
            given, np.full(len(given), 0.5), np.zeros(len(given), np.int64), labels=LABELS
        )
        result.data["tracked_rows"] = np.arange(len(tracked))
        if index == 24:
            result.add_event("track.end", track_id=4)
        exits += [e.payload["dwell_s"] for e in rules(result).events if e.kind == "zone.exit"]
    return exits


def test_a_track_lost_inside_a_zone_leaves_when_its_faint_boxes_do():
    """Inside from x 200 (frame 5), lost after frame 14 (x 290), dropped at frame 24; its
    object goes on, found only faintly."""
    # out of the hall from frame 20 (x 405): a stay of 1.5 s, not 1.0 s (to the first
    # frame it was not tracked in)
    walking_out = [305 + 20 * step for step in range(10)]
    assert _lost_inside(walking_out) == [pytest.approx(1.5)]
    # join_s 0, no faint boxes, or faint boxes for a frame only: as before
    assert _lost_inside(walking_out, join_s=0) == [pytest.approx(1.0)]
    assert _lost_inside([]) == [pytest.approx(1.0)]
    assert _lost_inside([305]) == [pytest.approx(1.0)]
    # faint boxes that stop inside at frame 17: it was there until frame 18
    assert _lost_inside([305, 315, 325]) == [pytest.approx(1.3)]
    # still inside, faintly, when the tracker drops the track (frame 24): until then
    assert _lost_inside([305 + 5 * step for step in range(15)]) == [pytest.approx(1.9)]
