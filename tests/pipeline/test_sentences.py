"""Sentence splitting of the chosen report text (pipeline/sentences.py, docs/sections.md §7),
on the real reports of data/sample and tests/fixtures and on the rule's edge cases."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.datasets.common import decode_report
from pipeline.sections import parse_report
from pipeline.sentences import split_sentences

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"\(?\d{1,2}[.)]|[-*•]")


def chosen_sentences(path: Path) -> list[str]:
    """What the sections stage stores for a report file under MedViLL's policy."""
    parsed = parse_report(path.read_text(encoding="utf-8"), "longest", True)
    assert json.loads(parsed.sentences_json) == split_sentences(parsed.chosen_text)
    return json.loads(parsed.sentences_json)


def test_mimic_report_findings_split_across_wrapped_lines() -> None:
    """The MIMIC-CXR website example: double spaces between sentences, lines wrapped inside
    sentences with MIMIC's leading space, a last sentence without a period."""
    assert chosen_sentences(ROOT / "tests/fixtures/reports/mimic_cxr_website_example.txt") == [
        "Cardiac size cannot be evaluated.",
        "Large left pleural effusion is new.",
        "Small right effusion is new.",
        "The upper lungs are clear.",
        "Right lower lobe opacities are better seen in prior CT.",
        "There is no pneumothorax.",
        "There are mild degenerative changes in the thoracic spine",
    ]


def test_numbered_impression_drops_the_list_markers() -> None:
    """data/sample S024: '1. …' items over two paragraphs."""
    assert chosen_sentences(ROOT / "data/sample/reports/S024.txt") == [
        "Left pleural effusion with adjacent atelectasis.",
        "Right effusion is also present.",
        "Cardiomegaly without overt edema.",
    ]


def test_lower_cased_negbio_report_splits_at_every_period() -> None:
    """NegBio's lower-case report: no capital letters, so '. ' always ends a sentence, and the
    doubled period after 'p.m.' ends one although 'p.m.' is an abbreviation."""
    assert chosen_sentences(ROOT / "tests/fixtures/reports/negbio_00000086.txt") == [
        "pa and lat cxr at 7:34 p.m..",
        "heart and mediastinum are stable.",
        "lungs are unchanged.",
        "air- filled cystic changes.",
        "no pneumothorax.",
        "osseous structures unchanged scoliosis",
    ]


def kept_words(text: str) -> list[str]:
    """Words in order, without list markers and letter-less tokens (rules 4 and 5)."""
    return [w for w in text.split() if re.search(r"[A-Za-z0-9]", w) and not MARKER.fullmatch(w)]


def test_every_sample_report_gives_sentences_that_rebuild_its_text() -> None:
    """All 25 demo reports (decoded as ingest does: some are UTF-16 or Windows-1252): at
    least one sentence each, and the sentences hold every word of the chosen text in order
    (only list markers are dropped)."""
    reports = sorted((ROOT / "data/sample/reports").glob("*.txt"))
    assert len(reports) >= 25
    for path in reports:
        text, _ = decode_report(path.read_bytes())
        parsed = parse_report(text, "longest", True)
        sentences = json.loads(parsed.sentences_json)
        assert sentences, path.name
        assert kept_words(" ".join(sentences)) == kept_words(parsed.chosen_text), path.name


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Dr. ___ was notified at 10:15 a.m. on ___. No pneumothorax.",
         ["Dr. ___ was notified at 10:15 a.m. on ___.", "No pneumothorax."]),
        ("Nodule measures 2.5 cm. Stable since 2019.",
         ["Nodule measures 2.5 cm.", "Stable since 2019."]),
        ("Is there effusion? No. Heart is normal!",
         ["Is there effusion?", "No.", "Heart is normal!"]),
        ("Compare e.g. prior film. Unchanged.", ["Compare e.g. prior film.", "Unchanged."]),
        ("the heart size is normal . the lungs are clear .",
         ["the heart size is normal .", "the lungs are clear ."]),
        ("Findings as above; see prior.\n \n___.\n \n2) Small effusion.",
         ["Findings as above; see prior.", "Small effusion."]),
        ("Unchanged.  (Right) base clear.", ["Unchanged.", "(Right) base clear."]),
        ("", []),
        ("  \n ", []),
    ],
)  # fmt: skip
def test_rules(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


def test_windows_line_endings_split_like_unix_ones() -> None:
    unix = "Heart is normal.\n\nLungs are\nclear."
    assert split_sentences(unix.replace("\n", "\r\n")) == split_sentences(unix)
    assert split_sentences(unix) == ["Heart is normal.", "Lungs are clear."]
