"""Placeholder: filled in by the issue that builds these outputs."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds this module's flags."""


def check_arguments(args: argparse.Namespace) -> None:
    """Validates this module's flags before anything is opened."""


def build_sinks(args: argparse.Namespace, source, position: int, count: int) -> list:
    """The sinks this module's flags ask for."""
    return []
