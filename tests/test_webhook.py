"""Webhooks out, against a real HTTP server on loopback: signed JSON POSTs of the JSONL
records, retries with backoff after 5xx and outages, in order, through the durable outbox."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time

import numpy as np
import pytest
from mqtt_support import Receiver, free_port
from support import run_ubiq, small_tmpfs

from ubiq.errors import ConfigError
from ubiq.pipelines.sinks.webhook import WebhookOptions, WebhookSink, sign
from ubiq.types import Frame, FrameResult

SECRET = b"webhook-Secret-42"


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def _result(index: int) -> FrameResult:
    result = FrameResult(Frame(np.zeros((8, 8, 3), np.uint8), index, index * 50_000_000, "cam"))
    result.add_event("x.tick", n=index)
    return result


def _options(url: str, **overrides) -> WebhookOptions:
    settings = {"secret": SECRET, "retry_initial_s": 0.05, "retry_max_s": 0.2}
    return WebhookOptions(url, **(settings | overrides))


def test_each_event_is_posted_signed_with_its_jsonl_record(receiver, tmp_path):
    from ubiq.pipelines.sinks import JsonlSink

    sink = WebhookSink(_options(receiver.url), outbox=tmp_path / "o.sqlite", relative_time=True)
    jsonl = JsonlSink(tmp_path / "e.jsonl", relative_time=True)
    for i in range(5):
        result = _result(i)
        sink.write(result)
        jsonl.write(result)
    jsonl.close()
    sink.close()
    records = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert receiver.delivered() == [r for r in records if "kind" in r]
    for path, headers, body, _status in receiver.requests:
        assert path == "/hook?token=t0ken"
        assert headers["Content-Type"] == "application/json"
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Ubiq-Signature"], expected)
        assert headers["X-Ubiq-Event-Id"] == json.loads(body)["id"]
        assert headers["X-Ubiq-Event"] == "x.tick"
    assert sign(b"other", receiver.requests[0][2]) != receiver.requests[0][1]["X-Ubiq-Signature"]
    assert len(sink.outbox) == 0 and sink.events_sent == 5


def test_5xx_answers_are_retried_with_backoff_and_order_is_kept(receiver, tmp_path, caplog):
    receiver.plan = [500, 503, 502, 200, 500, 429]
    with caplog.at_level(logging.WARNING, logger="ubiq.pipelines.sinks.webhook"):
        sink = WebhookSink(_options(receiver.url), outbox=tmp_path / "o.sqlite")
        for i in range(4):
            sink.write(_result(i))
        assert receiver.wait_for(4)
        sink.close()
    assert [r["n"] for r in receiver.delivered()] == [0, 1, 2, 3]
    statuses = [s for _p, _h, _b, s in receiver.requests]
    assert statuses == [500, 503, 502, 200, 500, 429, 200, 200, 200]
    # the same event is retried (same id) until it is taken
    first_ids = {json.loads(b)["id"] for _p, _h, b, _s in receiver.requests[:4]}
    assert len(first_ids) == 1
    gaps = np.diff(receiver.times[:4])
    assert gaps[1] > gaps[0] * 1.5  # exponential backoff: 0.05, 0.1, 0.2 s
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2 and "HTTP 500" in failures[0].getMessage()  # once per outage
    assert "t0ken" not in caplog.text  # the URL's query (a token) is never logged


def test_a_refused_body_is_dropped_and_the_queue_moves_on(receiver, tmp_path, caplog):
    receiver.plan = [422]
    with caplog.at_level(logging.ERROR, logger="ubiq.pipelines.sinks.webhook"):
        sink = WebhookSink(_options(receiver.url), outbox=tmp_path / "o.sqlite")
        for i in range(3):
            sink.write(_result(i))
        assert receiver.wait_for(2)
        sink.close()
    assert [r["n"] for r in receiver.delivered()] == [1, 2]
    assert sink.events_refused == 1 and "HTTP 422" in caplog.text


def test_events_wait_in_the_outbox_while_the_server_is_down_and_across_restarts(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    sink = WebhookSink(_options(url, flush_timeout_s=0.2), outbox=tmp_path / "o.sqlite")
    for i in range(6):
        sink.write(_result(i))
    time.sleep(0.5)
    sink.close()  # the server never answered: everything stays queued
    assert len(sink.outbox) == 6 and sink.events_sent == 0
    server = Receiver(port)
    try:
        sink = WebhookSink(_options(url), outbox=tmp_path / "o.sqlite")
        for i in range(6, 9):
            sink.write(_result(i))
        assert server.wait_for(9)
        sink.close()
        assert [r["n"] for r in server.delivered()] == list(range(9))
        assert len(sink.outbox) == 0
    finally:
        server.close()


def test_server_that_comes_back_gets_the_queue_in_order(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    sink = WebhookSink(_options(url), outbox=tmp_path / "o.sqlite")
    for i in range(5):
        sink.write(_result(i))
    time.sleep(0.4)
    server = Receiver(port)
    try:
        sink.write(_result(5))
        assert server.wait_for(6)
        sink.close()
        assert [r["n"] for r in server.delivered()] == list(range(6))
    finally:
        server.close()


def test_options_check_the_url_and_never_show_the_secret(tmp_path):
    with pytest.raises(ConfigError, match="not an http:// or https:// URL"):
        WebhookOptions("ftp://x")
    with pytest.raises(ConfigError, match="no user or password"):
        WebhookOptions("https://me:pw@x/h")
    options = WebhookOptions("https://x/h?token=abc", secret="s3cr3t-value")
    assert options.secret == b"s3cr3t-value"
    assert "s3cr3t" not in repr(options) and "abc" not in options.address
    sink = WebhookSink(options, outbox=tmp_path / "o.sqlite")
    assert "s3cr3t" not in repr(sink) and "abc" not in repr(sink)
    sink.close()


def test_detect_cli_posts_track_events_signed_with_the_secret_file(
    blazeface_path, receiver, tmp_path
):
    (tmp_path / "secret").write_text(SECRET.decode() + "\n")
    jsonl = tmp_path / "out.jsonl"
    result = run_ubiq(
        "track", "--model", str(blazeface_path), "--max-frames", "60", "--jsonl", str(jsonl),
        "--webhook", receiver.url, "--webhook-secret-file", str(tmp_path / "secret"),
        "--outbox", str(tmp_path / "outbox"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert SECRET.decode() not in result.stderr
    events = [r for r in map(json.loads, jsonl.read_text().splitlines()) if "kind" in r]
    assert [e["kind"] for e in events] == ["track.start", "track.end"]
    assert receiver.delivered() == events
    for _path, headers, body, _status in receiver.requests:
        assert headers["X-Ubiq-Signature"] == sign(SECRET, body)


def test_webhook_secret_from_the_environment(blazeface_path, receiver, tmp_path):
    result = run_ubiq(
        "track", "--model", str(blazeface_path), "--max-frames", "30",
        "--webhook", receiver.url, "--outbox", str(tmp_path / "outbox"),
        env={"UBIQ_WEBHOOK_SECRET": "from-env-secret"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert receiver.requests
    for _path, headers, body, _status in receiver.requests:
        assert headers["X-Ubiq-Signature"] == sign(b"from-env-secret", body)


# batches


def _posted(receiver) -> list[tuple[dict, list[dict]]]:
    """``(headers, records)`` of each 2xx request, each body a JSON array."""
    return [(h, json.loads(b)) for _p, h, b, s in receiver.requests if 200 <= s < 300]


def _wait_events(receiver, count: int, timeout_s: float = 20.0) -> bool:
    """Waits until the 2xx batches hold ``count`` records in all."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if sum(len(batch) for _h, batch in _posted(receiver)) >= count:
            return True
        time.sleep(0.02)
    return False


def test_a_batch_is_one_signed_post_of_a_json_array(receiver, tmp_path):
    from ubiq.pipelines.sinks import JsonlSink

    options = _options(receiver.url, batch_size=4, batch_wait_s=30.0)
    sink = WebhookSink(options, outbox=tmp_path / "o.sqlite", relative_time=True)
    jsonl = JsonlSink(tmp_path / "e.jsonl", relative_time=True)
    for i in range(10):
        result = _result(i)
        sink.write(result)
        jsonl.write(result)
    jsonl.close()
    assert receiver.wait_for(2)  # two full batches go at once; the rest waits to fill
    time.sleep(0.3)
    assert len(receiver.requests) == 2
    sink.close()  # close sends the last, partial batch without waiting
    records = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    posted = _posted(receiver)
    assert [len(batch) for _h, batch in posted] == [4, 4, 2]
    assert [r for _h, batch in posted for r in batch] == [r for r in records if "kind" in r]
    for _path, headers, body, _status in receiver.requests:
        assert body.startswith(b"[") and headers["X-Ubiq-Signature"] == sign(SECRET, body)
        assert headers["X-Ubiq-Event"] == "batch"
        assert int(headers["X-Ubiq-Batch"]) == len(json.loads(body))
        assert "X-Ubiq-Event-Id" not in headers
    assert sink.events_sent == 10 and sink.requests_sent == 3 and len(sink.outbox) == 0


def test_a_batch_goes_out_when_its_oldest_event_has_waited(receiver, tmp_path):
    sink = WebhookSink(
        _options(receiver.url, batch_size=100, batch_wait_s=0.4), outbox=tmp_path / "o.sqlite"
    )
    started = time.monotonic()
    for i in range(3):
        sink.write(_result(i))
    assert _wait_events(receiver, 3, timeout_s=5)
    waited_s = receiver.times[0] - started
    sink.close()
    assert 0.3 < waited_s < 2.0, waited_s
    assert [[r["n"] for r in batch] for _h, batch in _posted(receiver)] == [[0, 1, 2]]


def test_batches_survive_failures_and_an_outage_in_order_without_duplicates(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    options = _options(url, batch_size=5, batch_wait_s=0.1)
    sink = WebhookSink(options, outbox=tmp_path / "o.sqlite")
    for i in range(7):  # the server is down: everything queues
        sink.write(_result(i))
    time.sleep(0.4)
    assert sink.events_sent == 0 and len(sink.outbox) == 7
    server = Receiver(port)
    server.plan = [500, 503]  # it comes back failing, then recovers
    try:
        for i in range(7, 12):
            sink.write(_result(i))
        assert _wait_events(server, 12)
        sink.close()
        delivered = [r for _h, batch in _posted(server) for r in batch]
        assert [r["n"] for r in delivered] == list(range(12))
        assert len({r["id"] for r in delivered}) == 12
        statuses = [s for _p, _h, _b, s in server.requests]
        assert statuses[:2] == [500, 503] and set(statuses[2:]) == {200}
        # the failed batches were sent again, oldest first: the same first event
        firsts = [json.loads(b)[0]["n"] for _p, _h, b, _s in server.requests[:3]]
        assert firsts == [0, 0, 0]
        assert all(len(batch) <= 5 for _h, batch in _posted(server))
        assert len(sink.outbox) == 0
    finally:
        server.close()


def test_batches_queued_by_an_earlier_run_go_out_first(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    sink = WebhookSink(
        _options(url, batch_size=3, flush_timeout_s=0.2), outbox=tmp_path / "o.sqlite"
    )
    for i in range(4):
        sink.write(_result(i))
    sink.close()
    assert len(sink.outbox) == 4
    server = Receiver(port)
    try:
        sink = WebhookSink(_options(url, batch_size=3), outbox=tmp_path / "o.sqlite")
        sink.write(_result(4))
        assert _wait_events(server, 5)
        sink.close()
        posted = _posted(server)
        assert [r["n"] for _h, batch in posted for r in batch] == [0, 1, 2, 3, 4]
        assert [len(batch) for _h, batch in posted][0] == 3  # old events do not wait
    finally:
        server.close()


class RefusingServer:
    """Answers 422 to any request whose body holds the refused ``n``, 200 otherwise."""

    def __init__(self, refused_n: int) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from threading import Thread

        self.bodies: list[tuple[int, list]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                records = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 422 if any(r["n"] == refused_n for r in records) else 200
                server.bodies.append((status, records))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_refused_batch_is_split_until_only_the_refused_event_is_dropped(tmp_path, caplog):
    server = RefusingServer(refused_n=5)
    try:
        sink = WebhookSink(
            _options(server.url, batch_size=8, batch_wait_s=30.0), outbox=tmp_path / "o.sqlite"
        )
        with caplog.at_level(logging.ERROR, logger="ubiq.pipelines.sinks.webhook"):
            for i in range(8):
                sink.write(_result(i))
            deadline = time.monotonic() + 10
            while len(sink.outbox) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(sink.outbox) == 0  # no wait for a batch to fill while splitting
            sink.close()
        accepted = [r["n"] for status, batch in server.bodies if status == 200 for r in batch]
        assert accepted == [0, 1, 2, 3, 4, 6, 7]
        assert sink.events_refused == 1 and sink.events_sent == 7
        # 8 refused -> 4 taken, 4 refused -> 2 refused -> 1 taken, [5] refused and dropped,
        # then one by one to the end of the refused batch
        assert [len(batch) for _s, batch in server.bodies] == [8, 4, 4, 2, 1, 1, 1, 1]
        assert "HTTP 422" in caplog.text and caplog.text.count("refused event") == 1
    finally:
        server.close()


def test_batch_options_are_checked():
    with pytest.raises(ConfigError, match="batch_size must be an integer in 1..1000, got 0"):
        WebhookOptions("http://x/h", batch_size=0)
    with pytest.raises(ConfigError, match="batch_wait_s must be in 0..3600 seconds, got -1"):
        WebhookOptions("http://x/h", batch_size=5, batch_wait_s=-1)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--webhook-batch", "5"], "--webhook-batch needs --webhook URL"),
        (["--webhook", "http://127.0.0.1:9/h", "--webhook-batch", "0"], "must be in 1..1000"),
        (["--webhook", "http://127.0.0.1:9/h", "--webhook-batch-s", "2"], "needs --webhook-batch"),
    ],
)
def test_batch_flag_errors_are_one_line(tmp_path, args, expected):
    result = run_ubiq("track", "--source", "demo", "--outbox", str(tmp_path / "ob"), *args)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert expected in lines[0]


def test_cli_batches_track_events(blazeface_path, receiver, tmp_path):
    jsonl = tmp_path / "out.jsonl"
    result = run_ubiq(
        "track", "--model", str(blazeface_path), "--max-frames", "60", "--jsonl", str(jsonl),
        "--webhook", receiver.url, "--webhook-batch", "10", "--webhook-batch-s", "30",
        "--outbox", str(tmp_path / "outbox"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    events = [r for r in map(json.loads, jsonl.read_text().splitlines()) if "kind" in r]
    posted = _posted(receiver)
    assert len(posted) == 1 and posted[0][1] == events  # one request, at the end of the run


# a full disk for the outbox


def test_a_full_outbox_database_is_one_line_naming_the_file(tmp_path):
    """SQLite's own "disk is full" (SQLITE_FULL), without needing a small file system."""
    from ubiq.errors import UbiqError
    from ubiq.pipelines.sinks.outbox import Outbox

    outbox = Outbox(tmp_path / "o.sqlite")
    outbox.put("t", b"{}", "a")
    outbox._db.execute("PRAGMA max_page_count=2")  # as full as a full disk, for SQLite
    queued = 1
    with pytest.raises(UbiqError) as caught:
        for i in range(100):
            outbox.put("t", b"x" * 4000, str(i))
            queued += 1
    assert str(caught.value) == (
        f"cannot write outbox {tmp_path / 'o.sqlite'}: no space left on the disk; free some "
        "or choose another outbox folder"
    )
    outbox.close()
    assert queued < 10 and len(Outbox(tmp_path / "o.sqlite")) == queued  # what was queued stays


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MB tmpfs, filled up after the test's outbox is open (``fill()``)."""
    yield from small_tmpfs(tmp_path, "1m")


def fill(folder) -> None:
    with open(folder / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_the_queue(full_disk, tmp_path):
    from ubiq.errors import UbiqError
    from ubiq.pipelines.pipeline import Pipeline
    from ubiq.pipelines.sinks import JsonlSink

    dead = f"http://127.0.0.1:{free_port()}/hook"
    path = full_disk / "outbox" / "o.sqlite"
    sink = WebhookSink(_options(dead, flush_timeout_s=0.1), outbox=path)
    for i in range(3):
        sink.write(_result(i))
    fill(full_disk)

    class Ticks:
        def __call__(self, result):
            result.add_event("x.tick", n=result.index, pad="x" * 3000)
            return result

    jsonl = tmp_path / "e.jsonl"
    with pytest.raises(UbiqError) as caught:
        Pipeline([Ticks()], [JsonlSink(jsonl), sink]).run("demo", max_frames=150)
    assert str(caught.value).startswith(f"cannot write outbox {path}: no space left on the disk")
    assert "\n" not in str(caught.value)
    assert jsonl.read_text()  # the other sinks were closed cleanly
    (full_disk / "filler").unlink()
    from ubiq.pipelines.sinks.outbox import Outbox

    reopened = Outbox(path)
    assert [json.loads(item.body)["n"] for item in reopened.peek(0, 3)] == [0, 1, 2]
    reopened.close()


def test_cli_outbox_on_a_full_disk_is_one_line(blazeface_path, full_disk, receiver):
    fill(full_disk)
    result = run_ubiq(
        "track", "--model", str(blazeface_path), "--max-frames", "5",
        "--webhook", receiver.url, "--outbox", str(full_disk / "outbox"),
    )  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    assert lines[0].startswith("ubiq track: error: --webhook: cannot create outbox ")
    assert str(full_disk / "outbox") in lines[0] and "no space left on the disk" in lines[0]
