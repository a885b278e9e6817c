"""ubiq.deploy: putting an app on a device.

- :mod:`ubiq.deploy.doctor`: what a machine is, what ubiq can use on it, and what to fix.
- :mod:`ubiq.deploy.units`: the systemd unit of an app, rendered from
  ``deploy/systemd/ubiq@.service.in`` (shipped as package data).
- :mod:`ubiq.deploy.bundle`: a model converted for a device and packed with a check script.

This folder also holds what is not Python (Dockerfiles, the unit template, a README); it
ships as ``ubiq.deploy`` through the ``package-dir`` mapping in ``pyproject.toml``. Nothing
here imports :mod:`ubiq.cli`; the ``ubiq deploy`` and ``ubiq doctor`` commands call it.
"""
