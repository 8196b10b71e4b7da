"""The family registry and the contract the shared trainer relies on."""

from __future__ import annotations

import pytest

from medvill.families import _FAMILIES, FAMILY_NAMES, get_family
from medvill.pretrain import METRIC_COLUMNS, Paths


def test_registry_names_match_the_import_light_list() -> None:
    assert tuple(_FAMILIES) == FAMILY_NAMES


def test_unknown_family_is_refused_with_the_known_names() -> None:
    known = r"\['clip', 'convirt', 'lovt', 'medvill', 'xvl'\]"
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


def test_cli_lists_the_families_and_refuses_what_does_not_apply(tmp_path) -> None:
    """--model lists every registered family; --mask with another family and evaluate-zoo of
    medvill are user errors (exit 2, an error line), before any work."""
    from typer.testing import CliRunner

    from medvill.cli import app

    runner = CliRunner()
    wide = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}
    help_text = "".join(runner.invoke(app, ["pretrain", "--help"], env=wide).output.split())
    assert "<medvill|convirt|clip|lovt|xvl>" in help_text
    mask = runner.invoke(app, ["pretrain", "-d", "x", "--model", "lovt", "--mask", "bi",
                               "--root", str(tmp_path)])  # fmt: skip
    assert mask.exit_code == 2 and "--mask applies to medvill only, not to lovt" in mask.output
    zoo = runner.invoke(app, ["evaluate-zoo", "-d", "x", "--model", "medvill",
                              "--root", str(tmp_path)])  # fmt: skip
    assert zoo.exit_code == 2 and "medvill is evaluated per task" in zoo.output
    xvl = runner.invoke(app, ["evaluate-zoo", "-d", "x", "--model", "xvl",
                              "--root", str(tmp_path)])  # fmt: skip
    assert xvl.exit_code == 2 and "medvill zeroshot --model xvl" in xvl.output
    tune = runner.invoke(app, ["finetune-zoo", "-d", "x", "--model", "medvill",
                               "--root", str(tmp_path)])  # fmt: skip
    assert tune.exit_code == 2 and "medvill finetune <task>" in tune.output
    both = runner.invoke(app, ["evaluate-zoo", "-d", "x", "--model", "clip", "--finetuned", "f",
                               "--zero-shot-only", "--root", str(tmp_path)])  # fmt: skip
    assert both.exit_code == 2 and "--finetuned and --zero-shot-only contradict" in both.output
    typo = runner.invoke(app, ["pretrain", "-d", "x", "--model", "blip"])
    assert typo.exit_code == 2 and "'blip' is not one of" in typo.output
