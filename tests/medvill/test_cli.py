"""``medvill``'s command-line conventions, the same as ``medvill-prep``'s: choices as Enums
listed in --help and enforced, --verbose/--quiet on the app, --version, ``error:`` lines."""

from __future__ import annotations

import logging
from pathlib import Path

import yaml
from typer.testing import CliRunner

from medvill import __version__
from medvill.cli import Mask, Profile, Task, app
from medvill.config import MASK_TYPES
from medvill.tasks import TASKS

REPO = Path(__file__).resolve().parents[2]
WIDE = {"COLUMNS": "200", "TERMINAL_WIDTH": "200"}


def _flat(text: str) -> str:
    return "".join(ch for ch in text if not ch.isspace() and ch not in "│╭╮╰╯─")


def test_choices_are_the_code_and_params_names() -> None:
    assert tuple(t.value for t in Task) == TASKS
    assert tuple(m.value for m in Mask) == MASK_TYPES
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    profiles = tuple(p.value for p in Profile)
    assert sorted(params["pretrain"]["profiles"]) == sorted(profiles)
    assert sorted(params["finetune"]["profiles"]) == sorted(profiles)
    assert params["pretrain"]["profile"] in profiles and params["finetune"]["profile"] in profiles


def test_help_lists_the_choices() -> None:
    runner = CliRunner()
    pretrain = _flat(runner.invoke(app, ["pretrain", "--help"], env=WIDE).output)
    assert "<demo|learn|paper>" in pretrain and "<bar|bi|s2s|bi_s2s|noncross>" in pretrain
    finetune = _flat(runner.invoke(app, ["finetune", "--help"], env=WIDE).output)
    assert "<classification|retrieval|vqa|generation>" in finetune
    top = _flat(runner.invoke(app, ["--help"], env=WIDE).output)
    assert "--verbose-v--quiet-q" in top and "--version" in top


def test_typos_exit_2_naming_the_valid_choices(tmp_path: Path) -> None:
    runner = CliRunner()
    task = runner.invoke(app, ["evaluate", "retreival", "-d", "x", "--root", str(tmp_path)])
    assert task.exit_code == 2
    assert "'retreival'isnotoneof'classification','retrieval','vqa','generation'" in _flat(
        task.output
    )
    mask = runner.invoke(app, ["pretrain", "-d", "x", "--mask", "bidirectional"])
    assert mask.exit_code == 2
    assert "'bidirectional'isnotoneof'bar','bi','s2s','bi_s2s','noncross'" in _flat(mask.output)
    profile = runner.invoke(app, ["finetune", "vqa", "-d", "x", "--profile", "full"])
    assert profile.exit_code == 2 and "'full'isnotoneof'demo','learn','paper'" in _flat(
        profile.output
    )


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"medvill {__version__}"


def test_missing_input_is_an_error_line_and_quiet_sets_warning_level(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "--quiet",
            "evaluate",
            "vqa",
            "-d",
            "nosuch",
            "--root",
            str(tmp_path),
            "--params",
            str(REPO / "params.yaml"),
        ],
    )
    assert result.exit_code == 2
    flat = _flat(result.output)
    assert (
        flat.startswith("error:nomodelcheckpointat") and "medvillfinetunevqa--datasetnosuch" in flat
    )
    assert "Traceback" not in result.output
    assert not logging.getLogger("medvill.tasks").isEnabledFor(logging.INFO)
    runner.invoke(app, ["--verbose", "summary", "--root", str(tmp_path)])
    assert logging.getLogger("medvill.tasks").isEnabledFor(logging.DEBUG)
    result = runner.invoke(app, ["summary", "--root", str(tmp_path)])
    assert result.exit_code == 0 and result.output.strip().endswith("summary.md")
    assert logging.getLogger("medvill").getEffectiveLevel() == logging.INFO


def test_profile_defaults_to_the_params_profile(tmp_path: Path) -> None:
    """DVC runs `medvill finetune <task>` without --profile: params' finetune.profile decides
    (an unknown one is an error line naming the profiles params.yaml has)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["finetune"]["profile"] = "nightly"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = CliRunner().invoke(app, ["finetune", "vqa", "-d", "x", "--root", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknownfinetuneprofile'nightly';params.yamlhas['demo','learn','paper']" in _flat(
        result.output
    )
