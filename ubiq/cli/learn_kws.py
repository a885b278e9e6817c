"""``ubiq learn --task kws``: adapt a keyword model to a voice from a few utterances.

```
ubiq learn --task kws --embedder ubiq-commands-demo --data my-voice --record "hey ubiq" \
    --out my-commands                       # say it three times into the microphone
ubiq learn --task kws --embedder ubiq-commands-demo --data my-voice --out my-commands
ubiq learn --task kws --out my-commands --add more-phrases/
ubiq listen --model my-commands --source mic
```

``--data`` holds one sub-folder per phrase (``my-voice/hey ubiq/*.wav``; a model class, or
a new phrase; ``hey ubiq@ana/`` for a second speaker), each with the user's WAVs. Each
phrase becomes a template on the model's embedding (weight imprinting, see
:mod:`ubiq.models.runtime.kws_enroll`); ``OUT`` holds the model (with its embedding
output), its manifest (templates, thresholds and the rules used) and ``commands.yaml``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from ubiq.errors import ConfigError, WrongTaskError

__all__ = ["add_kws_arguments", "run_kws"]


def add_kws_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the flags only ``--task kws`` reads."""
    group = parser.add_argument_group("keyword models (--task kws)")
    group.add_argument(
        "--record",
        metavar="PHRASE",
        help="first record PHRASE from the microphone into DATA/PHRASE (or the --add folder)",
    )
    group.add_argument("--times", type=int, default=3, metavar="N", help="takes to record")
    group.add_argument(
        "--record-seconds", type=float, default=2.5, metavar="S", help="length of each take"
    )
    group.add_argument("--mic", default="mic", help="microphone: mic, mic:INDEX or mic:NAME")
    group.add_argument(
        "--commands",
        metavar="FILE",
        help="commands file OUT listens for (default: the one beside the model, if any); "
        "new phrases are added as their own intents",
    )


def _folder(args: argparse.Namespace) -> Path:
    out = Path(args.out).expanduser()
    if getattr(args, "refine", 0):
        raise ConfigError("--refine is for picture classes; keyword templates are imprinted only")
    if args.add and args.data:
        raise ConfigError(
            "give --data DIR for a new OUT or --add DIR for an existing one, not both"
        )
    if args.add:
        if not (out / "model.json").is_file():
            raise ConfigError(f"--add needs an enrolled keyword model at --out {out}")
        return Path(args.add).expanduser()
    if not args.data:
        raise ConfigError("--data DIR is required (one sub-folder of WAVs per phrase)")
    if not args.embedder:
        raise ConfigError("--embedder MODEL (a keyword model) is required with --data")
    if out.exists() and not getattr(args, "force", False):
        raise ConfigError(f"{out} exists; add phrases with --add DIR, or replace it with --force")
    return Path(args.data).expanduser()


def _commands_beside(path: Path) -> Path | None:
    from importlib.resources import files

    for suffix in (".yaml", ".yml", ".txt"):
        if path.with_suffix(suffix).is_file():
            return path.with_suffix(suffix)
    packaged = Path(str(files("ubiq.data") / "models" / f"{path.stem}.yaml"))
    return packaged if packaged.is_file() else None


def _commands_yaml(source: Path | None, labels, phrases) -> str:
    """The commands of OUT: the given file, else the model's classes, plus new phrases."""
    from ubiq.pipelines.speech.commands import load_commands, normalize_text

    data: dict = {}
    if source is not None:
        commands = load_commands(source)  # ConfigError names a bad file
        if source.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(source.read_text(encoding="utf-8"))
        else:
            data = {"intents": {p.intent: p.intent for p in commands.phrases}}
        known = {p.text for p in commands.phrases} | {commands.wake}
    else:
        data = {"intents": {x: x for x in labels if x not in ("_unknown_", "_silence_")}}
        known = set(labels)
    intents = data.setdefault("intents", {})
    for phrase in phrases:
        if normalize_text(phrase) not in known and phrase not in intents:
            intents[phrase] = phrase
            known.add(phrase)
    return "# written by ubiq learn --task kws\n" + yaml.safe_dump(data, sort_keys=False)


def run_kws(args: argparse.Namespace) -> int:
    """Enrols the phrases of ``--data`` (or ``--add``) on a keyword model into ``--out``."""
    from ubiq.models.runtime.kws_enroll import (
        COMMANDS_FILE,
        enrol,
        load_enrolled,
        save_enrolled,
    )
    from ubiq.models.runtime.tasks import KeywordModel
    from ubiq.pipelines.speech.enroll import read_phrase_folders, read_utterance, record_takes
    from ubiq.pipelines.speech.vad import SileroVad

    folder = _folder(args)
    out = Path(args.out).expanduser()
    if args.times < 1 or args.record_seconds <= 0:
        raise ConfigError("--times must be >= 1 and --record-seconds > 0")
    base = None
    source = out if args.add else args.embedder
    try:
        model = KeywordModel.load(source, num_threads=args.threads, device="cpu")
    except WrongTaskError as error:
        raise ConfigError(
            f"--embedder {source}: {error}; --task kws needs a keyword model "
            "(ubiq train --task kws, or ubiq-commands-demo)"
        ) from error
    if args.add:
        base = load_enrolled(model.path, model.manifest)
        if base is None:
            raise ConfigError(f"{out} is a keyword model but has no enrolled voices to add to")
    if args.record:
        record_takes(
            folder / args.record,
            args.record,
            times=args.times,
            seconds=args.record_seconds,
            microphone=args.mic,
            prompt=lambda text: print(text, file=sys.stderr, flush=True),
        )
    files = read_phrase_folders(folder)
    vad = SileroVad(threads=1)
    started = time.perf_counter()
    utterances = {label: [read_utterance(p, vad) for p in paths] for label, paths in files.items()}
    voices = enrol(model, utterances, base=base)
    commands_source = Path(args.commands).expanduser() if args.commands else None
    if commands_source is None:
        commands_source = out / COMMANDS_FILE if args.add else _commands_beside(model.path)
        commands_source = commands_source if commands_source and commands_source.is_file() else None
    commands = _commands_yaml(commands_source, model.labels, voices.phrases)
    info = dict(model.manifest.decoder.params.get("enrolled", {}).get("embedder", {}))
    if not info:
        info = {"name": model.manifest.name, "file": model.path.name}
    manifest_path = save_enrolled(out, model, voices, commands_yaml=commands, embedder_info=info)
    took = time.perf_counter() - started
    count = sum(len(v) for v in files.values())
    print(f"enrolled {len(files)} phrase(s) from {count} utterances in {took:.2f} s -> {out}")
    for label, shots, threshold in zip(voices.labels, voices.shots, voices.thresholds):
        new = "" if label.partition("@")[0] in model.labels else " (new phrase)"
        print(f"  {label}: {shots} utterances, accepted from cosine {threshold:.3f}{new}")
    print(f"manifest: {manifest_path}")
    print(f"run it with: `ubiq listen --model {out} --source mic`")
    return 0
