"""Character strings for the next-character model of paper section 4.1.

"248 strings of 100 characters each were taken from Aesop's fables. Upper case letters were
converted to lower case and characters were deleted if they were not in the 30 symbol alphabet
consisting of the lower case letters, space, comma, semi-colon, and full stop."

The paper does not say which 248 strings; here they are the first 248 consecutive 100-character
pieces of the cleaned text (the Project Gutenberg header and licence removed), and the pieces that
follow them are held out. Line breaks and runs of white space become one space before the
deletion, so that words on either side of a line break stay apart.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

ALPHABET = "abcdefghijklmnopqrstuvwxyz ,;."
assert len(ALPHABET) == 30
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_GUTENBERG_START = re.compile(r"^\*\*\* ?START OF.*?\*\*\*\s*$", re.MULTILINE)
_GUTENBERG_END = re.compile(r"^\*\*\* ?END OF.*?\*\*\*\s*$", re.MULTILINE)
AESOP_FILE = "aesop.txt"


def clean_text(raw: str) -> str:
    """Lower case, white space runs as one space, every character outside ALPHABET deleted."""
    text = re.sub(r"\s+", " ", raw.lower())
    text = "".join(c for c in text if c in _INDEX)
    return re.sub(" +", " ", text).strip()


def gutenberg_body(raw: str) -> str:
    """The book between Project Gutenberg's START and END lines (all of it if they are absent)."""
    start, end = _GUTENBERG_START.search(raw), _GUTENBERG_END.search(raw)
    return raw[start.end() if start else 0:end.start() if end else len(raw)]


def encode(text: str) -> torch.Tensor:
    """A string of ALPHABET characters -> int64 symbol indices."""
    bad = sorted({c for c in text if c not in _INDEX})
    if bad:
        raise ValueError(f"characters outside the 30-symbol alphabet: {bad!r}")
    return torch.tensor([_INDEX[c] for c in text], dtype=torch.int64)


def decode(symbols: torch.Tensor) -> str:
    return "".join(ALPHABET[int(i)] for i in symbols)


def text_strings(raw: str, count: int, length: int = 100, held_out: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(count, length) training strings and (held_out, length) strings that follow them."""
    if count < 1 or length < 2 or held_out < 0:
        raise ValueError(f"need count >= 1, length >= 2, held_out >= 0; got {count}, {length}, {held_out}")
    text = clean_text(gutenberg_body(raw))
    needed = (count + held_out) * length
    if len(text) < needed:
        raise ValueError(f"the text has {len(text)} characters after cleaning; {count} + {held_out} strings "
                         f"of {length} need {needed}")
    symbols = encode(text[:needed]).view(count + held_out, length)
    return symbols[:count], symbols[count:]


def load_aesop(data_dir: str | Path, count: int = 248, length: int = 100,
               held_out: int = 248) -> tuple[torch.Tensor, torch.Tensor]:
    """The paper's 248 strings of 100 characters (and ``held_out`` more) from ``data_dir/aesop.txt``."""
    path = Path(data_dir) / AESOP_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: --data-dir must be a folder holding {AESOP_FILE} "
                                "(Project Gutenberg eBook #21, Aesop's Fables)")
    return text_strings(path.read_text(encoding="utf-8-sig"), count, length, held_out)
