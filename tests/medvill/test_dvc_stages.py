"""dvc.yaml's model stages: profiles are params and each downstream task is its own stage, so
a parameter change re-runs only what reads it (checked on DVC's own parse of dvc.yaml)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

dvc_repo = pytest.importorskip("dvc.repo")

REPO = Path(__file__).resolve().parents[2]
TASKS = ("classification", "retrieval", "vqa", "generation")


def _stages(tmp_path: Path, **profiles: str) -> dict[str, object]:
    """DVC's resolved stages of this repo's dvc.yaml with params.yaml's profiles set."""
    project = tmp_path / "project"
    dvc_repo.Repo.init(str(project), no_scm=True)
    shutil.copy2(REPO / "dvc.yaml", project / "dvc.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for block, profile in profiles.items():
        params[block]["profile"] = profile
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with dvc_repo.Repo(str(project)) as repo:
        return {stage.name: stage for stage in repo.index.stages}


def _params(stage: object) -> set[str]:
    return {key for dep in stage.deps if hasattr(dep, "params") for key in dep.params}


def _outs(stage: object) -> set[str]:
    return {str(out.def_path) for out in stage.outs}


def test_each_task_is_its_own_stage_depending_on_its_own_params(tmp_path: Path) -> None:
    stages = _stages(tmp_path)
    for task in TASKS:
        finetune = stages[f"finetune@sample-{task}"]
        assert finetune.cmd == f"medvill finetune {task} --dataset sample"  # profile from params
        assert _params(finetune) == {"finetune.profile", f"finetune.profiles.demo.{task}"}
        assert _outs(finetune) == {f"models/sample/{task}/final"}
        evaluate = stages[f"evaluate@sample-{task}"]
        assert evaluate.cmd == f"medvill evaluate {task} --dataset sample"
        assert _params(evaluate) == {"evaluate"}
        assert f"reports/sample/{task}/plots" in _outs(evaluate)
    pretrain = stages["pretrain@sample"]
    assert pretrain.cmd == "medvill pretrain --dataset sample"
    assert _params(pretrain) == {"pretrain.profile", "pretrain.profiles.demo"}


def test_switching_profile_switches_the_dependency(tmp_path: Path) -> None:
    stages = _stages(tmp_path, pretrain="paper", finetune="paper")
    assert _params(stages["pretrain@sample"]) == {"pretrain.profile", "pretrain.profiles.paper"}
    assert _params(stages["finetune@sample-vqa"]) == {
        "finetune.profile",
        "finetune.profiles.paper.vqa",
    }


def test_curves_are_plots_with_templates() -> None:
    """Every plot file an evaluation or pretraining writes is declared with a template."""
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    declared = {}
    for entry in plots:
        for name, spec in entry.items() if isinstance(entry, dict) else [(entry, None)]:
            if spec is None:
                declared[name] = "image"
                continue
            for path in spec["y"]:
                declared[path] = spec["template"]
    assert declared["models/sample/pretrain/metrics.csv"] == "linear"
    assert declared["reports/sample/classification/plots/roc.json"] == "simple"
    assert declared["reports/sample/classification/plots/precision_recall.json"] == "simple"
    assert declared["reports/sample/classification/plots/confusion.json"] == "confusion"
    assert declared["reports/sample/retrieval/plots/rank_histogram.csv"] == "linear"


def test_xvl_stages_follow_the_pretrain_profile(tmp_path: Path) -> None:
    """X-VL pretraining depends on its own family profile block only; the overlays stage
    reads its final checkpoint and writes the attention page."""
    stages = _stages(tmp_path, pretrain="paper")
    pretrain = stages["pretrain-xvl@sample"]
    assert pretrain.cmd == "medvill pretrain --model xvl --dataset sample"
    assert _params(pretrain) == {"pretrain.profile", "pretrain.families.xvl.profiles.paper"}
    assert "models/sample/pretrain-xvl/final" in _outs(pretrain)
    attention = stages["attention-xvl@sample"]
    assert "--checkpoint models/sample/pretrain-xvl/final" in attention.cmd
    assert _outs(attention) == {"reports/sample/xvl/attention"}
    zeroshot = stages["zeroshot-xvl@sample"]
    assert zeroshot.cmd == "medvill zeroshot --model xvl --dataset sample"
    assert _outs(zeroshot) == {"reports/sample/xvl/zeroshot_retrieval/metrics.json"}


def test_contrastive_families_fine_tune_before_their_evaluation(tmp_path: Path) -> None:
    """Each family's retrieval fine-tuning follows its pretraining and profile block; the
    evaluation scores the fine-tuned checkpoint beside the pretrained one."""
    stages = _stages(tmp_path, pretrain="paper")
    for model in ("convirt", "clip", "lovt"):
        finetune = stages[f"finetune_family@sample-{model}"]
        assert finetune.cmd == f"medvill finetune-zoo --dataset sample --model {model}"
        assert _params(finetune) == {
            "pretrain.profile", f"pretrain.families.{model}.profiles.paper",
        }  # fmt: skip
        tuned = f"models/sample/retrieval-{model}/final"
        assert tuned in _outs(finetune)
        assert f"models/sample/pretrain-{model}/final" in {str(d.def_path) for d in finetune.deps}
        evaluate = stages[f"evaluate_family@sample-{model}"]
        assert evaluate.cmd.endswith(f"--model {model} --finetuned {tuned}")
        assert tuned in {str(d.def_path) for d in evaluate.deps}


def test_xvl_tasks_are_stages_of_their_own_with_their_own_params(tmp_path: Path) -> None:
    """X-VL's fine-tuned tasks: one stage per dataset × task, on the family's own finetune
    block, writing beside the other X-VL outputs; the summary reads their metrics."""
    stages = _stages(tmp_path, finetune="paper")
    for task in ("classification", "retrieval", "vqa"):
        finetune = stages[f"finetune-xvl@sample-{task}"]
        assert finetune.cmd == f"medvill finetune {task} --model xvl --dataset sample"
        assert _params(finetune) == {
            "finetune.profile",
            f"finetune.families.xvl.profiles.paper.{task}",
        }
        assert _outs(finetune) == {f"models/sample/xvl/{task}/final"}
        assert "models/sample/pretrain-xvl/final" in {str(d.def_path) for d in finetune.deps}
        evaluate = stages[f"evaluate-xvl@sample-{task}"]
        assert evaluate.cmd == f"medvill evaluate {task} --model xvl --dataset sample"
        assert f"reports/sample/xvl/{task}/metrics.json" in _outs(evaluate)
        summary_deps = {str(d.def_path) for d in stages["summary"].deps}
        assert f"reports/sample/xvl/{task}/metrics.json" in summary_deps
    assert "finetune-xvl@sample-generation" not in stages
