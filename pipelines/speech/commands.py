"""Command lists: a commands file parsed, expanded to every phrase it allows, and a JSGF grammar.

Two file forms are read:

* **Plain text**: one phrase per line; ``#`` starts a comment. The intent of each phrase is
  the line itself.
* **YAML** (``.yaml`` / ``.yml``), phrases grouped by intent, with slots::

      wake: hey ubiq                      # optional wake phrase
      slots:
        room: [kitchen, bedroom, living room]
      pronunciations:                     # optional: espeak-ng pronounces any other word
        ubiq: Y UW B IH K
      intents:
        light: "turn {state:on|off} the {room} light"
        timer: ["set a timer for {minutes:one|two|five|ten} minutes"]
        time: what time is it

Pattern syntax (both forms): ``(a|b)`` alternatives, ``[word]`` optional words, ``{name}``
a slot whose values come from ``slots:``, ``{name:a|b}`` a slot with its values inline.
Every pattern is expanded to its phrases, so a recogniser only ever reports a phrase the
file allows, and the phrase maps back to exactly one intent and its slot values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ubiq.errors import ConfigError

__all__ = [
    "MAX_PHRASES",
    "CommandPhrase",
    "CommandSet",
    "expand_pattern",
    "load_commands",
    "normalize_text",
]

MAX_PHRASES = 2000
"""The most phrases a commands file may expand to."""

_WORD = re.compile(r"^[a-z0-9][a-z0-9']*$")
_TOKEN = re.compile(r"\s*(\(|\)|\[|\]|\||\{[^{}]*\}|[^\s()\[\]|{}]+)")
_YAML_KEYS = {"wake", "slots", "intents", "pronunciations"}


def normalize_text(text: str) -> str:
    """Lower case, punctuation other than apostrophes dropped, single spaces."""
    text = re.sub(r"[^a-z0-9' ]+", " ", text.lower().replace("-", " "))
    return " ".join(text.split())


@dataclass(frozen=True)
class CommandPhrase:
    """One phrase a commands file allows.

    Attributes:
        text: The words, normalised (lower case, single spaces).
        intent: The intent it belongs to.
        slots: Slot name to the value this phrase fills it with.
    """

    text: str
    intent: str
    slots: Mapping[str, str] = field(default_factory=dict)


def _tokens(pattern: str, where: str) -> list[str]:
    tokens, pos = [], 0
    pattern = pattern.strip()
    while pos < len(pattern):
        match = _TOKEN.match(pattern, pos)
        if not match:
            raise ConfigError(f"{where}: cannot read pattern {pattern!r} at {pattern[pos:]!r}")
        tokens.append(match.group(1))
        pos = match.end()
        while pos < len(pattern) and pattern[pos].isspace():
            pos += 1
    return tokens


class _Parser:
    """Recursive descent over the pattern tokens, producing lists of (words, slots)."""

    def __init__(self, tokens: list[str], slots: Mapping[str, Sequence[str]], where: str):
        self.tokens, self.pos, self.slots, self.where = tokens, 0, slots, where

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"{self.where}: {message}")

    def parse(self) -> list[tuple[tuple[str, ...], dict[str, str]]]:
        result = self.alternatives()
        if self.pos != len(self.tokens):
            raise self.fail(f"unbalanced {self.tokens[self.pos]!r} in pattern")
        return result

    def alternatives(self) -> list[tuple[tuple[str, ...], dict[str, str]]]:
        options = [self.sequence()]
        while self.pos < len(self.tokens) and self.tokens[self.pos] == "|":
            self.pos += 1
            options.append(self.sequence())
        return [item for option in options for item in option]

    def sequence(self) -> list[tuple[tuple[str, ...], dict[str, str]]]:
        result: list[tuple[tuple[str, ...], dict[str, str]]] = [((), {})]
        while self.pos < len(self.tokens) and self.tokens[self.pos] not in ("|", ")", "]"):
            part = self.item()
            result = [(w1 + w2, {**s1, **s2}) for w1, s1 in result for w2, s2 in part]
            if len(result) > MAX_PHRASES:
                raise self.fail(f"pattern expands to more than {MAX_PHRASES} phrases")
        return result

    def group(self, close: str) -> list[tuple[tuple[str, ...], dict[str, str]]]:
        inner = self.alternatives()
        if self.pos >= len(self.tokens) or self.tokens[self.pos] != close:
            raise self.fail(f"missing {close!r} in pattern")
        self.pos += 1
        return inner

    def item(self) -> list[tuple[tuple[str, ...], dict[str, str]]]:
        token = self.tokens[self.pos]
        self.pos += 1
        if token == "(":
            return self.group(")")
        if token == "[":
            return [((), {}), *self.group("]")]
        if token.startswith("{"):
            return self.slot(token[1:-1].strip())
        word = normalize_text(token)
        if not word:
            raise self.fail(f"{token!r} is not a word")
        return [(tuple(word.split()), {})]

    def slot(self, body: str) -> list[tuple[tuple[str, ...], dict[str, str]]]:
        name, _, inline = body.partition(":")
        name = name.strip()
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise self.fail(f"bad slot name {name!r} (letters, digits and _)")
        if inline:
            values = [v for v in inline.split("|")]
        elif name in self.slots:
            values = list(self.slots[name])
        else:
            known = sorted(self.slots) or "none"
            raise self.fail(f"unknown slot {{{name}}}; slots: {known}")
        out = []
        for value in values:
            words = normalize_text(str(value))
            if not words:
                raise self.fail(f"slot {name!r} has an empty value")
            out.append((tuple(words.split()), {name: words}))
        return out


def expand_pattern(
    pattern: str, slots: Mapping[str, Sequence[str]] | None = None, *, where: str = "pattern"
) -> list[tuple[str, dict[str, str]]]:
    """Every phrase a pattern allows, with its slot values.

    Args:
        pattern: Words with ``(a|b)``, ``[optional]``, ``{slot}`` and ``{slot:a|b}``.
        slots: Values of the ``{slot}`` references.
        where: Names the pattern in error messages (file and line).

    Returns:
        ``(phrase, slots)`` pairs in pattern order, without duplicates.

    Raises:
        ConfigError: For unbalanced brackets, an unknown slot, an empty phrase or more than
            :data:`MAX_PHRASES` phrases.
    """
    parser = _Parser(_tokens(pattern, where), slots or {}, where)
    seen: dict[str, dict[str, str]] = {}
    for words, values in parser.parse():
        text = " ".join(words)
        if not text:
            raise ConfigError(f"{where}: pattern {pattern!r} allows an empty phrase")
        seen.setdefault(text, values)
    return list(seen.items())


@dataclass(frozen=True)
class CommandSet:
    """The phrases of a commands file.

    Attributes:
        phrases: Every allowed phrase with its intent and slots, in file order.
        wake: The wake phrase (normalised), or ``None``.
        pronunciations: Word to ARPAbet phones for words outside the dictionary.
        source: The file it came from (for messages).
    """

    phrases: tuple[CommandPhrase, ...]
    wake: str | None = None
    pronunciations: Mapping[str, str] = field(default_factory=dict)
    source: str = "<commands>"

    def __post_init__(self) -> None:
        if not self.phrases:
            raise ConfigError(f"{self.source}: the commands file has no commands")

    @classmethod
    def from_phrases(
        cls,
        phrases: Iterable[str],
        *,
        wake: str | None = None,
        pronunciations: Mapping[str, str] | None = None,
        source: str = "<commands>",
    ) -> CommandSet:
        """A set from plain phrases (or patterns), each its own intent, with optional
        ``pronunciations`` (word to ARPAbet phones) as a commands file gives them."""
        out: list[CommandPhrase] = []
        for number, line in enumerate(phrases, 1):
            for text, slots in expand_pattern(line, where=f"{source}:{number}"):
                out.append(CommandPhrase(text, line.strip(), slots))
        wake = normalize_text(wake) if wake else None
        return cls(_unique(out, source), wake, dict(pronunciations or {}), source)

    @property
    def texts(self) -> tuple[str, ...]:
        """The phrases' words, in order."""
        return tuple(p.text for p in self.phrases)

    @property
    def words(self) -> list[str]:
        """Every word used by a phrase or the wake phrase, sorted."""
        words = {w for p in self.phrases for w in p.text.split()}
        words.update((self.wake or "").split())
        return sorted(words)

    def lookup(self, text: str) -> CommandPhrase | None:
        """The phrase whose normalised words equal ``text``, or ``None``."""
        text = normalize_text(text)
        for phrase in self.phrases:
            if phrase.text == text:
                return phrase
        return None

    def with_wake(self, wake: str | None) -> CommandSet:
        """A copy with another wake phrase (``None`` keeps the file's)."""
        if not wake:
            return self
        wake = normalize_text(wake)
        if not wake:
            raise ConfigError("the wake phrase must contain at least one word")
        return CommandSet(self.phrases, wake, self.pronunciations, self.source)

    def jsgf(self, *, include_wake: bool = True) -> str:
        """A JSGF grammar whose public rule matches exactly the phrases (and the wake phrase)."""
        alternatives = [f"( {p.text} )" for p in self.phrases]
        if include_wake and self.wake:
            alternatives.append(f"( {self.wake} )")
        body = "\n    | ".join(alternatives)
        return f"#JSGF V1.0;\ngrammar commands;\npublic <command> = {body} ;\n"


def _unique(phrases: list[CommandPhrase], source: str) -> tuple[CommandPhrase, ...]:
    seen: dict[str, CommandPhrase] = {}
    for phrase in phrases:
        other = seen.get(phrase.text)
        if other is not None and (other.intent, dict(other.slots)) != (
            phrase.intent,
            dict(phrase.slots),
        ):
            raise ConfigError(
                f"{source}: phrase {phrase.text!r} belongs to both intent {other.intent!r} "
                f"and {phrase.intent!r}"
            )
        seen.setdefault(phrase.text, phrase)
    if len(seen) > MAX_PHRASES:
        raise ConfigError(
            f"{source}: the commands expand to {len(seen)} phrases (max {MAX_PHRASES})"
        )
    return tuple(seen.values())


def _as_list(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, (str, int)) for v in value):
        return [str(v) for v in value]
    raise ConfigError(f"{where} must be a string or a non-empty list of strings, got {value!r}")


def _from_yaml(data: Any, source: str) -> CommandSet:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping with 'intents', got {type(data).__name__}")
    unknown = sorted(set(map(str, data)) - _YAML_KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; known: {sorted(_YAML_KEYS)}")
    slots_in = data.get("slots") or {}
    if not isinstance(slots_in, dict):
        raise ConfigError(f"{source}: slots must map slot names to lists of values")
    slots = {str(k): _as_list(v, f"{source}: slots.{k}") for k, v in slots_in.items()}
    intents = data.get("intents")
    if not isinstance(intents, dict) or not intents:
        raise ConfigError(f"{source}: the commands file has no commands (no 'intents' mapping)")
    phrases: list[CommandPhrase] = []
    for intent, patterns in intents.items():
        for pattern in _as_list(patterns, f"{source}: intents.{intent}"):
            where = f"{source}: intents.{intent}"
            for text, values in expand_pattern(pattern, slots, where=where):
                phrases.append(CommandPhrase(text, str(intent), values))
    prons_in = data.get("pronunciations") or {}
    if not isinstance(prons_in, dict):
        raise ConfigError(f"{source}: pronunciations must map words to phones")
    prons = {normalize_text(str(k)): " ".join(str(v).upper().split()) for k, v in prons_in.items()}
    wake = data.get("wake")
    if wake is not None and not normalize_text(str(wake)):
        raise ConfigError(f"{source}: wake must contain at least one word")
    wake_text = normalize_text(str(wake)) if wake is not None else None
    return CommandSet(_unique(phrases, source), wake_text, prons, source)


def load_commands(path: str | Path) -> CommandSet:
    """Reads a commands file (plain text or YAML; see the module docstring).

    Raises:
        ConfigError: For a missing or empty file, a bad pattern, an unknown YAML key, or a
            phrase claimed by two intents.
    """
    path = Path(path).expanduser()
    source = str(path)
    if not path.is_file():
        raise ConfigError(f"commands file {source} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read commands file {source}: {e}") from e
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: not valid YAML ({str(e).splitlines()[0]})") from e
        if data is None:
            raise ConfigError(f"{source}: the commands file has no commands")
        return _from_yaml(data, source)
    lines = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        lines.append(line)
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line]
    if not numbered:
        raise ConfigError(f"{source}: the commands file has no commands")
    phrases: list[CommandPhrase] = []
    for number, line in numbered:
        for phrase_text, values in expand_pattern(line, where=f"{source}:{number}"):
            phrases.append(CommandPhrase(phrase_text, line, values))
    return CommandSet(_unique(phrases, source), None, {}, source)
