"""Commands files: parsing, expansion to phrases, slots, JSGF, and bad input."""

from __future__ import annotations

import re

import pytest

from ubiq.errors import ConfigError
from ubiq.pipelines.speech.commands import (
    CommandSet,
    expand_pattern,
    load_commands,
    normalize_text,
)


def test_expand_alternatives_optionals_and_slots():
    phrases = expand_pattern(
        "[please] turn {state:on|off} the {room} light", {"room": ["kitchen", "living room"]}
    )
    texts = [text for text, _ in phrases]
    assert len(texts) == 8
    assert "please turn off the living room light" in texts
    assert dict(phrases)["turn on the kitchen light"] == {"state": "on", "room": "kitchen"}
    assert expand_pattern("(open|close) the (garage|front) door")[3] == ("close the front door", {})


def test_normalize_text():
    assert normalize_text("  Turn ON the Kitchen-Light! ") == "turn on the kitchen light"
    assert normalize_text("what's up") == "what's up"


def test_plain_file(tmp_path):
    path = tmp_path / "commands.txt"
    path.write_text(
        "# lights\nturn on the light\n\nTurn off the light  # comment\n(start|stop) recording\n"
    )
    commands = load_commands(path)
    assert commands.texts == (
        "turn on the light",
        "turn off the light",
        "start recording",
        "stop recording",
    )
    assert commands.phrases[1].intent == "Turn off the light"
    assert commands.lookup("STOP recording").intent == "(start|stop) recording"
    assert commands.lookup("turn on the radio") is None
    assert commands.wake is None


def test_yaml_file_with_intents_slots_wake_and_pronunciations(tmp_path):
    path = tmp_path / "commands.yaml"
    path.write_text(
        "wake: Hey Ubiq\n"
        "slots:\n  room: [kitchen, bedroom]\n"
        "pronunciations:\n  ubiq: y uw b ih k\n"
        "intents:\n"
        "  light: 'turn {state:on|off} the {room} light'\n"
        '  time: [what time is it, "what\'s the time"]\n'
    )
    commands = load_commands(path)
    assert len(commands.phrases) == 6
    phrase = commands.lookup("turn off the bedroom light")
    assert (phrase.intent, dict(phrase.slots)) == ("light", {"state": "off", "room": "bedroom"})
    assert commands.lookup("what's the time").intent == "time"
    assert commands.wake == "hey ubiq"
    assert commands.pronunciations == {"ubiq": "Y UW B IH K"}
    assert "ubiq" in commands.words and "bedroom" in commands.words
    grammar = commands.jsgf()
    assert grammar.startswith("#JSGF V1.0;")
    assert "( turn off the bedroom light )" in grammar and "( hey ubiq )" in grammar
    assert "( hey ubiq )" not in commands.jsgf(include_wake=False)
    assert commands.with_wake("ok house").wake == "ok house"


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("empty.txt", "# only a comment\n\n", "has no commands"),
        ("empty.yaml", "", "has no commands"),
        ("noint.yaml", "slots: {}\n", "has no commands"),
        ("typo.yaml", "intent:\n  a: hello\n", "unknown key(s) ['intent']"),
        ("slot.yaml", "intents:\n  a: turn on the {room} light\n", "unknown slot {room}"),
        ("paren.txt", "turn (on|off the light\n", "missing ')'"),
        ("close.txt", "turn on) the light\n", "unbalanced ')'"),
        ("opt.txt", "[please]\n", "allows an empty phrase"),
        ("twice.yaml", "intents:\n  a: hello there\n  b: hello there\n", "both intent 'a'"),
        ("bad.yaml", "intents: [\n", "not valid YAML"),
    ],
)
def test_bad_commands_files(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_commands(path)


def test_missing_file_and_empty_set(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_commands(tmp_path / "nope.txt")
    with pytest.raises(ConfigError, match="no commands"):
        CommandSet(())
    with pytest.raises(ConfigError, match="more than 2000"):
        expand_pattern(" ".join(["(a|b|c)"] * 8))
