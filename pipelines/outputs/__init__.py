"""Outputs every video pipeline shares beyond files, from command-line flags or an app's
``outputs`` (the same names): events that leave the machine (``--mqtt``, ``--webhook``:
:mod:`.events`) and the live view and alert clips (``--serve``, ``--token-file``,
``--clips``: :mod:`.live`). The CLI and :class:`ubiq.apps.app.App` both check and build
them here."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ubiq.pipelines.outputs import events as outputs_events
    from ubiq.pipelines.outputs import live as outputs_live

    outputs_events.add_arguments(parser)
    outputs_live.add_arguments(parser)


def check_arguments(args: argparse.Namespace) -> None:
    """Validates the flags before anything is opened (raises ``ConfigError``)."""
    from ubiq.pipelines.outputs import events as outputs_events
    from ubiq.pipelines.outputs import live as outputs_live

    outputs_events.check_arguments(args)
    outputs_live.check_arguments(args)


def build_sinks(args: argparse.Namespace, source, position: int, count: int) -> list:
    """The sinks these flags ask for, for source ``position`` of ``count``."""
    from ubiq.pipelines.outputs import events as outputs_events
    from ubiq.pipelines.outputs import live as outputs_live

    sinks = outputs_events.build_sinks(args, source, position, count)
    try:
        sinks += outputs_live.build_sinks(args, source, position, count)
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def build_stages(args: argparse.Namespace, source, position: int, count: int) -> list:
    """Stages these flags ask for, to run after every other stage (the clip recorder, which
    names its files in the alert events before any sink writes them)."""
    from ubiq.pipelines.outputs import live as outputs_live

    return outputs_live.build_stages(args, source, position, count)
