"""Pronunciations for any spelling: espeak-ng's phonemes turned into ARPAbet.

PocketSphinx knows the words of its dictionary; wake words are often names ("mycroft",
"jarvis", "ubiq") that it lacks. espeak-ng pronounces any spelling (``espeak-ng -q -x -v
en-us WORD`` prints its phoneme mnemonics, such as ``m'IkrO2ft``), and this module maps
those mnemonics to the ARPAbet phones of PocketSphinx's US-English acoustic model (``M IH
K R AO F T``), longest symbol first. Stress and length marks are dropped (the acoustic
model has no stress); a glottal stop has no ARPAbet phone and is skipped.
"""

from __future__ import annotations

import functools
import shutil
import subprocess

from ubiq.errors import ConfigError

__all__ = ["ESPEAK_TO_ARPABET", "arpabet", "espeak_phonemes", "pronounce"]

ESPEAK_TO_ARPABET: dict[str, str] = {
    # vowels and diphthongs (espeak-ng's English mnemonics, US values)
    "aI@": "AY ER", "aI3": "AY ER", "aU@": "AW ER", "i@3": "IH R",
    "A@": "AA R", "A:": "AA", "aI": "AY", "aU": "AW", "a#": "AH", "aa": "AE",
    "e@": "EH R", "eI": "EY", "E2": "EH", "@2": "AH", "@5": "AH", "@L": "AH L",
    "3:": "ER", "i:": "IY", "I#": "IH", "I2": "IH", "i@": "IH R", "O:": "AO", "O2": "AO",
    "O@": "AO R", "o@": "AO R", "OI": "OY", "oU": "OW", "02": "AA", "u:": "UW", "U@": "UH R",
    "u@": "UW R", "a": "AE", "A": "AA", "e": "EH", "E": "EH", "@": "AH", "3": "ER",
    "i": "IY", "I": "IH", "O": "AO", "0": "AA", "V": "AH", "u": "UW", "U": "UH",
    # consonants
    "tS": "CH", "dZ": "JH", "t#": "T", "d#": "D", "n-": "N", "l-": "L", "r-": "R", "m-": "M",
    "p": "P", "b": "B", "t": "T", "d": "D", "k": "K", "g": "G", "f": "F", "v": "V",
    "T": "TH", "D": "DH", "s": "S", "z": "Z", "S": "SH", "Z": "ZH", "h": "HH", "x": "HH",
    "m": "M", "n": "N", "N": "NG", "l": "L", "r": "R", "w": "W", "j": "Y",
    "?": "",
}  # fmt: skip
"""espeak-ng mnemonic -> ARPAbet phones (space-separated; empty: no phone)."""

_DROPPED = set("',=_;%| \t\n")
"""Stress, length-free syllable and word marks that carry no phone."""


def split_mnemonics(mnemonics: str, table: dict[str, str], *, strict: bool = True) -> list[str]:
    """Phones of espeak-ng mnemonics through ``table``, longest symbol first. A symbol the
    table lacks raises (``strict``) or is skipped; a stray length mark is always skipped.

    Raises:
        ConfigError: If ``strict`` and a symbol is not one the table knows, naming it.
    """
    text = "".join(ch for ch in mnemonics if ch not in _DROPPED)
    longest = max(len(symbol) for symbol in table)
    phones: list[str] = []
    position = 0
    while position < len(text):
        for size in range(min(longest, len(text) - position), 0, -1):
            symbol = text[position : position + size]
            if symbol in table:
                phones.extend(table[symbol].split())
                position += size
                break
        else:
            symbol = text[position]
            if strict and symbol != ":":  # ":" is a length mark after a short vowel
                raise ConfigError(f"no ARPAbet phone for espeak-ng's {symbol!r} in {mnemonics!r}")
            position += 1
    return phones


def arpabet(mnemonics: str) -> str:
    """ARPAbet phones of espeak-ng's phoneme mnemonics (``m'IkrO2ft`` -> ``M IH K R AO F
    T``).

    Raises:
        ConfigError: If a symbol is not one this table knows, naming it.
    """
    return " ".join(split_mnemonics(mnemonics, ESPEAK_TO_ARPABET))


@functools.lru_cache(maxsize=512)
def espeak_phonemes(word: str, voice: str = "en-us") -> str:
    """espeak-ng's phoneme mnemonics for ``word`` (``espeak-ng -q -x -v VOICE``).

    Raises:
        ConfigError: If espeak-ng is not installed or fails.
    """
    program = shutil.which("espeak-ng")
    if program is None:
        raise ConfigError("espeak-ng is not installed (apt install espeak-ng)")
    try:
        done = subprocess.run(
            [program, "-q", "-x", "-v", voice, "--", word],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ConfigError(f"espeak-ng failed on {word!r}: {error}") from error
    if done.returncode != 0:
        raise ConfigError(f"espeak-ng failed on {word!r}: {done.stderr.strip()}")
    return done.stdout.strip()


def pronounce(word: str) -> str:
    """ARPAbet phones for any spelling of one word, through espeak-ng.

    Raises:
        ConfigError: If espeak-ng is missing or gives no phone for the word.
    """
    phones = arpabet(espeak_phonemes(word))
    if not phones:
        raise ConfigError(f"espeak-ng gives no phones for {word!r}")
    return phones
