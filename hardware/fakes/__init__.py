"""Fakes of hardware libraries that follow the real libraries' APIs, for tests.

Tests install a fake in place of the real module, for example::

    from ubiq.hardware.fakes import picamera2 as fake_picamera2

    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2)

Importing this package has no side effects.
"""
