"""Shipped data, cleaning, section extraction and sentence splitting (docs/labeler.md §1-2.2)."""

from __future__ import annotations

from pipeline.labeler.clean import Sentence, clean, extract_sections, split_sentences
from pipeline.labeler.detect import default_rules
from pipeline.labeler.phrases import DATA_DIR, default_phrases


def test_phrase_and_rule_counts_match_the_original() -> None:
    phrases = default_phrases()
    assert phrases.count_mentions() == 148
    assert len(phrases.mentions) == 14
    assert {k: len(v) for k, v in phrases.mentions.items()}["No Finding"] == 53
    file_unmentions = {
        k: v
        for k, v in phrases.unmentions.items()
        if k not in ("Cardiomegaly", "Enlarged Cardiomediastinum")
    }
    assert sum(len(v) for v in file_unmentions.values()) == 5
    assert file_unmentions["Lung Lesion"] == ["calcified nodul", "massive", "massengale"]
    assert len(phrases.unmentions["Cardiomegaly"]) == 84
    assert len(phrases.unmentions["Enlarged Cardiomediastinum"]) == 84
    rules = default_rules()
    assert (len(rules.pre_negation_uncertainty), len(rules.negation)) == (9, 77)
    assert len(rules.post_negation_uncertainty) == 67
    assert (DATA_DIR / "LICENSE").read_text().startswith("MIT License")


def test_underscores_become_spaces_and_generated_unmentions_keep_the_double_space() -> None:
    phrases = default_phrases()
    assert " mediastinum" in phrases.mentions["Enlarged Cardiomediastinum"]
    assert " line " in phrases.mentions["Support Devices"]
    assert "drain " in phrases.mentions["Support Devices"]
    assert "over the  mediastinum" in phrases.unmentions["Enlarged Cardiomediastinum"]
    assert "in the left heart" in phrases.unmentions["Cardiomegaly"]
    assert "over the cardiac silhouette" in phrases.unmentions["Cardiomegaly"]
    assert not any("cardiomegaly" in u for u in phrases.unmentions["Cardiomegaly"])


def test_cleaning_steps_in_order() -> None:
    assert clean("Atelectasis/Infiltrate") == "atelectasis or infiltrate"
    assert clean("effusion and/or edema") == "effusion or edema"
    assert clean("1/2 normal") == "1/2 normal"  # digits are not letters
    assert clean("Stable..  Heart,normal") == "stable. heart, normal"
    assert clean("No edema.\n\n . Clear.") == "no edema. clear."
    assert clean("  a\r\n\tb  ") == "a b"
    assert clean("épanchement ☃ pleural") == "panchement  pleural"  # non-ASCII dropped last
    assert clean("") == ""


def test_sentence_split_offsets_and_list_numbers() -> None:
    text = clean("1. Left effusion. Right effusion is also present.\n\n2. Cardiomegaly.")
    sentences = split_sentences(text)
    assert [s.text for s in sentences] == [
        "1. left effusion.",
        "right effusion is also present.",
        "2. cardiomegaly.",
    ]
    for s in sentences:
        assert text[s.offset : s.offset + len(s.text)] == s.text


def test_sentence_split_initials_abbreviations_and_numbers() -> None:
    text = clean(
        "Seen at 7:34 p.m.. Heart and mediastinum are stable. Size 2.5 cm. Dr. smith called."
    )
    assert [s.text for s in split_sentences(text)] == [
        "seen at 7:34 p. m. heart and mediastinum are stable.",
        "size 2.",  # Punkt breaks after a number followed by a digit
        "5 cm.",
        "dr. smith called.",
    ]
    assert split_sentences("is it an effusion? no") == [
        Sentence("is it an effusion?", 0),
        Sentence("no", 19),
    ]
    assert split_sentences("") == []


def test_section_extraction() -> None:
    text = clean("FINDINGS: Heart is normal. IMPRESSION: No acute disease. Comparison: none.")
    assert extract_sections(text, ["impression"]) == "no acute disease."
    assert (
        extract_sections(text, ["findings", "impression"]) == "heart is normal. no acute disease."
    )
    assert extract_sections(text, ["technique"]) == text
    assert extract_sections(text, ["technique"], strict=True) == ""
    # EXAMINATION: matches as a whole although EXAM comes first in the alternation
    assert extract_sections("examination: chest. exam: x", ["examination"]) == "chest."
