"""The ubiq error hierarchy.

Every runtime fault a user can cause or meet (a bad config key, an unreachable camera, a
corrupt model file, a missing accelerator library) is raised as a subclass of
:class:`UbiqError` with a message that names the bad value and what to do. The CLI turns
any ``UbiqError`` into one line on stderr and a non-zero exit.
"""

from __future__ import annotations


class UbiqError(Exception):
    """Base class of every error ubiq raises on purpose."""

    exit_code = 2


class ConfigError(UbiqError, ValueError):
    """A configuration value or command-line option is invalid."""


class SourceError(UbiqError):
    """A video or audio source cannot be opened or read."""

    exit_code = 3


class ModelError(UbiqError):
    """A model file is missing, corrupt, or cannot be decoded."""

    exit_code = 4


class WrongTaskError(ModelError):
    """A model opened for one task is made for another.

    Attributes:
        task: The task the model's manifest names (``"segment"``, ``"kws"``, ...).
    """

    def __init__(self, message: str, task: str) -> None:
        super().__init__(message)
        self.task = task


class DatasetError(UbiqError):
    """A dataset folder is malformed: a missing label file, a class id out of range, ..."""

    exit_code = 6


class ZooError(ModelError):
    """A model zoo entry is unknown or none of its sources could be fetched."""


class BackendUnavailable(UbiqError):
    """A chosen inference backend or accelerator cannot be used on this machine.

    Args:
        name: The backend name, such as ``"litert"`` or ``"coral"``.
        missing: What is missing (a Python package or a shared library).
        hint: How to fix it.
    """

    exit_code = 5

    def __init__(self, name: str, missing: str, hint: str = "") -> None:
        self.name = name
        self.missing = missing
        self.hint = hint
        message = f"backend {name!r} is unavailable: {missing} is missing"
        if hint:
            message += f" ({hint})"
        super().__init__(message)
