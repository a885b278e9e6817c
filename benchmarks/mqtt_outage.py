"""MQTT without loss: a broker outage and a SIGKILL in one run, against a real mosquitto.

```bash
.venv/bin/python benchmarks/mqtt_outage.py [--events 1000] [--rate 50] [--outage-s 10] \
    [--stop-at 300] [--kill-at 550] [--json OUT]
```

What it does:

1. Starts Debian's ``mosquitto`` on a free loopback port (with persistence, so messages
   it acknowledged survive its own restart) and a subscriber with a persistent session at
   QoS 1 on ``ubiq/outage/#``.
2. Runs a ubiq pipeline in a child process: a paced source of ``--rate`` frames per
   second, a stage that emits one event per frame, and the sinks ``MqttSink`` (through
   its SQLite outbox) and ``JsonlSink``, on the runner every command uses.
3. When the JSONL holds ``--stop-at`` events it stops the broker (SIGTERM) for
   ``--outage-s`` seconds; while the broker is still down, at ``--kill-at`` events, it
   kills the child with SIGKILL and starts it again, resuming at the frame after the last
   event the JSONL holds (as a service restarted by systemd would resume a recording).
   The new run finds the old run's events in the outbox and sends them first. Once the
   last event is out the new run is stopped with SIGTERM (the source is live: frames go
   on after the ``--events`` events).
4. Compares what the subscriber got with the JSONL files of both runs: every event must
   arrive with exactly its JSONL record, none twice after dropping duplicates by ``id``,
   in order.

Event ids are ``<source>-<frame>`` here (not random): a frame the killed run had queued
but not yet written to its JSONL is processed again by the new run, and the same id makes
that visible as a duplicate rather than as a different event.
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PREFIX = "ubiq/outage"
KIND = "bench.tick"


def produce(args: argparse.Namespace) -> int:
    """The child: runs the paced pipeline with an MQTT and a JSONL sink."""
    import numpy as np

    from ubiq.hardware.sources.base import Source
    from ubiq.pipelines.runner import Runner
    from ubiq.pipelines.sinks import JsonlSink
    from ubiq.pipelines.sinks.mqtt import MqttSink, parse_mqtt_url
    from ubiq.types import Event, Frame

    class PacedSource(Source):
        is_live = True

        def __init__(self) -> None:
            super().__init__("cam0")
            self._fps = args.rate

        def _open(self) -> None:
            self._frame_size = (32, 24)

        def _close(self) -> None:
            pass

        def _frames(self):
            image = np.zeros((24, 32, 3), np.uint8)
            started = time.monotonic()
            index = args.start
            while True:  # a live camera: frames until SIGTERM, events for the first N
                delay = started + (index - args.start) / args.rate - time.monotonic()
                if delay > 0 and self._stop_event.wait(delay):
                    return
                yield Frame(image, index, int(index * 1e9 / args.rate), self.source_id)
                index += 1

    def emit(result):
        if result.index >= args.events:
            return result
        result.events.append(
            Event(
                KIND,
                result.timestamp_ns,
                result.source_id,
                {"n": result.index},
                event_id=f"{result.source_id}-{result.index:06d}",
            )
        )
        return result

    options = parse_mqtt_url(
        f"{args.url}/{PREFIX}",
        reconnect_max_s=args.reconnect_max_s,
        flush_timeout_s=60.0,
        snapshot_interval_s=0,
    )
    sinks = [MqttSink(options, outbox=args.outbox), JsonlSink(args.jsonl)]
    Runner(PacedSource(), [emit], sinks, prefetch=False).run()
    return 0


def _jsonl_events(path: Path) -> list[dict]:
    """The complete event lines of a JSONL (a line cut by SIGKILL is not an event)."""
    events = []
    if not path.exists():
        return events
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("kind") == KIND:
            events.append(record)
    return events


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b'"kind"')
    except FileNotFoundError:
        return 0


def _queued(outbox: Path) -> int:
    db = sqlite3.connect(outbox, timeout=5)
    try:
        return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
    finally:
        db.close()


def run_outage(
    events: int = 1000,
    rate: float = 50.0,
    outage_s: float = 10.0,
    stop_at: int = 300,
    kill_at: int = 550,
    reconnect_max_s: float = 2.0,
    folder: Path | None = None,
) -> dict:
    """Runs the scenario and returns its figures (see the module docstring).

    Raises:
        RuntimeError: If mosquitto is missing or a step does not happen in time.
    """
    sys.path.insert(0, str(REPO / "tests"))
    import mqtt_support

    if mqtt_support.MOSQUITTO is None:
        raise RuntimeError(mqtt_support.SKIP_REASON)
    if not 0 < stop_at < kill_at < events:
        raise ValueError(f"need 0 < stop_at < kill_at < events, got {stop_at}, {kill_at}")
    folder = Path(folder or tempfile.mkdtemp(prefix="ubiq-mqtt-outage-"))
    broker = mqtt_support.Broker(folder / "broker").start()
    subscriber = mqtt_support.Subscriber(broker.port, f"{PREFIX}/#", "outage-subscriber")
    outbox = folder / "outbox.sqlite"
    jsonls = [folder / "run1.jsonl", folder / "run2.jsonl"]
    figures: dict = {"events": events, "rate": rate, "outage_s": outage_s}
    log = open(folder / "producer.log", "ab")  # noqa: SIM115 - both children write it

    def start_child(start: int, jsonl: Path) -> subprocess.Popen:
        command = [sys.executable, __file__, "--produce", "--url", broker.url]
        command += ["--outbox", str(outbox), "--jsonl", str(jsonl), "--start", str(start)]
        command += ["--events", str(events), "--rate", str(rate)]
        command += ["--reconnect-max-s", str(reconnect_max_s)]
        return subprocess.Popen(command, stdout=log, stderr=log, cwd=REPO)

    def wait_until(condition, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}; see {folder}")
            time.sleep(0.01)

    began = time.monotonic()
    child = start_child(0, jsonls[0])
    try:
        wait_until(lambda: _count_lines(jsonls[0]) >= stop_at, 60 + stop_at / rate, "stop_at")
        broker.stop()
        stopped_at = time.monotonic()
        figures["broker_stopped_at_event"] = _count_lines(jsonls[0])
        wait_until(lambda: _count_lines(jsonls[0]) >= kill_at, 60 + kill_at / rate, "kill_at")
        if time.monotonic() - stopped_at >= outage_s:
            raise RuntimeError("the kill came after the outage; lower --kill-at or --rate")
        child.send_signal(signal.SIGKILL)
        child.wait()
        figures["killed_at_event"] = _count_lines(jsonls[0])
        figures["queued_at_kill"] = _queued(outbox)
        first = _jsonl_events(jsonls[0])
        resume = first[-1]["frame"] + 1 if first else 0
        figures["resumed_at_frame"] = resume
        child = start_child(resume, jsonls[1])
        time.sleep(max(0.0, stopped_at + outage_s - time.monotonic()))
        backlog = _count_lines(jsonls[1]) + len(first)  # events made before it returns
        broker.start()
        figures["broker_down_s"] = round(time.monotonic() - stopped_at, 2)
        back = time.monotonic()
        figures["backlog_at_broker_back"] = backlog - figures["broker_stopped_at_event"]
        wait_until(
            lambda: _count_lines(jsonls[1]) + len(first) >= events,
            60 + events / rate,
            "the last event",
        )
        expected = first + _jsonl_events(jsonls[1])
        ids = {e["id"] for e in expected}
        wait_until(
            lambda: ids <= {e["id"] for e in subscriber.events()}, 60, "every event to arrive"
        )
        backlog_arrived = [at for at, e in subscriber.event_arrivals() if e["n"] < backlog]
        figures["backlog_delivered_after_broker_back_s"] = round(max(backlog_arrived) - back, 2)
        child.send_signal(signal.SIGTERM)  # a clean stop, as systemd would
        figures["exit_code_second_run"] = child.wait(timeout=30)
        figures["wall_s"] = round(time.monotonic() - began, 2)
    finally:
        if child.poll() is None:
            child.kill()
        log.close()
        time.sleep(0.3)  # a straggler duplicate, if any, is counted too
        subscriber.close()
        broker.stop()
    received = subscriber.events()
    first_seen: dict[str, dict] = {}
    for record in received:
        first_seen.setdefault(record["id"], record)
    expected_ids = [e["id"] for e in expected]
    by_id = {e["id"]: e for e in expected}
    order = [i for i in first_seen if i in by_id]
    figures |= {
        "jsonl_events": len(expected),
        "jsonl_duplicate_ids": len(expected) - len(set(expected_ids)),
        "received_messages": len(received),
        "received_unique": len(first_seen),
        "duplicates_dropped": len(received) - len(first_seen),
        "missing": len(set(expected_ids) - set(first_seen)),
        "extra": len(set(first_seen) - set(expected_ids)),
        "payload_mismatches": sum(1 for i, r in first_seen.items() if by_id.get(i, r) != r),
        "out_of_order": sum(1 for a, b in zip(order, order[1:]) if by_id[a]["n"] > by_id[b]["n"]),
        "in_order": order == sorted(order, key=lambda i: by_id[i]["n"]),
        "frames_in_jsonl": sorted(e["n"] for e in expected) == list(range(events)),
        "outbox_left": _queued(outbox),
        "folder": str(folder),
    }
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=50.0, help="events per second")
    parser.add_argument("--outage-s", type=float, default=10.0)
    parser.add_argument("--stop-at", type=int, default=300, help="stop the broker at event N")
    parser.add_argument("--kill-at", type=int, default=550, help="SIGKILL ubiq at event N")
    parser.add_argument("--reconnect-max-s", type=float, default=2.0)
    parser.add_argument("--json", metavar="OUT", help="also write the figures here")
    parser.add_argument("--produce", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--outbox", help=argparse.SUPPRESS)
    parser.add_argument("--jsonl", help=argparse.SUPPRESS)
    parser.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.produce:
        return produce(args)
    figures = run_outage(
        args.events, args.rate, args.outage_s, args.stop_at, args.kill_at, args.reconnect_max_s
    )
    for key, value in figures.items():
        print(f"{key:>38}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    ok = figures["missing"] == figures["extra"] == figures["payload_mismatches"] == 0
    ok = ok and figures["in_order"] and figures["frames_in_jsonl"]
    print("PASS: every event arrived once, in order" if ok else "FAIL", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
