"""The character strings of paper section 4.1, from text built in the test."""

import pytest
import torch

from ffcore.data.text import ALPHABET, clean_text, decode, encode, gutenberg_body, load_aesop, text_strings

BOOK = """The Project Gutenberg EBook of Fables
*** START OF THIS PROJECT GUTENBERG EBOOK FABLES ***
THE WOLF AND THE LAMB
Wolf, meeting with a Lamb -- astray from the fold; resolved (not to lay) violent hands!
*** END OF THIS PROJECT GUTENBERG EBOOK FABLES ***
licence text that must not be used"""


def test_the_alphabet_is_the_papers_thirty_symbols():
    assert len(ALPHABET) == 30 and len(set(ALPHABET)) == 30
    assert set(ALPHABET) == set("abcdefghijklmnopqrstuvwxyz") | set(" ,;.")


def test_cleaning_lowercases_deletes_and_keeps_words_apart():
    assert clean_text("The WOLF\nand-the  Lamb;\t(yes)!") == "the wolf andthe lamb; yes"  # a line break is a space; "-" is deleted
    body = clean_text(gutenberg_body(BOOK))
    assert body.startswith("the wolf and the lamb wolf, meeting") and "licence" not in body and "gutenberg" not in body


def test_strings_are_consecutive_pieces_and_the_held_out_ones_follow():
    train, held = text_strings(BOOK, count=3, length=10, held_out=2)
    assert train.shape == (3, 10) and held.shape == (2, 10)
    text = clean_text(gutenberg_body(BOOK))
    assert decode(torch.cat([train, held]).flatten()) == text[:50]
    assert int(train.max()) < 30 and int(train.min()) >= 0


def test_too_short_a_text_and_foreign_symbols_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="characters after cleaning"):
        text_strings(BOOK, count=100, length=100)
    with pytest.raises(ValueError, match="outside the 30-symbol alphabet"):
        encode("abc!")
    with pytest.raises(FileNotFoundError, match="aesop.txt"):
        load_aesop(tmp_path)
    (tmp_path / "aesop.txt").write_text(BOOK)
    train, held = load_aesop(tmp_path, count=2, length=20, held_out=1)
    assert train.shape == (2, 20) and held.shape == (1, 20)
