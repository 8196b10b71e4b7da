"""Mention extraction with the original's regex semantics and quirks (docs/labeler.md §2.3)."""

from __future__ import annotations

from pipeline.labeler.mentions import extract_mentions
from pipeline.labeler.phrases import default_phrases


def _found(sentence: str) -> list[tuple[str, str, int, int]]:
    return [
        (m.observation, m.text, m.start, m.end)
        for m in extract_mentions(sentence, default_phrases())
    ]


def test_no_word_boundaries() -> None:
    assert ("Support Devices", "tube", 15, 19) in _found("no evidence of tuberculosis.")
    assert ("Pleural Effusion", "effusion", 0, 8) in _found("effusions are present")


def test_overlapping_mentions_are_all_kept() -> None:
    found = _found("nodular opacity and pleural thickening. the heart size")
    assert ("Lung Lesion", "nodular opacity", 0, 15) in found
    assert ("Lung Opacity", "opaci", 8, 13) in found
    assert ("Pleural Other", "pleural thickening", 20, 38) in found
    assert ("No Finding", "thickening", 28, 38) in found
    assert ("Cardiomegaly", "the heart", 40, 49) in found
    assert ("Cardiomegaly", "heart size", 44, 54) in found


def test_unmentions_only_block_their_own_observation() -> None:
    found = _found("pleural scar at the apex.")
    assert not any(o == "Lung Opacity" for o, *_ in found)  # "scar" blocked by "pleural scar"
    assert ("Pleural Other", "pleural scar", 0, 12) in found
    assert not any(o == "Pleural Effusion" for o, *_ in _found("small pericardial effusion"))
    assert not any(o == "Lung Lesion" for o, *_ in _found("massive effusion"))
    assert not any(o == "Lung Lesion" for o, *_ in _found("calcified nodule"))


def test_generated_unmentions_and_the_double_space_quirk() -> None:
    assert not any(o == "Cardiomegaly" for o, *_ in _found("tube tip over the heart"))
    assert ("Cardiomegaly", "heart size", 4, 14) in _found("the heart size is normal")
    # " over the  mediastinum" has a double space, so it never blocks " mediastinum"
    found = _found("clip over the mediastinum")
    assert ("Enlarged Cardiomediastinum", " mediastinum", 13, 25) in found


def test_mention_order_is_observation_then_phrase() -> None:
    observations = [o for o, *_ in _found("no pneumothorax or effusion, stable cardiomegaly")]
    assert observations == ["Cardiomegaly", "Pleural Effusion", "Pneumothorax"]
