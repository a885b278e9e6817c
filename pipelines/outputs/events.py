"""Events that leave the machine: ``--mqtt`` and ``--webhook``, each through a durable
outbox (``--outbox DIR``, default ``$UBIQ_HOME/outbox``).

```
ubiq track --source 0 --mqtt mqtt://ha.local/ubiq/frontdoor
ubiq detect --mqtt mqtts://cam@broker:8883 --mqtt-tls-ca ca.pem --mqtt-password-file pw
ubiq listen --commands commands.yaml --webhook https://hooks.example/ubiq
ubiq run counter --webhook https://hooks.example/ubiq --webhook-batch 50 --webhook-batch-s 2
```

Passwords and secrets come from the environment (``UBIQ_MQTT_PASSWORD``,
``UBIQ_WEBHOOK_SECRET``) or a file (``--mqtt-password-file``, ``--webhook-secret-file``;
a file wins), never from the command line, and are never printed.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ubiq.errors import ConfigError

MQTT_PASSWORD_ENV = "UBIQ_MQTT_PASSWORD"
WEBHOOK_SECRET_ENV = "UBIQ_WEBHOOK_SECRET"

_MQTT_ONLY = ("mqtt_tls_ca", "mqtt_tls_cert", "mqtt_tls_key", "mqtt_password_file")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--mqtt``, its TLS and password flags, ``--webhook``, its secret and batch
    flags, and ``--outbox``."""
    group = parser.add_argument_group("events out (MQTT, webhooks)")
    group.add_argument(
        "--mqtt",
        metavar="URL",
        help="publish every event to an MQTT broker: mqtt://[USER@]HOST[:PORT][/PREFIX] "
        "(mqtts:// for TLS; PREFIX defaults to ubiq/<hostname>); password from "
        f"${MQTT_PASSWORD_ENV} or --mqtt-password-file",
    )
    group.add_argument("--mqtt-tls-ca", metavar="FILE", help="CA bundle for the broker (PEM)")
    group.add_argument("--mqtt-tls-cert", metavar="FILE", help="client certificate (PEM)")
    group.add_argument("--mqtt-tls-key", metavar="FILE", help="client certificate's key (PEM)")
    group.add_argument(
        "--mqtt-password-file", metavar="FILE", help="file holding the MQTT password"
    )
    group.add_argument(
        "--webhook",
        metavar="URL",
        help="POST every event as JSON to this URL, signed with X-Ubiq-Signature when "
        f"${WEBHOOK_SECRET_ENV} or --webhook-secret-file is set",
    )
    group.add_argument(
        "--webhook-secret-file", metavar="FILE", help="file holding the webhook HMAC secret"
    )
    group.add_argument(
        "--webhook-batch",
        type=int,
        default=None,
        metavar="N",
        help="POST up to N events per request as a JSON array (default: 1, one event per "
        "request, its record as the body)",
    )
    group.add_argument(
        "--webhook-batch-s",
        type=float,
        default=None,
        metavar="S",
        help="with --webhook-batch: longest wait, in seconds, for a batch to fill (default: 1)",
    )
    group.add_argument(
        "--outbox",
        metavar="DIR",
        help="folder of the durable outboxes that hold events until the broker or server "
        "has them (default: $UBIQ_HOME/outbox)",
    )


def _read_secret(option: str, path: str) -> str:
    """The first line of a secret file, without its line end.

    Raises:
        ConfigError: Naming the flag and the file (never its content).
    """
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{option}: cannot read {path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{option}: {path} is not UTF-8 text") from error
    secret = text.splitlines()[0] if text.strip() else ""
    if not secret:
        raise ConfigError(f"{option}: {path} is empty")
    return secret


def _check_tls(args: argparse.Namespace) -> None:
    import ssl

    for option, path in (
        ("--mqtt-tls-ca", args.mqtt_tls_ca),
        ("--mqtt-tls-cert", args.mqtt_tls_cert),
        ("--mqtt-tls-key", args.mqtt_tls_key),
    ):
        if path and not Path(path).expanduser().is_file():
            raise ConfigError(f"{option}: no such file {path}")
    if args.mqtt_tls_ca:
        try:
            ssl.create_default_context(cafile=str(Path(args.mqtt_tls_ca).expanduser()))
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                f"--mqtt-tls-ca: {args.mqtt_tls_ca} is not a PEM CA certificate "
                f"({getattr(error, 'reason', None) or error})"
            ) from error
    if args.mqtt_tls_cert or args.mqtt_tls_key:
        if not (args.mqtt_tls_cert and args.mqtt_tls_key):
            raise ConfigError("--mqtt-tls-cert and --mqtt-tls-key go together")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_cert_chain(
                str(Path(args.mqtt_tls_cert).expanduser()),
                str(Path(args.mqtt_tls_key).expanduser()),
            )
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(
                f"--mqtt-tls-cert/--mqtt-tls-key: {args.mqtt_tls_cert} and "
                f"{args.mqtt_tls_key} are not a matching PEM certificate and key "
                f"({getattr(error, 'reason', None) or error})"
            ) from error


def _mqtt_options(args: argparse.Namespace, *, read_password: bool):
    from ubiq.pipelines.sinks.mqtt import parse_mqtt_url

    password = None
    if read_password and args.mqtt_password_file:
        password = _read_secret("--mqtt-password-file", args.mqtt_password_file)
    elif read_password:
        password = os.environ.get(MQTT_PASSWORD_ENV) or None
    try:
        options = parse_mqtt_url(
            args.mqtt,
            tls_ca=_expand(args.mqtt_tls_ca),
            tls_cert=_expand(args.mqtt_tls_cert),
            tls_key=_expand(args.mqtt_tls_key),
        )
    except ConfigError as error:
        raise ConfigError(f"--mqtt: {error}") from error
    if password is not None and not options.username:
        if args.mqtt_password_file:
            raise ConfigError("--mqtt-password-file needs a user: --mqtt mqtt://USER@HOST")
        password = None  # $UBIQ_MQTT_PASSWORD set for another broker; this one has no user
    if password is not None:
        from dataclasses import replace

        options = replace(options, password=password)
    return options


def _expand(path: str | None) -> str | None:
    return str(Path(path).expanduser()) if path else None


def _webhook_options(args: argparse.Namespace, *, read_secret: bool):
    from ubiq.pipelines.sinks.webhook import MAX_BATCH, WebhookOptions

    secret = None
    if read_secret and args.webhook_secret_file:
        secret = _read_secret("--webhook-secret-file", args.webhook_secret_file)
    elif read_secret:
        secret = os.environ.get(WEBHOOK_SECRET_ENV) or None
    batch = {}
    size, wait_s = getattr(args, "webhook_batch", None), getattr(args, "webhook_batch_s", None)
    if size is not None:
        if not 1 <= size <= MAX_BATCH:
            raise ConfigError(f"--webhook-batch must be in 1..{MAX_BATCH}, got {size}")
        batch["batch_size"] = size
    if wait_s is not None:
        if not 0 <= wait_s <= 3600:
            raise ConfigError(f"--webhook-batch-s must be in 0..3600 seconds, got {wait_s}")
        batch["batch_wait_s"] = wait_s
    try:
        return WebhookOptions(args.webhook, secret=secret.encode() if secret else None, **batch)
    except ConfigError as error:
        raise ConfigError(f"--webhook: {error}") from error


def check_arguments(args: argparse.Namespace) -> None:
    """Validates the flags before anything is opened: URLs, TLS files (loaded), secret
    files (readable, not empty), the outbox folder, and that paho-mqtt is installed.

    Raises:
        ConfigError: Naming the flag and the bad value (never a password).
        BackendUnavailable: If ``--mqtt`` is given and paho-mqtt is missing.
    """
    if not args.mqtt:
        for name in _MQTT_ONLY:
            if getattr(args, name):
                raise ConfigError(f"--{name.replace('_', '-')} needs --mqtt URL")
    for name in ("webhook_secret_file", "webhook_batch", "webhook_batch_s"):
        if getattr(args, name, None) is not None and not args.webhook:
            raise ConfigError(f"--{name.replace('_', '-')} needs --webhook URL")
    if getattr(args, "webhook_batch_s", None) is not None and not (args.webhook_batch or 1) > 1:
        raise ConfigError("--webhook-batch-s needs --webhook-batch N (N > 1)")
    if args.outbox and not (args.mqtt or args.webhook):
        raise ConfigError("--outbox needs --mqtt or --webhook")
    if args.mqtt:
        import importlib.util

        from ubiq.errors import BackendUnavailable

        tls_files = args.mqtt_tls_ca or args.mqtt_tls_cert or args.mqtt_tls_key
        if tls_files and not args.mqtt.lower().startswith("mqtts://"):
            raise ConfigError("--mqtt-tls-* need an mqtts:// URL in --mqtt")
        _check_tls(args)
        options = _mqtt_options(args, read_password=False)
        if args.mqtt_password_file:
            _read_secret("--mqtt-password-file", args.mqtt_password_file)
            if not options.username:
                raise ConfigError("--mqtt-password-file needs a user: --mqtt mqtt://USER@HOST")
        if importlib.util.find_spec("paho") is None:
            raise BackendUnavailable("mqtt", missing="paho-mqtt", hint="pip install 'ubiq[mqtt]'")
    if args.webhook:
        _webhook_options(args, read_secret=False)
        if args.webhook_secret_file:
            _read_secret("--webhook-secret-file", args.webhook_secret_file)
    if args.outbox:
        path = Path(args.outbox).expanduser()
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
        if existing is None or not existing.is_dir():
            raise ConfigError(f"--outbox: cannot create {args.outbox}: {existing} is not a folder")


def build_sinks(args: argparse.Namespace, source, position: int, count: int) -> list:
    """The MQTT and webhook sinks for source ``position`` of ``count``.

    With several sources each gets its own topic prefix (``ubiq/dev-1``, ``ubiq/dev-2``)
    and its own outbox.

    Raises:
        ConfigError: Naming the flag, if an outbox cannot be opened.
    """
    if not (args.mqtt or args.webhook):
        return []
    from dataclasses import replace

    from ubiq.pipelines.sinks.outbox import default_outbox_dir, outbox_name

    folder = Path(args.outbox).expanduser() if args.outbox else default_outbox_dir()
    source_key = str(getattr(source, "source_id", "")) if count > 1 else ""
    # ``ts`` as the CLI's JSONL writes it: seconds since the first frame (speech events
    # keep their own time in seconds of source audio).
    relative_time = True
    sinks: list = []
    try:
        if args.mqtt:
            from ubiq.pipelines.sinks.mqtt import MqttSink

            options = _mqtt_options(args, read_password=True)
            if count > 1:
                options = replace(options, prefix=f"{options.prefix}-{position + 1}")
            identity = f"{options.address}|{options.prefix}|{source_key}"
            outbox = folder / outbox_name("mqtt", identity, options.host)
            try:
                sinks.append(MqttSink(options, outbox=outbox, relative_time=relative_time))
            except ConfigError as error:
                raise ConfigError(f"--mqtt: {error}") from error
        if args.webhook:
            from ubiq.pipelines.sinks.webhook import WebhookSink

            options = _webhook_options(args, read_secret=True)
            host = options.address.split("://", 1)[-1].split("/", 1)[0]
            outbox = folder / outbox_name("webhook", f"{options.url}|{source_key}", host)
            try:
                sinks.append(WebhookSink(options, outbox=outbox, relative_time=relative_time))
            except ConfigError as error:
                raise ConfigError(f"--webhook: {error}") from error
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks
