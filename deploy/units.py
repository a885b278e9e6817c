"""The systemd unit of a ubiq app: rendering and installing ``ubiq@APP.service``.

The template is ``deploy/systemd/ubiq@.service.in`` in the repository, shipped in the wheel
as package data of ``ubiq.deploy.systemd``: there is one copy, read by :func:`unit_template`.
Nothing here runs ``systemctl`` or ``useradd``; :func:`next_steps` lists those commands.

The unit is ``Type=notify`` with ``WatchdogSec=``: the command must send ``READY=1`` once it
runs and ``WATCHDOG=1`` while it works, as :class:`ubiq.pipelines.runner.Runner` does
through :mod:`ubiq.systemd`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from importlib import resources
from pathlib import Path

from ubiq.errors import ConfigError, UbiqError

TEMPLATE_NAME = "ubiq@.service.in"
"""The template's file name, in the ``systemd`` folder of this package."""

DEFAULT_UNIT_DIR = Path("/etc/systemd/system")
DEFAULT_USER = "ubiq"
EXAMPLE_COMMAND = "ubiq detect --source 0 --model blazeface --jsonl detections.jsonl"
"""A command for a service: detection on the first USB camera, events in the state folder."""

_APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SYSTEMD_SPECIAL = re.compile(r"[\s\"'\\;]")


class UnitDirNotWritable(UbiqError):
    """The unit folder is missing or not writable by this user (installing needs root).

    Args:
        path: The unit file that could not be written.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"cannot write {path}: installing a service needs root")


def unit_template() -> str:
    """Returns the text of ``ubiq@.service.in`` (placeholders ``@APP@``, ``@USER@``,
    ``@EXEC_START@``)."""
    return (resources.files("ubiq.deploy") / "systemd" / TEMPLATE_NAME).read_text(encoding="utf-8")


def check_app_name(app: str) -> str:
    """Returns ``app`` when it can name a unit instance and a bundle.

    Raises:
        ConfigError: If it has characters other than letters, digits, ``-``, ``_``, ``.``.
    """
    if not _APP_NAME.match(app):
        raise ConfigError(
            f"APP must be letters, digits, '-', '_' or '.', starting with a letter or digit; "
            f"got {app!r}"
        )
    return app


def unit_name(app: str) -> str:
    """``ubiq@APP.service``."""
    return f"ubiq@{check_app_name(app)}.service"


def systemd_quote(argument: str) -> str:
    """Quotes one argument for ``ExecStart=`` (``%`` and ``$`` are escaped as systemd wants)."""
    text = argument.replace("%", "%%").replace("$", "$$")
    if argument == "" or _SYSTEMD_SPECIAL.search(argument):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def find_program(program: str) -> str | None:
    """The absolute path of ``program``: as given, on ``PATH``, or beside this interpreter
    (a venv's ``bin/``, which is not on PATH under ``sudo`` or systemd); ``None`` if absent."""
    if os.path.isabs(program):
        return program
    found = shutil.which(program)
    beside_python = Path(sys.executable).parent / program
    if found is None and beside_python.is_file():
        found = str(beside_python)
    return None if found is None else os.path.abspath(found)


def exec_start(command: str) -> str:
    """Turns a shell-style command into an ``ExecStart=`` value with an absolute program.

    Args:
        command: e.g. ``"ubiq detect --source 0 --model blazeface"``.

    Raises:
        ConfigError: If the command is empty, unparsable, or its program is not found.
    """
    try:
        words = shlex.split(command)
    except ValueError as error:
        raise ConfigError(f"--command could not be parsed ({error}): {command!r}") from error
    if not words:
        raise ConfigError(f'--command must not be empty, e.g. --command "{EXAMPLE_COMMAND}"')
    program = find_program(words[0])
    if program is None:
        raise ConfigError(
            f"--command program {words[0]!r} is not on PATH; give its absolute path, "
            f"e.g. /opt/ubiq/.venv/bin/{words[0]}"
        )
    return " ".join(systemd_quote(word) for word in [program, *words[1:]])


def render_unit(app: str, command: str, user: str = DEFAULT_USER) -> str:
    """Renders the systemd unit of ``app``.

    Args:
        app: App name; the unit is ``ubiq@APP.service``.
        command: The command the service runs; it must notify systemd (a ubiq pipeline).
        user: The system user it runs as.

    Returns:
        The unit file's text.

    Raises:
        ConfigError: If a value is invalid (see :func:`exec_start`).
    """
    check_app_name(app)
    if not _APP_NAME.match(user):
        raise ConfigError(f"--user must be a plain user name, got {user!r}")
    return (
        unit_template()
        .replace("@APP@", app)
        .replace("@USER@", user)
        .replace("@EXEC_START@", exec_start(command))
    )


def install_unit(
    app: str, command: str, user: str = DEFAULT_USER, unit_dir: Path = DEFAULT_UNIT_DIR
) -> Path:
    """Writes ``<unit_dir>/ubiq@APP.service``.

    Returns:
        The unit file's path.

    Raises:
        ConfigError: If a value is invalid or the file cannot be written.
        UnitDirNotWritable: If ``unit_dir`` is missing or not writable (not root).
    """
    unit = render_unit(app, command, user)
    path = Path(unit_dir) / unit_name(app)
    if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
        raise UnitDirNotWritable(path)
    try:
        path.write_text(unit, encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot write {path}: {error.strerror}") from error
    return path


def user_exists(user: str) -> bool:
    """Whether ``user`` is a user of this machine (POSIX)."""
    import pwd  # POSIX only: imported here so importing this module works everywhere

    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def next_steps(app: str, user: str = DEFAULT_USER) -> list[str]:
    """What to run after :func:`install_unit`, one shell command (or note) a line."""
    steps = []
    if not user_exists(user):
        steps.append(f"sudo useradd --system --groups video,audio {shlex.quote(user)}")
    steps += [
        f"for a Coral: sudo usermod -aG plugdev {shlex.quote(user)} (USB) or -aG apex (PCIe), "
        "then add the group to SupplementaryGroups= in the unit",
        "sudo systemctl daemon-reload",
        f"sudo systemctl enable --now ubiq@{app}",
        f"journalctl -u ubiq@{app} -f",
    ]
    return steps
