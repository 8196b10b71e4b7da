"""The attention-mask ablation: DVC's matrix expands to the five arms with the right params,
each arm's mask reaches its checkpoints and metrics, and the paper-layout table renders from
real evaluations (tiny model, two arms, classification, run through the ``medvill`` CLI; the
other tasks' commands are the ones tests/medvill/test_tasks.py checks end to end)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from medvill import ablation as A
from medvill.cli import ABLATION_MASKS as CLI_MASKS
from medvill.cli import app
from medvill.config import MASK_TYPES
from medvill.report import compare
from medvill.tokenizer import load_tokenizer
from tests.medvill.conftest import make_tiny_profile
from tests.medvill.test_tasks import DS, build_project

REPO = Path(__file__).resolve().parents[2]
TASKS = ("classification", "retrieval", "vqa", "generation")
ARMS = ("bar", "noncross")  # the two arms run for real below
TASK = "classification"  # the task they are fine-tuned and evaluated on (the cheapest)


# --------------------------------------------------------------------------- DVC matrix


def _stages(tmp_path: Path, **ablation: Any) -> dict[str, Any]:
    """DVC's resolved stages of this repo's dvc.yaml with the ablation block changed."""
    dvc_repo = pytest.importorskip("dvc.repo")
    project = tmp_path / "dvcproject"
    dvc_repo.Repo.init(str(project), no_scm=True)
    shutil.copy2(REPO / "dvc.yaml", project / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["ablation"].update(ablation)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with dvc_repo.Repo(str(project)) as repo:
        return {stage.name: stage for stage in repo.index.stages}


def _params(stage: Any) -> set[str]:
    return {key for dep in stage.deps if hasattr(dep, "params") for key in dep.params}


def _outs(stage: Any) -> set[str]:
    return {str(out.def_path) for out in stage.outs}


def _deps(stage: Any) -> set[str]:
    return {str(dep.def_path) for dep in stage.deps if not hasattr(dep, "params")}


def test_the_mask_list_is_the_models_and_the_papers() -> None:
    assert set(A.ABLATION_MASKS) == set(MASK_TYPES) and len(A.ABLATION_MASKS) == 5
    assert CLI_MASKS == A.ABLATION_MASKS
    matrix = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for stage in ("ablation_pretrain", "ablation_finetune", "ablation_evaluate"):
        assert tuple(matrix[stage]["matrix"]["mask"]) == A.ABLATION_MASKS


def test_paper_rows_agree_with_the_summary_tables_medvill_row() -> None:
    """Two transcriptions of the paper: the ablation's BAR row and report.PAPER's MedViLL."""
    from medvill.report import PAPER

    for (task, key, _), value in zip(A.HEADLINE, A.PAPER_ROWS["bar"], strict=True):
        source = "VQA-RAD" if task == "vqa" else "MIMIC-CXR"
        assert PAPER[task]["metrics"][key][source] == value, (task, key)
    assert set(A.PAPER_ROWS) == set(A.ABLATION_MASKS)


def test_off_by_default_so_the_demo_repro_is_unchanged(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert params["ablation"]["datasets"] == []
    names = set(_stages(tmp_path))
    assert not {n for n in names if n.startswith("ablation")}
    assert "pretrain@sample" in names and "evaluate@sample-vqa" in names


def test_matrix_expands_to_five_arms_with_their_params(tmp_path: Path) -> None:
    stages = _stages(tmp_path, datasets=["synthetic"])
    names = {n for n in stages if n.startswith("ablation")}
    assert len(names) == 5 + 5 * 4 + 5 * 4 + 1
    for mask in A.ABLATION_MASKS:
        pre = stages[f"ablation_pretrain@synthetic-{mask}"]
        assert pre.cmd == (
            f"medvill pretrain --dataset synthetic --ablation {mask} --profile learn"
        )
        assert _params(pre) == {"ablation.pretrain_profile", "pretrain.profiles.learn"}
        arm = f"models/synthetic/ablation/{mask}"
        assert f"{arm}/pretrain/final" in _outs(pre)
        assert "data/shards/synthetic" in _deps(pre)
        for task in TASKS:
            fine = stages[f"ablation_finetune@synthetic-{mask}-{task}"]
            assert fine.cmd == (
                f"medvill finetune {task} --dataset synthetic --ablation {mask} --profile learn"
            )
            assert _params(fine) == {
                "ablation.finetune_profile",
                f"finetune.profiles.learn.{task}",
            }
            assert f"{arm}/pretrain/final" in _deps(fine)
            assert _outs(fine) == {f"{arm}/{task}/final"}
            ev = stages[f"ablation_evaluate@synthetic-{mask}-{task}"]
            assert ev.cmd == f"medvill evaluate {task} --dataset synthetic --ablation {mask}"
            assert f"{arm}/{task}/final" in _deps(ev)
            assert _params(ev) == {"evaluate"}
            folder = f"reports/synthetic/ablation/{mask}/{task}"
            assert {f"{folder}/metrics.json", f"{folder}/predictions.json"} <= _outs(ev)
    summary = stages["ablation_summary@synthetic"]
    assert summary.cmd == "medvill summary --ablation synthetic"
    assert {f"reports/synthetic/ablation/{m}" for m in A.ABLATION_MASKS} <= _deps(summary)
    assert _outs(summary) == {"reports/synthetic/ablation/summary.md"}


def test_profiles_are_params_of_the_arms(tmp_path: Path) -> None:
    stages = _stages(
        tmp_path, datasets=["sample"], pretrain_profile="demo", finetune_profile="paper"
    )
    pre = stages["ablation_pretrain@sample-s2s"]
    assert _params(pre) == {"ablation.pretrain_profile", "pretrain.profiles.demo"}
    assert pre.cmd.endswith("--ablation s2s --profile demo")
    fine = stages["ablation_finetune@sample-bi-vqa"]
    assert _params(fine) == {"ablation.finetune_profile", "finetune.profiles.paper.vqa"}


# --------------------------------------------------------------------------- real arms

FINETUNE = {"epochs": 1, "batch_size": 8, "lr": 1.0e-3, "train_backbone": False}


def _write_params(root: Path) -> None:
    """A params.yaml whose `learn` profiles are tiny (two pretraining steps, one epoch)."""
    profile = make_tiny_profile(epochs=1, max_steps=2, save_every_steps=100)
    params = {
        "pretrain": {"profile": "demo", "profiles": {"learn": profile}},
        "finetune": {
            "profile": "demo",
            "profiles": {
                "learn": {
                    "classification": {**FINETUNE, "blank": "ignore"},
                    "retrieval": FINETUNE,
                    "vqa": FINETUNE,
                    "generation": {**FINETUNE, "mask": "s2s", "max_length": 6},
                }
            },
        },
        "evaluate": {"bootstrap": 8, "bootstrap_ci_resamples": 200, "seed": 1},
        "ablation": {"datasets": [DS], "pretrain_profile": "learn", "finetune_profile": "learn"},
    }
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


def _cli(*args: str, root: Path) -> Any:
    """Run ``medvill`` in-process; ``output`` is unwrapped (errors are wrapped to the terminal)."""
    result = CliRunner().invoke(app, [*args, "--root", str(root)])
    result.flat = " ".join(result.output.split())
    return result


@pytest.fixture(scope="module")
def arms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two arms fine-tuned and evaluated through the CLI: Non-cross pretrained by the CLI, BAR
    from the project's own (BAR) pretraining checkpoint, copied in to save a second run."""
    root = tmp_path_factory.mktemp("ablation")
    build_project(root)
    main = root / "models" / DS / "pretrain" / "final"
    load_tokenizer(main).save_pretrained(str(root / "models" / DS / "tokenizer"))
    shutil.copytree(main, root / "models" / DS / "ablation" / "bar" / "pretrain" / "final")
    _write_params(root)
    done = _cli("pretrain", "-d", DS, "--ablation", "noncross", root=root)
    assert done.exit_code == 0, done.output
    for mask in ARMS:
        done = _cli("finetune", TASK, "-d", DS, "--ablation", mask, root=root)
        assert done.exit_code == 0, done.output
        done = _cli("evaluate", TASK, "-d", DS, "--ablation", mask, root=root)
        assert done.exit_code == 0, done.output
    return root


def _config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_each_arms_mask_reaches_its_checkpoints_and_metrics(arms: Path) -> None:
    models = arms / "models" / DS
    # the dataset's own pretraining checkpoint (BAR, built by the fixture) is untouched
    assert _config(models / "pretrain" / "final")["attention_mask_type"] == "bar"
    # the pretraining profile's budget (max_steps 2) ran under the arm's mask
    summary = json.loads(
        (models / "ablation" / "noncross" / "pretrain" / "metrics.json").read_text()
    )
    assert summary["steps"] == 2
    for mask in ARMS:
        arm = models / "ablation" / mask
        pretrain = arm / "pretrain" / "final"
        assert _config(pretrain)["attention_mask_type"] == mask
        final = arm / TASK / "final"
        assert _config(final)["attention_mask_type"] == mask
        info = json.loads((final / "task.json").read_text())
        assert Path(info["pretrained"]).resolve() == pretrain.resolve()
        report = arms / "reports" / DS / "ablation" / mask / TASK
        doc = json.loads((report / "metrics.json").read_text())
        assert doc["pretraining_mask"] == mask
        assert Path(doc["checkpoint"]).resolve() == final.resolve()
    # the Non-cross arm's weights differ from the BAR arm's: separate runs, not copies
    bar = (models / "ablation" / "bar" / "pretrain" / "final" / "model.safetensors").read_bytes()
    non = models / "ablation" / "noncross" / "pretrain" / "final" / "model.safetensors"
    assert bar != non.read_bytes()
    assert not (arms / "reports" / DS / "classification").exists()  # main run's folder unused


@pytest.mark.slow
def test_an_arm_refuses_another_arms_weights(arms: Path) -> None:
    wrong = arms / "models" / DS / "ablation" / "bi" / "pretrain" / "final"
    shutil.copytree(arms / "models" / DS / "ablation" / "noncross" / "pretrain" / "final", wrong)
    try:
        done = _cli("finetune", "vqa", "-d", DS, "--ablation", "bi", root=arms)
        assert done.exit_code == 2
        assert "pretrained with the 'noncross' mask, not 'bi'" in done.flat
        assert not (arms / "models" / DS / "ablation" / "bi" / "vqa").exists()
    finally:
        shutil.rmtree(wrong.parent.parent)
    done = _cli("pretrain", "-d", DS, "--ablation", "bi", "--mask", "s2s", root=arms)
    assert done.exit_code == 2 and "--mask s2s contradicts --ablation bi" in done.flat
    missing = _cli("finetune", "vqa", "-d", DS, "--ablation", "s2s", root=arms)
    assert missing.exit_code == 2
    assert "run `medvill pretrain --ablation s2s` for this arm first" in missing.flat


def _row(text: str, label: str, section: str) -> list[str]:
    """The cells of one table row (``label``) under the markdown heading ``section``."""
    part = text.split(f"## {section}")[1].split("\n## ")[0]
    line = next(row for row in part.splitlines() if row.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")][1:]


@pytest.mark.slow
def test_summary_renders_the_paper_layout_from_real_evaluations(arms: Path) -> None:
    done = _cli("summary", "--ablation", DS, root=arms)
    assert done.exit_code == 0, done.output
    text = (arms / "reports" / DS / "ablation" / "summary.md").read_text()
    reports = arms / "reports" / DS / "ablation"

    def stats(mask: str, task: str, key: str) -> dict[str, float]:
        doc = json.loads((reports / mask / task / "metrics.json").read_text())
        return doc["bootstrap"]["metrics"][key]

    def fmt(value: float) -> str:
        return f"{value:.3f}"

    # overview: rows = the five masks in the paper's order, columns = headline metrics
    overview = text.split("## Overview")[1].split("\n\n")[1]  # our table, not the paper's
    header = overview.strip().splitlines()[0]
    assert header.startswith("| pretraining mask | cls micro-AUROC | cls micro-F1 | R2I MRR")
    labels = [row.split("|")[1].strip() for row in overview.splitlines() if row.startswith("| ")]
    assert labels[1:] == ["MedViLL (BAR)", "Bi&S2S", "Bi", "S2S", "Non-cross"]
    s = stats("noncross", TASK, "micro_auroc")
    cell = f"{fmt(s['value'])} [{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]"
    assert _row(text, "Non-cross", "Overview")[0] == cell
    assert _row(text, "Non-cross", "Overview")[2:] == ["not run"] * 6  # other tasks not run
    assert _row(text, "Bi", "Overview") == ["not run"] * 8
    # per task (paper table II here): value (mean ± std) [interval], then p-values against BAR
    row = _row(text, "Non-cross", "Diagnosis classification")
    s = stats("noncross", TASK, "micro_f1")
    assert row[1] == (
        f"{fmt(s['value'])} ({fmt(s['mean'])} ± {fmt(s['std'])}) "
        f"[{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]"
    )
    tests = compare(
        "classification",
        reports / "bar" / "classification",
        reports / "noncross" / "classification",
        8,
        1,
        ci_resamples=200,
    )["metrics"]
    row = _row(text, "Non-cross", "Diagnosis classification")
    p = tests["micro_auroc"]["p_ttest_independent"]
    assert row[2] == (f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}")
    p = tests["micro_auroc"]["p_bootstrap"]
    assert row[4] == (f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}")
    assert _row(text, "MedViLL (BAR)", "Diagnosis classification")[2:] == ["–"] * 4
    assert "Resamples (mean ± std, interval): 8 and 200." in text
    assert "| Non-cross | 0.980 | 0.824 | 0.547 | 0.546 | 0.734 | 0.531 | 0.120 | 0.007 |" in text


@pytest.mark.slow
def test_summary_refuses_a_report_from_the_wrong_pretraining(arms: Path) -> None:
    reports = arms / "reports" / DS / "ablation"
    shutil.copytree(reports / "bar" / TASK, reports / "s2s" / TASK)
    try:
        wrong = r"s2s/classification/metrics.json was evaluated on a model pretrained with the"
        with pytest.raises(ValueError, match=wrong + r" 'bar' mask, not 's2s'"):
            A.ablation_markdown(arms, DS)
    finally:
        shutil.rmtree(reports / "s2s")
    with pytest.raises(FileNotFoundError, match="no ablation results under"):
        A.ablation_markdown(arms, "other")
