"""Thermal zones, `vcgencmd get_throttled` decoding, HealthMonitor edges, runner hook."""

import subprocess

import pytest
from support import CountingSource

from ubiq.hardware.health import (
    Health,
    HealthMonitor,
    decode_throttled,
    parse_throttled,
    read_health,
    read_thermal_zones,
)
from ubiq.pipelines.runner import Runner
from ubiq.pipelines.stage import Function
from ubiq.types import Detections

NOTHING = {
    "under_voltage": False,
    "frequency_capped": False,
    "throttled": False,
    "soft_temperature_limit": False,
}


def test_decode_zero():
    assert decode_throttled(0x0) == {
        "raw": 0,
        "hex": "0x0",
        "now": NOTHING,
        "since_boot": NOTHING,
    }


def test_decode_under_voltage_and_throttled_now_and_since_boot():
    flags = decode_throttled(0x50005)
    expected = {**NOTHING, "under_voltage": True, "throttled": True}
    assert flags["now"] == expected
    assert flags["since_boot"] == expected
    assert flags["hex"] == "0x50005"


def test_decode_soft_limit_now_and_since_boot():
    flags = decode_throttled(0x80008)
    assert flags["now"] == {**NOTHING, "soft_temperature_limit": True}
    assert flags["since_boot"] == {**NOTHING, "soft_temperature_limit": True}


def test_decode_since_boot_only():
    flags = decode_throttled(0x50000)
    assert flags["now"] == NOTHING
    assert flags["since_boot"]["under_voltage"] and flags["since_boot"]["throttled"]
    assert not Health(throttled=flags).throttling_now


def test_parse_throttled_rejects_other_text():
    assert parse_throttled("throttled=0x50005\n") == 0x50005
    with pytest.raises(ValueError, match="'error=1'"):
        parse_throttled("error=1")
    with pytest.raises(ValueError, match="-1"):
        decode_throttled(-1)


def write(root, relative, text):
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_vcgencmd(stdout, returncode=0):
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, returncode, stdout=stdout, stderr="")

    run.calls = calls
    return run


def test_read_health_from_zones_and_vcgencmd(tmp_path):
    write(tmp_path, "sys/class/thermal/thermal_zone0/temp", "48312\n")
    write(tmp_path, "sys/class/thermal/thermal_zone0/type", "cpu-thermal\n")
    write(tmp_path, "sys/class/thermal/thermal_zone1/temp", "61500\n")
    write(tmp_path, "sys/class/thermal/thermal_zone1/type", "gpu-thermal\n")
    write(tmp_path, "sys/class/thermal/thermal_zone2/temp", "garbage\n")  # skipped
    run = fake_vcgencmd("throttled=0x50005\n")
    health = read_health(tmp_path, run=run)
    assert health.zones == {"cpu-thermal": 48.312, "gpu-thermal": 61.5}
    assert health.temperature_c == 61.5
    assert health.throttled["raw"] == 0x50005 and health.throttling_now
    assert run.calls == [["vcgencmd", "get_throttled"]]


def test_missing_vcgencmd_gives_none(tmp_path):
    def missing(command, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", command[0])

    health = read_health(tmp_path, run=missing)
    assert health == Health(temperature_c=None, zones={}, throttled=None)
    assert read_health(tmp_path, run=fake_vcgencmd("", returncode=255)).throttled is None


def test_duplicate_zone_types_are_kept_apart(tmp_path):
    for index, temp in enumerate(("40000", "45000")):
        write(tmp_path, f"sys/class/thermal/thermal_zone{index}/temp", temp)
        write(tmp_path, f"sys/class/thermal/thermal_zone{index}/type", "soc")
    assert read_thermal_zones(tmp_path) == {"soc": 40.0, "soc:thermal_zone1": 45.0}


def scripted_reader(values):
    """A reader returning one Health per call: (temperature_c, throttled raw value)."""
    snapshots = iter(values)

    def read():
        temperature, raw = next(snapshots)
        return Health(temperature, {"cpu": temperature}, decode_throttled(raw))

    return read


def test_monitor_emits_one_event_at_start_and_one_at_recovery():
    monitor = HealthMonitor(
        interval_s=1.0,
        reader=scripted_reader(
            [(50.0, 0x0), (82.0, 0x80008), (84.5, 0x80008), (83.0, 0x80008), (70.0, 0x80000)]
        ),
    )
    kinds = [[event.kind for event in monitor.sample()[1]] for _ in range(5)]
    assert kinds == [[], ["health.throttled"], [], [], ["health.recovered"]]
    assert monitor.max_temperature_c == 84.5
    assert monitor.throttle_events == 1
    assert monitor.last.temperature_c == 70.0


def test_monitor_event_payload():
    monitor = HealthMonitor(reader=scripted_reader([(81.0, 0x50005)]))
    _health, events = monitor.sample()
    (event,) = events
    assert event.source_id == "health"
    assert event.payload == {
        "temperature_c": 81.0,
        "throttled": "0x50005",
        "now": ["under_voltage", "throttled"],
    }


def test_monitor_rejects_bad_interval():
    with pytest.raises(ValueError, match="interval_s must be > 0, got 0"):
        HealthMonitor(interval_s=0)


class CountingMonitor(HealthMonitor):
    def __init__(self, interval_s, values):
        super().__init__(interval_s=interval_s, reader=scripted_reader(values))
        self.samples = 0

    def sample(self):
        self.samples += 1
        return super().sample()


def no_detections(frame):
    return Detections.empty()


def test_runner_samples_health_and_reports_events(caplog):
    monitor = CountingMonitor(1e-9, [(60.0, 0x0), (82.0, 0x4), (79.0, 0x0)])
    events = []
    summary = Runner(
        CountingSource(3), [Function(no_detections)], health=monitor, on_event=events.append
    ).run()
    assert monitor.samples == 3
    assert [event.kind for event in events] == ["health.throttled", "health.recovered"]
    assert summary.max_temperature_c == 82.0 and summary.throttle_events == 1
    data = summary.to_dict()
    assert data["max_temperature_c"] == 82.0 and data["throttle_events"] == 1
    assert "max 82.0 C, 1 throttle events" in summary.line()
    assert sum("health.throttled" in record.message for record in caplog.records) == 1


def test_runner_respects_the_interval():
    monitor = CountingMonitor(3600.0, [(55.0, 0x0)] * 10)
    summary = Runner(CountingSource(10), [Function(no_detections)], health=monitor).run()
    assert monitor.samples == 1  # the first frame only; the next is an hour away
    assert summary.frames == 10 and summary.throttle_events == 0


def test_runner_without_monitor_has_no_health_fields():
    summary = Runner(CountingSource(2), [Function(no_detections)]).run()
    data = summary.to_dict()
    assert "max_temperature_c" not in data and "throttle_events" not in data
    assert "throttle" not in summary.line()
