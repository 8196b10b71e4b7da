"""Split a report text into sentences (LoVT aligns image regions with report sentences).

Rules (docs/sections.md §6), applied to the text the sections stage chose:

1. Line endings are normalised; a blank line (MIMIC's paragraph break ``"\\n \\n"`` included)
   always ends a sentence; other line breaks are wrapping and become spaces.
2. Inside a paragraph a sentence ends after ``.``, ``!`` or ``?`` (with any closing quotes or
   brackets) followed by whitespace, when the next word starts with an upper-case letter, a
   digit or ``_`` (MIMIC's ``___`` anonymisation). In a report without any upper-case letter
   (lower-cased corpora, tokenised text such as ``normal . the lungs``) every such mark ends a
   sentence.
3. A single period never ends a sentence after a known abbreviation (``Dr.``, ``vs.``,
   ``e.g.``, ``a.m.``, ``approx.``, …) — a doubled one (``p.m..``) does — nor inside a number
   (``2.5 cm`` has no space after the period).
4. A list marker at the start of a sentence (``1.``, ``2)``, ``-``, ``*``) is dropped: it
   numbers the sentence, it is not part of it.
5. Runs of whitespace become one space; a piece without any letter (``___.``, ``.``) is not
   a sentence and is dropped.

The result for an empty text is an empty list.
"""

from __future__ import annotations

import re

__all__ = ["ABBREVIATIONS", "split_sentences"]

#: Words (lower case, without the final period) after which a period does not end a sentence.
ABBREVIATIONS: frozenset[str] = frozenset(
    {
        "dr", "drs", "mr", "mrs", "ms", "prof", "vs", "e.g", "i.e", "etc", "approx", "a.m",
        "p.m", "fig", "cf", "resp", "incl",
    }
)  # fmt: skip

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_END = re.compile(r"[.!?]+[\"')\]]*(?=\s)")
_LIST_MARKER = re.compile(r"^(?:\(?\d{1,2}[.)]|[-*•])\s+")
_LETTER = re.compile(r"[A-Za-z]")


def _ends_sentence(paragraph: str, end: int, mark_start: int, lower_cased: bool) -> bool:
    """Does the mark ending at ``end`` (starting at ``mark_start``) close a sentence?"""
    word = re.search(r"(\S+)$", paragraph[:mark_start])
    single_period = paragraph[mark_start:end].rstrip("\"')]") == "."
    if single_period and word is not None:
        previous = word.group(1).lower().lstrip("([\"'")
        if previous in ABBREVIATIONS:
            return False
    following = paragraph[end:].lstrip().lstrip("\"'([")
    if not following:
        return True
    if lower_cased:
        return True
    return following[0].isupper() or following[0].isdigit() or following[0] == "_"


def _split_paragraph(paragraph: str, lower_cased: bool) -> list[str]:
    pieces: list[str] = []
    start = 0
    for match in _END.finditer(paragraph):
        if _ends_sentence(paragraph, match.end(), match.start(), lower_cased):
            pieces.append(paragraph[start : match.end()])
            start = match.end()
    pieces.append(paragraph[start:])
    return pieces


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` in order (rules in the module docstring)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lower_cased = not any(ch.isupper() for ch in text)
    sentences: list[str] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        flat = " ".join(paragraph.split())
        for piece in _split_paragraph(flat, lower_cased):
            sentence = _LIST_MARKER.sub("", piece.strip()).strip()
            if _LETTER.search(sentence):
                sentences.append(sentence)
    return sentences
