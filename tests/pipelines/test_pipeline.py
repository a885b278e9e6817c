"""The pipeline composition: frame results, stages, sinks, events, several sources."""

import json
import threading

import cv2
import numpy as np
import pytest

import ubiq
from ubiq.errors import ConfigError, UbiqError
from ubiq.pipelines.pipeline import Pipeline, run_sources
from ubiq.pipelines.sinks import CallbackSink, ImageSink, JsonlSink, MaskAnnotator, draw
from ubiq.pipelines.stage import Detect, Function, named_stages
from ubiq.types import Detections, Frame, FrameResult


class ListSource:
    """A finite in-memory source with the Source interface."""

    is_live = False
    fps = 10.0
    frame_size = (64, 48)
    dropped_frames = 0
    reconnects = 0

    def __init__(self, count, source_id="list", paths=None):
        self.count = count
        self.source_id = source_id
        self.paths = paths
        self.stopped = threading.Event()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def stop(self):
        self.stopped.set()

    def __iter__(self):
        for index in range(self.count):
            if self.stopped.is_set():
                return
            image = np.full((48, 64, 3), index % 255, np.uint8)
            path = None if self.paths is None else self.paths[index]
            yield Frame(image, index, int(index * 1e8), self.source_id, path)


def box_at(frame):
    x = float(frame.index)
    return Detections(xyxy=[[x, 1, x + 10, 11]], confidence=[0.5], class_id=[1], labels=("a", "b"))


class EveryThird:
    """A rule stage: an event on every third frame that has a detection."""

    name = "rule"

    def __call__(self, result):
        if result.index % 3 == 0 and len(result.detections):
            result.add_event("test.third", count=len(result.detections))
        return result


def test_stages_grow_one_result_and_the_summary_counts_what_they_made(tmp_path):
    pipeline = Pipeline([Function(box_at), EveryThird()], [JsonlSink(tmp_path / "out.jsonl")])
    results = list(pipeline.stream(ListSource(10)))
    assert [r.index for r in results] == list(range(10))
    assert all(len(r.detections) == 1 for r in results)
    assert [r.index for r in results if r.events] == [0, 3, 6, 9]
    summary = pipeline.runner.summary
    assert summary.frames == 10 and summary.detections == 10
    assert dict(summary.labels) == {"b": 10}
    assert dict(summary.events) == {"test.third": 4}
    stages = summary.to_dict()["stages"]
    assert set(stages) == {"box_at", "rule", "sinks"}
    assert all(v["p90_ms"] >= v["p50_ms"] >= 0 for v in stages.values())
    assert "events test.third 4" in summary.line()
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(lines) == 14  # 10 frames + 4 events, each event right after its frame
    assert [line.get("kind") for line in lines[:3]] == [None, "test.third", None]
    event = lines[1]
    assert event["kind"] == "test.third" and event["frame"] == 0 and event["ts"] == 0.0
    assert event["count"] == 1 and len(event["id"]) == 16


def test_events_and_callbacks():
    seen_events, seen_results = [], []
    pipeline = Pipeline(
        [Function(box_at), EveryThird()],
        on_event=seen_events.append,
        on_result=lambda result: seen_results.append(result.index),
    )
    kinds = [event.kind for event in pipeline.events(ListSource(7))]
    assert kinds == ["test.third"] * 3
    assert [e.payload["count"] for e in seen_events] == [1, 1, 1]
    assert seen_results == list(range(7))


def test_a_stage_must_return_the_result():
    pipeline = Pipeline([lambda result: None])
    with pytest.raises(UbiqError, match="stage '<lambda>' returned NoneType"):
        pipeline.run(ListSource(2))


def test_stage_names_are_unique_and_bad_stages_are_refused():
    names = [name for name, _ in named_stages([Function(box_at), Function(box_at), EveryThird()])]
    assert names == ["box_at", "box_at-2", "rule"]
    with pytest.raises(ConfigError, match=r"stages\[1\] must be callable"):
        Pipeline([Function(box_at), 42])
    with pytest.raises(ConfigError, match=r"sinks\[0\] must have write"):
        Pipeline([Function(box_at)], [object()])
    with pytest.raises(ConfigError, match="max_frames must be an integer >= 1, got 0"):
        Pipeline([Function(box_at)]).run(ListSource(1), max_frames=0)


def test_image_mode_runs_the_stages_on_one_image():
    pipeline = Pipeline([Function(box_at), EveryThird()])
    result = pipeline.process(np.zeros((48, 64, 3), np.uint8), index=3)
    assert isinstance(result, FrameResult) and result.index == 3
    assert result.detections.xyxy.tolist() == [[3.0, 1.0, 13.0, 11.0]]
    assert [event.kind for event in result.events] == ["test.third"]


def test_stop_from_a_callback_ends_the_run():
    pipeline = Pipeline([Function(box_at)])
    pipeline.on_result = lambda result: pipeline.stop() if result.index == 4 else None
    summary = pipeline.run(ListSource(100))
    assert summary.frames == 5 and summary.stopped_by == "stop"


def test_breaking_out_of_stream_closes_the_sinks(tmp_path):
    closed = []

    class Sink:
        def write(self, result):
            pass

        def close(self):
            closed.append(True)

    pipeline = Pipeline([Function(box_at)], [Sink()])
    stream = pipeline.stream(ListSource(100))
    for result in stream:
        if result.index == 2:
            break
    stream.close()
    assert closed == [True] and pipeline.runner.summary.frames == 3


def test_image_sink_keeps_file_names_and_never_overwrites_a_source(tmp_path):
    out = tmp_path / "annotated"
    paths = [str(tmp_path / "in" / name) for name in ("a.png", "b.jpg", "a.png")]
    sink = ImageSink(out)
    Pipeline([Function(box_at)], [sink]).run(ListSource(3, paths=paths))
    assert sorted(p.name for p in out.iterdir()) == ["a-2.png", "a.png", "b.jpg"]
    image = cv2.imread(str(out / "b.jpg"))
    assert image.shape == (48, 64, 3) and image[1:12, 1:12].max() > 100  # the box is drawn
    source = tmp_path / "src"
    source.mkdir()
    cv2.imwrite(str(source / "x.png"), np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(UbiqError, match="refusing to overwrite the source image"):
        Pipeline([Function(box_at)], [ImageSink(source)]).run(
            ListSource(1, paths=[str(source / "x.png")])
        )
    assert not cv2.imread(str(source / "x.png")).any()


def test_jsonl_names_the_file_of_each_image(tmp_path):
    paths = [f"shots/{n}.jpg" for n in ("one", "two")]
    Pipeline([Function(box_at)], [JsonlSink(tmp_path / "o.jsonl")]).run(ListSource(2, paths=paths))
    lines = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [line["file"] for line in lines] == paths
    assert list(lines[0]) == ["frame", "ts", "file", "detections"]


def test_mask_annotator_tints_the_class_map_only_where_it_is_set():
    image = np.zeros((20, 20, 3), np.uint8)
    class_map = np.zeros((20, 20), np.int64)
    class_map[5:10, 5:10] = 2
    result = FrameResult(Frame(image, 0, 0), class_map=class_map)
    drawn = draw(result, [MaskAnnotator(opacity=0.5)])
    assert drawn[7, 7].any() and not drawn[15, 15].any() and not image.any()


def test_several_sources_share_one_model(blazeface_path, tmp_path):
    """Two sources side by side on one LiteRT model: each gets what it gets alone."""
    from ubiq.hardware.sources import open_source

    model = ubiq.load_model(blazeface_path)
    alone = [
        [r.detections.xyxy.round(2).tolist() for r in Pipeline([Detect(model)]).stream(source)]
        for source in (open_source("demo"), open_source("demo", vid_stride=2))
    ]
    collected = {}

    def build(source):
        return Pipeline(
            [Detect(model)],
            [CallbackSink(lambda r: collected.setdefault(r.source_id, []).append(r))],
        )

    sources = [open_source("demo"), open_source("demo", vid_stride=2)]
    sources[1].source_id = "second"
    summaries = run_sources(sources, build)
    assert [s.frames for s in summaries] == [len(alone[0]), len(alone[1])]
    assert [s.source_id for s in summaries] == ["demo", "second"]
    together = [
        [r.detections.xyxy.round(2).tolist() for r in collected[key]] for key in ("demo", "second")
    ]
    assert together == alone
    assert summaries[0].detections > 100


def test_load_model_opens_each_task_by_its_manifest(blazeface_path, ubiq_home):
    from ubiq.models.runtime.segment import Segmenter
    from ubiq.models.zoo import pull

    assert type(ubiq.load_model(blazeface_path)).__name__ == "DetectionModel"
    segmenter = ubiq.load_model(pull("selfie-seg", progress=False))
    assert isinstance(segmenter, Segmenter)
    with pytest.raises(ConfigError, match="task must be one of"):
        ubiq.load_model(blazeface_path, task="track")
