"""`ubiq listen` runs on the shared runner: systemd readiness, clean outputs."""

import contextlib
import socket
import threading

import numpy as np


def test_listen_tells_systemd_it_is_ready_and_stopping(tmp_path, monkeypatch):
    from ubiq.cli import main
    from ubiq.models.runtime.audio_features import write_wav

    wav = tmp_path / "quiet.wav"
    write_wav(wav, np.zeros(16000, np.float32), 16000)
    address = str(tmp_path / "notify.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(address)
    server.settimeout(1.0)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    messages = []

    def receive():
        with contextlib.suppress(TimeoutError):
            while True:
                messages.append(server.recv(64).decode())

    reader = threading.Thread(target=receive)
    reader.start()
    out = tmp_path / "events.jsonl"
    assert main(["listen", "--source", str(wav), "--jsonl", str(out), "--quiet"]) == 0
    reader.join()
    server.close()
    assert messages[0] == "READY=1" and messages[-1] == "STOPPING=1"
    assert out.read_text() == ""  # silence: no events, and the file was written and closed


def test_listen_source_that_fails_keeps_an_existing_jsonl(tmp_path, capsys):
    from ubiq.cli import main

    out = tmp_path / "events.jsonl"
    out.write_text('{"kind": "speech.end"}\n')
    assert main(["listen", "--source", str(tmp_path / "missing.wav"), "--jsonl", str(out)]) != 0
    assert out.read_text() == '{"kind": "speech.end"}\n'
    assert "missing.wav" in capsys.readouterr().err
