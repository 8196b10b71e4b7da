"""``medvill-prep``'s command-line conventions: choices listed and enforced, one
--verbose/--quiet on the app, --version, the shared error style (pipeline/console.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import __version__
from pipeline.cli import Adapter, app
from pipeline.console import fail, info, setup_logging, user_errors
from pipeline.datasets import ADAPTERS

REPO = Path(__file__).resolve().parents[2]


def _flat(text: str) -> str:
    """Output without whitespace or box drawing: rich wraps and frames long lines."""
    return "".join(ch for ch in text if not ch.isspace() and ch not in "│╭╮╰╯─")


def _ingest(tmp_path: Path, *app_options: str) -> list[str]:
    return [
        *app_options,
        "ingest",
        "--dataset",
        "sample",
        "--out",
        str(tmp_path / "out"),
        "--params",
        str(REPO / "params.yaml"),
        "--raw",
        str(REPO / "data" / "sample"),
    ]


def test_adapter_choices_are_the_adapters_and_listed_in_help(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert [a.value for a in Adapter] == [*ADAPTERS, "vqa_rad"]
    # typer reads TERMINAL_WIDTH once, when its help renderer is first imported (by whichever
    # test renders help first): set the width it uses, so the one-line choice list fits.
    monkeypatch.setattr("typer.rich_utils.MAX_WIDTH", 300)
    result = CliRunner().invoke(
        app, ["images", "--help"], env={"COLUMNS": "300", "TERMINAL_WIDTH": "300"}
    )
    assert result.exit_code == 0
    assert (
        "sample|mimic_cxr|openi|synthetic|rsna_pneumonia|siim_pneumothorax|nih_boxes|object_cxr"
        "|vqa_rad" in _flat(result.output)
    )


def test_an_adapter_typo_exits_2_naming_the_choices(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, [*_ingest(tmp_path), "--adapter", "mimic"])
    assert result.exit_code == 2
    flat = _flat(result.output)
    assert (
        "'mimic'isnotoneof'sample','mimic_cxr','openi','synthetic','rsna_pneumonia',"
        "'siim_pneumothorax','nih_boxes','object_cxr','vqa_rad'" in flat
    )
    assert not (tmp_path / "out").exists()


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"medvill-prep {__version__}"


def test_quiet_drops_the_stage_summary_and_verbose_enables_debug(tmp_path: Path) -> None:
    runner = CliRunner()
    normal = runner.invoke(app, _ingest(tmp_path))
    assert normal.exit_code == 0, normal.output
    assert "ingest sample: 40 in →" in normal.output
    quiet = runner.invoke(app, _ingest(tmp_path, "--quiet"))
    assert quiet.exit_code == 0, quiet.output
    assert "ingest sample" not in quiet.output and quiet.output.strip() == ""
    assert not logging.getLogger("medvill").isEnabledFor(logging.INFO)
    # the records are written all the same
    assert (tmp_path / "out" / "interim" / "sample" / "ingest" / "records.parquet").is_file()
    verbose = runner.invoke(app, _ingest(tmp_path, "-v"))
    assert verbose.exit_code == 0 and logging.getLogger("pipeline").isEnabledFor(logging.DEBUG)
    setup_logging(None)
    assert logging.getLogger("medvill").getEffectiveLevel() == logging.INFO


def test_one_handler_however_often_logging_is_set_up() -> None:
    for flag in (None, True, False):
        setup_logging(flag)
    assert sum(h.get_name() == "medvill-cli" for h in logging.getLogger("medvill").handlers) == 1
    setup_logging(None)


def test_errors_print_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    import typer

    with pytest.raises(typer.Exit) as stopped, user_errors(KeyError):
        raise KeyError("unknown profile 'x'; params.yaml defines ['demo', 'paper']")
    assert stopped.value.exit_code == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: unknown profile 'x'; params.yaml defines ['demo', 'paper']"
    with pytest.raises(RuntimeError), user_errors(KeyError):  # a bug keeps its traceback
        raise RuntimeError("bug")
    with pytest.raises(typer.Exit):
        fail("data/raw/x.csv not found")
    assert capsys.readouterr().err.strip() == "error: data/raw/x.csv not found"
    setup_logging(False)
    info("hidden")
    setup_logging(None)
    info("shown")
    assert capsys.readouterr().err.strip() == "shown"
