"""The tracker, its stage, MOTChallenge files and the sequence generator."""

from __future__ import annotations

import numpy as np
import pytest

from ubiq.errors import ConfigError
from ubiq.pipelines.track import kalman, synthetic
from ubiq.pipelines.track.mot import read_detections
from ubiq.pipelines.track.motion import CameraMotion
from ubiq.pipelines.track.stage import Track
from ubiq.pipelines.track.tracker import Tracker, TrackerConfig
from ubiq.types import Detections, Frame, FrameResult


def box(cx: float, cy: float, w: float = 40.0, h: float = 100.0) -> list[float]:
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def ids_by_row(update, count: int) -> list[int]:
    ids = [-1] * count
    for det, track_id in zip(update.det_index, update.track_id, strict=True):
        ids[int(det)] = int(track_id)
    return ids


def test_kalman_follows_constant_velocity_in_seconds():
    mean, cov = kalman.initiate(np.array([[100.0, 50.0, 40.0, 100.0]]))
    for step in range(1, 30):
        kalman.predict(mean, cov, 0.1)
        kalman.update(mean, cov, np.array([[100.0 + 20.0 * step, 50.0, 40.0, 100.0]]))
    # 20 px per 0.1 s is 200 px/s; one second ahead is 200 px further.
    assert mean[0, 0, 1] == pytest.approx(200.0, rel=0.05)
    kalman.predict(mean, cov, 1.0)
    assert mean[0, 0, 0] == pytest.approx(100 + 20 * 29 + 200, abs=15)


def _written_out_predict(mean, cov, dt):
    """The filter's step as the module docstring writes it, one coordinate at a time."""
    mean, cov = mean.copy(), cov.copy()
    for track in range(len(mean)):
        width, height = max(mean[track, 2, 0], 1.0), max(mean[track, 3, 0], 1.0)
        for coordinate, size in enumerate((width, height, width, height)):
            p, c, v = cov[track, coordinate]
            steps = dt / kalman.NOMINAL_DT
            q_position = (kalman.POSITION_WEIGHT * size) ** 2 * steps
            q_velocity = (kalman.VELOCITY_WEIGHT / kalman.NOMINAL_DT * size) ** 2 * steps
            new_p = p + 2 * dt * c + dt * dt * v + q_position
            cov[track, coordinate] = [new_p, c + dt * v, v + q_velocity]
            mean[track, coordinate, 0] += dt * mean[track, coordinate, 1]
    return mean, cov


def _written_out_update(mean, cov, box):
    mean, cov = mean.copy(), cov.copy()
    for track in range(len(mean)):
        width, height = max(mean[track, 2, 0], 1.0), max(mean[track, 3, 0], 1.0)
        for coordinate, size in enumerate((width, height, width, height)):
            p, c, v = cov[track, coordinate]
            s = p + (kalman.POSITION_WEIGHT * size) ** 2
            innovation = box[track, coordinate] - mean[track, coordinate, 0]
            mean[track, coordinate] += [p / s * innovation, c / s * innovation]
            cov[track, coordinate] = [(1 - p / s) * p, (1 - p / s) * c, v - c / s * c]
    return mean, cov


def test_kalman_steps_match_the_written_out_filter():
    """The whole-array steps (a 3x3 transition of [p, c, v], gains as one array) are the
    2x2 Kalman filter per coordinate, for one time step for all and one per track."""
    rng = np.random.default_rng(3)
    boxes = np.column_stack([rng.uniform(0, 600, (5, 2)), rng.uniform(2, 200, (5, 2))])
    mean, cov = kalman.initiate(boxes)
    mean[:, :, 1] = rng.uniform(-300, 300, (5, 4))
    for dt in (1 / 30, 0.25, 0.0):
        want_mean, want_cov = _written_out_predict(mean, cov, dt)
        got_mean, got_cov = mean.copy(), cov.copy()
        kalman.predict(got_mean, got_cov, dt)
        np.testing.assert_allclose(got_mean, want_mean, rtol=1e-12)
        np.testing.assert_allclose(got_cov, want_cov, rtol=1e-12)
        each_mean, each_cov = mean.copy(), cov.copy()
        kalman.predict(each_mean, each_cov, np.full(5, dt))
        np.testing.assert_allclose(each_mean, want_mean, rtol=1e-12)
        np.testing.assert_allclose(each_cov, want_cov, rtol=1e-12)
        measured = boxes + rng.normal(0, 3, boxes.shape)
        want_mean, want_cov = _written_out_update(got_mean, got_cov, measured)
        kalman.update(got_mean, got_cov, measured)
        np.testing.assert_allclose(got_mean, want_mean, rtol=1e-12)
        np.testing.assert_allclose(got_cov, want_cov, rtol=1e-12)
        mean, cov = got_mean, got_cov


def test_kalman_box_size_stops_at_one_pixel():
    mean, cov = kalman.initiate(np.array([[50.0, 50.0, 3.0, 40.0]]))
    mean[0, 2, 1] = -100.0  # shrinking 100 px/s: through zero within 0.03 s
    kalman.predict(mean, cov, 0.1)
    assert mean[0, 2, 0] == 1.0 and mean[0, 2, 1] == 0.0
    assert mean[0, 3, 0] == 40.0


def test_score_percentile_is_numpys():
    from ubiq.pipelines.track.tracker import _percentile

    rng = np.random.default_rng(0)
    for size in (1, 2, 3, 10, 11, 47, 160):
        for _ in range(20):
            scores = rng.uniform(0.1, 0.6, size)
            assert _percentile(scores, 0.9) == float(np.percentile(scores, 90))
    assert _percentile(np.array([0.2, 0.2, 0.4]), 0.9) == float(np.percentile([0.2, 0.2, 0.4], 90))


def test_crossing_objects_of_different_depth_keep_their_ids():
    tracker = Tracker()
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    for frame in range(60):
        a = box(100 + 10 * frame, 200, 40, 100)
        b = box(700 - 10 * frame, 215, 60, 150)  # closer, so bigger and lower
        update = tracker.update(
            np.array([a, b]), np.array([0.9, 0.9]), None, timestamp_s=frame / 30
        )
        for row, track_id in enumerate(ids_by_row(update, 2)):
            if track_id > 0:
                seen[row].add(track_id)
    assert len(seen[0]) == 1 and len(seen[1]) == 1 and seen[0] != seen[1]


def test_low_score_boxes_keep_a_track_through_occlusion_but_sort_drops_them():
    def run(config: TrackerConfig) -> list[int]:
        tracker = Tracker(config)
        ids = []
        for frame in range(40):
            score = 0.2 if 15 <= frame < 25 else 0.9
            update = tracker.update(
                np.array([box(100 + 5 * frame, 100)]),
                np.array([score]),
                None,
                timestamp_s=frame / 30,
            )
            ids.append(ids_by_row(update, 1)[0])
        return ids

    bytetrack = run(TrackerConfig(score_scale=1.0))
    assert set(bytetrack) == {1}  # tracked in every frame, one id
    sort = run(TrackerConfig.preset("sort", score_scale=1.0))
    assert all(i == -1 for i in sort[15:25])  # the low-score frames are not tracked


@pytest.mark.parametrize("fps", [10.0, 60.0])
def test_the_lost_buffer_is_in_seconds_at_any_frame_rate(fps):
    def gap_run(gap_s: float) -> set[int]:
        tracker = Tracker(TrackerConfig(lost_buffer_s=1.0))
        ids = set()
        for frame in range(int(4 * fps)):
            t = frame / fps
            if 1.0 <= t < 1.0 + gap_s:
                xyxy, scores = np.zeros((0, 4)), np.zeros(0)
            else:
                xyxy, scores = np.array([box(300 + 30 * t, 200)]), np.array([0.9])
            update = tracker.update(xyxy, scores, None, timestamp_s=t)
            ids.update(int(i) for i in update.track_id)
        return ids

    assert gap_run(0.7) == {1}  # back within the buffer: the same track
    assert len(gap_run(1.6)) == 2  # gone longer: a new track


def test_a_weak_detector_still_starts_tracks_with_the_default_scaling():
    def run(config: TrackerConfig) -> int:
        tracker = Tracker(config)
        tracked = 0
        for frame in range(30):
            update = tracker.update(
                np.array([box(100 + 3 * frame, 100), box(400, 300 - 2 * frame)]),
                np.array([0.42, 0.38]),
                None,
                timestamp_s=frame / 30,
            )
            tracked += len(update.track_id)
        return tracked

    assert run(TrackerConfig()) == 60  # both objects, every frame
    assert run(TrackerConfig(score_scale=1.0)) == 0  # thresholds as written drop them all


def test_a_one_frame_false_positive_gets_no_id_and_classes_do_not_mix():
    tracker = Tracker()
    tracker.update(np.array([box(100, 100)]), np.array([0.9]), np.array([0]), timestamp_s=0.0)
    update = tracker.update(
        np.array([box(101, 100), box(500, 500)]),
        np.array([0.9, 0.9]),
        np.array([0, 0]),
        timestamp_s=1 / 30,
    )
    assert ids_by_row(update, 2) == [1, -1]  # the newcomer is tentative
    # The same place but another class is another object.
    update = tracker.update(
        np.array([box(102, 100)]), np.array([0.9]), np.array([3]), timestamp_s=2 / 30
    )
    assert ids_by_row(update, 1) == [-1]


def test_time_must_not_go_back():
    tracker = Tracker()
    tracker.update(np.zeros((0, 4)), np.zeros(0), None, timestamp_s=1.0)
    with pytest.raises(ValueError, match="timestamp_s must not go back"):
        tracker.update(np.zeros((0, 4)), np.zeros(0), None, timestamp_s=0.5)


def test_config_errors_name_the_setting():
    with pytest.raises(ValueError, match="tracker must be one of bytetrack, sort"):
        TrackerConfig.preset("deepsort")
    with pytest.raises(ValueError, match="unknown tracker setting 'lost_buffer'"):
        TrackerConfig.preset("bytetrack", lost_buffer=2)
    with pytest.raises(ConfigError, match="min_hits must be >= 1"):
        Track(min_hits=0)


def test_camera_motion_recovers_the_pan_of_a_rendered_sequence():
    sequence = synthetic.generate(
        synthetic.SequenceSpec("pan", seed=5, frames=40, people=6, pan=300.0)
    )
    motion = CameraMotion()
    errors = []
    for frame in range(1, 41):
        image = synthetic.render(sequence, frame)
        estimate = motion.estimate(image)
        if frame > 1:
            # The background is drawn at whole pixels of the half-size frame.
            offsets = np.round(sequence.shift[[frame - 2, frame - 1]] * 0.5)
            errors.append(abs(estimate[0, 2] + (offsets[1] - offsets[0])))
    assert max(errors) < 0.5, errors


def test_track_stage_sets_ids_trails_and_start_end_events():
    stage = Track()
    labels = ("person",)
    results = []
    for index in range(10):
        frame = Frame(np.zeros((240, 320, 3), np.uint8), index, int(index * 1e9 / 30))
        detections = Detections(
            np.array([box(50 + 5 * index, 100)], np.float32),
            np.array([0.9], np.float32),
            np.array([0]),
            labels=labels,
        )
        results.append(stage(FrameResult(frame, detections)))
    assert [r.detections.tracker_id.tolist() for r in results] == [[1]] * 10
    assert [e.kind for e in results[0].events] == ["track.start"]
    assert len(results[-1].data["trails"][1]) == 10
    (end,) = stage.finish()
    assert end.kind == "track.end"
    assert end.payload["label"] == "person" and end.payload["track_id"] == 1
    assert end.payload["duration_s"] == pytest.approx(9 / 30, abs=1e-3)
    assert end.payload["first_xyxy"] == [30.0, 50.0, 70.0, 150.0]


def test_generated_sequences_are_deterministic_and_well_formed(tmp_path):
    spec = synthetic.SequenceSpec("SYN-a", seed=3, frames=60, people=10, detector="weak")
    first, second = synthetic.generate(spec), synthetic.generate(spec)
    assert np.array_equal(first.det, second.det) and np.array_equal(first.gt, second.gt)
    folder = synthetic.write(first, tmp_path)
    frames = read_detections(folder / "det" / "det.txt")
    assert len(frames) == int(first.det[:, 0].max())
    gt = np.loadtxt(folder / "gt" / "gt.txt", delimiter=",")
    assert gt.shape[1] == 9 and (gt[:, 4:6] > 0).all() and set(gt[:, 7]) == {1}
    weak_scores = first.det[:, 6]
    assert weak_scores.max() < 0.56  # a weak detector never scores high


def test_tracking_quality_on_generated_sequences_holds_its_floor(tmp_path):
    pytest.importorskip("trackers")
    from ubiq.pipelines.track.evaluate import score, track_frames

    floors = {"strong": (70.0, 78.0), "weak": (52.0, 65.0)}  # HOTA, IDF1
    for detector, (hota_floor, idf1_floor) in floors.items():
        spec = synthetic.SequenceSpec(f"SYN-{detector}", seed=31, frames=300, detector=detector)
        folder = synthetic.write(synthetic.generate(spec), tmp_path)
        lines, _ = track_frames(read_detections(folder / "det" / "det.txt"))
        result_file = tmp_path / f"{spec.name}.txt"
        result_file.write_text("\n".join(lines) + "\n")
        result = score(folder, result_file)
        assert result.hota >= hota_floor and result.idf1 >= idf1_floor, result
