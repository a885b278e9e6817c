"""The live view and alert clips of every video pipeline command: ``--serve [HOST:]PORT``,
``--token-file PATH``, ``--clips DIR``, ``--clip-pre S``, ``--clip-post S`` and
``--clip-kinds K,K``.

The clip recorder must run as the last stage so that the JSONL, MQTT and webhook sinks
write the events with the snapshot and clip names: :func:`build_stages` makes it. A
command that only calls :func:`build_sinks` still gets the files (the recorder then runs
as a sink, after the sinks that come before it).
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

from ubiq.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds this module's flags."""
    parser.add_argument(
        "--serve",
        default=None,
        metavar="[HOST:]PORT",
        help="serve a live page (annotated MJPEG stream, counts, events), /snapshot.jpg, "
        "/events, /metrics and /healthz on HOST:PORT (HOST defaults to 127.0.0.1; any other "
        "address needs a token; the Nth source serves on PORT+N-1)",
    )
    parser.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="read the live view's token from PATH (at least 16 characters); without it, a "
        "bind beyond loopback makes one and prints the page's address with it once",
    )
    parser.add_argument(
        "--clips",
        default=None,
        metavar="DIR",
        help="write a snapshot (JPEG) and a clip (MP4, H.264 where an encoder exists) into "
        "DIR for each alert event; their names go into the event",
    )
    parser.add_argument(
        "--clip-pre",
        type=float,
        default=None,
        metavar="S",
        help="seconds of video before the event in a clip (default: 5)",
    )
    parser.add_argument(
        "--clip-post",
        type=float,
        default=None,
        metavar="S",
        help="seconds of video after the event in a clip (default: 5)",
    )
    from ubiq.pipelines.alerts import DEFAULT_CLIP_KINDS

    parser.add_argument(
        "--clip-kinds",
        default=None,
        metavar="K,K",
        help="event kinds that get a clip, comma-separated, * as a wildcard "
        f"(default: {','.join(DEFAULT_CLIP_KINDS)})",
    )


def check_arguments(args: argparse.Namespace) -> None:
    """Validates this module's flags before anything is opened; reads the token file or
    makes a token (kept in ``args.live_token``).

    Raises:
        ConfigError: Naming the flag and the bad value.
    """
    from ubiq.pipelines.sinks.live import is_loopback, parse_bind

    args.live_token = None
    token_file = getattr(args, "token_file", None)
    if token_file is not None:
        try:
            token = Path(token_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as error:
            message = f"--token-file: cannot read {token_file}: {error.strerror}"
            raise ConfigError(message) from error
        if len(token) < 16:
            raise ConfigError(
                f"--token-file: the token in {token_file} must have at least 16 characters, "
                f"got {len(token)}"
            )
        args.live_token = token
    serve = getattr(args, "serve", None)
    if serve is not None:
        try:
            host, port = parse_bind(serve)
        except ConfigError as error:
            raise ConfigError(f"--serve: {error}") from error
        args.live_bind = (host, port)
        if args.live_token is None and not is_loopback(host):
            args.live_token = secrets.token_urlsafe(24)
            args.live_token_printed = False
    elif token_file is not None:
        raise ConfigError("--token-file is for the live view: give --serve [HOST:]PORT too")
    for option in ("clip_pre", "clip_post"):
        value = getattr(args, option, None)
        value = 5.0 if value is None else value  # None: not given (an app's YAML may set it)
        if not 0.0 <= value <= 60.0:
            raise ConfigError(f"--{option.replace('_', '-')} must be between 0 and 60, got {value}")
        setattr(args, option, value)
    if getattr(args, "clip_kinds", None) is None:
        from ubiq.pipelines.alerts import DEFAULT_CLIP_KINDS

        args.clip_kinds = ",".join(DEFAULT_CLIP_KINDS)
    kinds = [k.strip() for k in str(args.clip_kinds).split(",") if k.strip()]
    if not kinds:
        raise ConfigError(f"--clip-kinds must name at least one kind, got {args.clip_kinds!r}")
    args.clip_kind_list = kinds
    clips = getattr(args, "clips", None)
    if clips is not None:
        path = Path(clips).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"--clips: {clips} is a file, not a folder")
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None or not existing.is_dir():
            raise ConfigError(f"--clips: cannot create {clips}: {existing} is not a folder")


def _clips_folder(args: argparse.Namespace, position: int, count: int) -> Path:
    folder = Path(args.clips).expanduser()
    return folder if count == 1 else folder / f"source-{position + 1}"


def _recorders(args: argparse.Namespace) -> dict:
    recorders = getattr(args, "live_clip_recorders", None)
    if recorders is None:
        recorders = args.live_clip_recorders = {}
    return recorders


def build_stages(args: argparse.Namespace, source, position: int, count: int) -> list:
    """The stages these flags ask for (the clip recorder), to run after all others.

    Raises:
        ConfigError: Naming ``--clips``, if the folder cannot be created.
    """
    if getattr(args, "clips", None) is None:
        return []
    from ubiq.pipelines.sinks.clips import ClipRecorder

    fps = getattr(source, "fps", None)
    stride = getattr(args, "vid_stride", 1) or 1
    try:
        recorder = ClipRecorder(
            _clips_folder(args, position, count),
            kinds=args.clip_kind_list,
            pre_s=args.clip_pre,
            post_s=args.clip_post,
            fps=fps / stride if fps else None,
            wait_for_writer=not getattr(source, "is_live", True),
        )
    except ConfigError as error:
        raise ConfigError(f"--clips: {error}") from error
    _recorders(args)[position] = recorder
    return [recorder]


def build_sinks(args: argparse.Namespace, source, position: int, count: int) -> list:
    """The sinks these flags ask for: the live view and, when :func:`build_stages` did not
    make it a stage, the clip recorder.

    Raises:
        ConfigError: Naming the flag, if the port is in use or a folder cannot be made.
    """
    sinks: list = []
    recorder = _recorders(args).get(position)
    if getattr(args, "clips", None) is not None and recorder is None:
        sinks += build_stages(args, source, position, count)
        recorder = sinks[-1]
    if getattr(args, "serve", None) is None:
        return sinks
    from ubiq.pipelines.sinks.live import LiveViewSink

    host, port = args.live_bind
    queues = {} if recorder is None else {"clips": recorder.queue_length}
    try:
        live = LiveViewSink(
            host,
            port + position if port else 0,
            token=args.live_token,
            source=source,
            queues=queues,
            title=f"ubiq {getattr(args, 'command', None) or 'live'}: {source.source_id}",
            clips_folder=(
                _clips_folder(args, position, count) if getattr(args, "clips", None) else None
            ),
        )
    except ConfigError as error:
        for sink in sinks:
            sink.close()
        raise ConfigError(f"--serve: {error}") from error
    command = getattr(args, "command", None) or "detect"
    if getattr(args, "live_token_printed", True) is False:
        # The one time the token is shown: the address to open, with it.
        args.live_token_printed = True
        sys.stderr.write(
            f"ubiq {command}: live view at {live.url(with_token=True)} (token printed once; "
            "use --token-file to choose it)\n"
        )
    else:
        sys.stderr.write(f"ubiq {command}: live view at {live.url()}\n")
    sinks.append(live)
    return sinks
