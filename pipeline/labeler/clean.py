"""Report cleaning, optional section extraction and sentence splitting (docs/labeler.md §1.2-1.4).

Cleaning must be byte-faithful: mention regexes and the sentence short-cut run on the cleaned
text, so any difference here changes labels.

Sentence splitting differs from the original by necessity: the original uses NLTK's Punkt
model, whose data cannot be downloaded here. :func:`split_sentences` reproduces the Punkt
decisions that matter on cleaned (lower-cased, ``". "``-normalised) text: every ``.``/``?``/``!``
followed by whitespace ends a sentence, except after a known abbreviation, and except after a
number (``1.``) or a single-letter initial (``p.``) when the next word starts with a lower-case
letter or is punctuation — Punkt's orthographic heuristic, which always says "not a sentence
start" for lower-case words it knows. Because cleaned text is all lower-case, list numbers
therefore join the *following* sentence, as with Punkt. Remaining differences come only from
Punkt's learned abbreviation and collocation lists.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

_SLASH_BETWEEN_LETTERS = re.compile(r"(?<=[a-zA-Z])/(?=[a-zA-Z])")
_WHITESPACE = re.compile(r"\s+")
_EMPTY_SENTENCE = re.compile(r"\.\s+\.")
_PUNCT_SPACE = str.maketrans({".": ". ", ",": ", "})
_PRINTABLE = frozenset(string.printable)

#: NegBio's section-title regex (docs/labeler.md §1.3); IGNORECASE | MULTILINE, scanned unanchored.
SECTION_TITLES = re.compile(
    r"("
    r"ABDOMEN AND PELVIS|CLINICAL HISTORY|CLINICAL INDICATION|COMPARISON|COMPARISON STUDY DATE"
    r"|EXAM|EXAMINATION|FINDINGS|HISTORY|IMPRESSION|INDICATION"
    r"|MEDICAL CONDITION|PROCEDURE|REASON FOR EXAM|REASON FOR STUDY|REASON FOR THIS EXAMINATION"
    r"|TECHNIQUE"
    r"):|FINAL REPORT",
    re.IGNORECASE | re.MULTILINE,
)

#: Multi-letter abbreviations after which Punkt does not break (a subset of its English list
#: that occurs in radiology text). Single letters are handled as initials.
ABBREVIATIONS = frozenset({"dr", "mr", "mrs", "ms", "jr", "sr", "st", "vs", "e.g", "i.e"})
_NUMBER = re.compile(r"^-?[.,]?\d[\d,.\-]*\.?$")
_INITIAL = re.compile(r"^[^\W\d]\.$")
_CANDIDATE = re.compile(r"[.?!](?=\s|$)")


def clean(text: str) -> str:
    """Apply the labeler's cleaning steps in order, then NegBio's non-printable filter.

    The printable filter comes from ``text2bioc`` and silently drops every non-ASCII character.
    ``\\r\\n`` cannot survive the whitespace collapse, so it needs no separate step.
    """
    text = text.lower()
    text = text.replace("and/or", "or")
    text = _SLASH_BETWEEN_LETTERS.sub(" or ", text)
    text = text.replace("..", ".")
    text = text.translate(_PUNCT_SPACE)
    text = _WHITESPACE.sub(" ", text).strip()
    text = _EMPTY_SENTENCE.sub(".", text)
    return "".join(ch for ch in text if ch in _PRINTABLE)


def extract_sections(text: str, sections: Sequence[str], strict: bool = False) -> str:
    """Keep only the passages that follow the listed (lower-case) section titles.

    Mirrors NegBio's ``split_document`` + the labeler's selection: each title is its own
    passage, the text between titles becomes untitled passages (stripped, empty ones dropped),
    and a wanted title contributes the *immediately following* untitled passage. Nothing found:
    empty text with ``strict``, else the full text.
    """
    wanted = set(sections)
    passages: list[tuple[str | None, str]] = []
    position = 0
    for match in SECTION_TITLES.finditer(text):
        between = text[position : match.start()].strip()
        if between:
            passages.append((None, between))
        title = match.group().strip()
        title = title[:-1].strip() if title.endswith(":") else title
        passages.append((title, match.group()))
        position = match.end()
    tail = text[position:].strip()
    if tail:
        passages.append((None, tail))
    chosen = [
        passages[i + 1][1]
        for i, (title, _) in enumerate(passages)
        if title is not None
        and title in wanted
        and i + 1 < len(passages)
        and passages[i + 1][0] is None
    ]
    if chosen:
        return " ".join(chosen)
    return "" if strict else text


@dataclass(frozen=True)
class Sentence:
    """A sentence of a cleaned report: its text and its character offset in the report."""

    text: str
    offset: int


def _breaks_after(token: str, next_token: str | None) -> bool:
    """Punkt's decision for a token that ends in ``.``, ``?`` or ``!`` (see module doc)."""
    if not token.endswith("."):
        return True
    core = token.lstrip("([{\"'")
    if core.endswith("..") or core.strip(".") == "":
        return core.strip(".") == ""  # a lone "." is a break; "x.." is not
    if core[:-1] in ABBREVIATIONS:
        return False
    if (_NUMBER.match(core) or _INITIAL.match(core)) and next_token is not None:
        first = next_token[0]
        if first.islower() or next_token in (";", ":", ",", ".", "!", "?"):
            return False
    return True


def split_sentences(text: str) -> list[Sentence]:
    """Split cleaned text into sentences with offsets (a Punkt approximation, see module doc)."""
    sentences: list[Sentence] = []
    start = 0
    for match in _CANDIDATE.finditer(text):
        end = match.end()
        token_start = text.rfind(" ", 0, end) + 1
        token = text[token_start:end]
        following = text[end:].split(None, 1)
        next_token = following[0] if following else None
        if next_token is None or _breaks_after(token, next_token):
            piece = text[start:end].strip()
            if piece:
                sentences.append(Sentence(piece, text.index(piece, start)))
            start = end
    piece = text[start:].strip()
    if piece:
        sentences.append(Sentence(piece, text.index(piece, start)))
    return sentences
