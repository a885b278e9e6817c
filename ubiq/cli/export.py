"""``ubiq export``: placeholder, filled in by the models issue."""

from __future__ import annotations

from typing import Any


def add_parser(subparsers: Any) -> None:
    """Adds nothing yet."""
