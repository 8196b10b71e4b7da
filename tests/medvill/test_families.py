"""The family registry and the contract the shared trainer relies on."""

from __future__ import annotations

import pytest

from medvill.families import _FAMILIES, FAMILY_NAMES, get_family
from medvill.pretrain import METRIC_COLUMNS, Paths


def test_registry_names_match_the_import_light_list() -> None:
    assert tuple(_FAMILIES) == FAMILY_NAMES


def test_unknown_family_is_refused_with_the_known_names() -> None:
    known = r"\['clip', 'convirt', 'lovt', 'medvill'\]"
    with pytest.raises(ValueError, match=rf"unknown model family 'blip'; known: {known}"):
        get_family("blip")


def test_medvill_family_keeps_the_historical_columns_and_folder(tmp_path) -> None:
    family = get_family("medvill")
    assert family.metric_columns == METRIC_COLUMNS
    assert Paths.for_dataset("sample", tmp_path).out == tmp_path / "models/sample/pretrain"
    other = Paths.for_dataset("sample", tmp_path, family="lovt").out
    assert other == tmp_path / "models/sample/pretrain-lovt"


def test_medvill_row_turns_summed_stats_into_global_batch_metrics() -> None:
    """Two ranks each summed (mlm, irm, correct); the row averages the losses over ranks and
    divides the correct decisions by the global pair count."""
    row = get_family("medvill").row([3.0, 1.2, 6.0], [40.0, 8.0], 2)
    assert row == pytest.approx(
        {"loss": 2.1, "mlm_loss": 1.5, "irm_loss": 0.6, "irm_accuracy": 0.75}
    )
