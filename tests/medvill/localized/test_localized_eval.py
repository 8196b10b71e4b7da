"""`medvill localized-eval` end to end on a tiny synthetic corpus, and its error messages."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from medvill import metrics as M
from medvill.cli import LOCALIZED_TASKS, app
from medvill.localized import experiment
from medvill.localized.experiment import (
    EvalPlan,
    LocalizedSettings,
    batches,
    compare_to_checkpoint,
    fraction_subset,
)
from medvill.localized.results import localized_eval
from medvill.localized.targets import read_split

REPO = Path(__file__).resolve().parents[3]
TINY = {
    "image_size": 64, "steps": 2, "batch_size": 4, "lr": 1.0e-3, "fractions": [0.1, 1.0],
    "seeds": [1, 2], "inits": ["pretrained", "imagenet", "random"], "variants": ["frozen"],
    "fpn_channels": 16, "proposals": 32,
}  # fmt: skip


def _params(**profile) -> dict:
    return {
        "evaluate": {"bootstrap": 30, "bootstrap_ci_resamples": 200, "seed": 1},
        "localized_eval": {"profile": "tiny", "profiles": {"tiny": {**TINY, **profile}}},
    }


def test_task_names_and_profiles_match_the_code() -> None:
    assert LOCALIZED_TASKS == experiment.LOCALIZED_TASKS
    params = yaml.safe_load((REPO / "params.yaml").read_text())["localized_eval"]
    for block in params["profiles"].values():
        LocalizedSettings.from_dict(block)  # every key known, every value valid
    with pytest.raises(ValueError, match="unknown keys \\['step'\\]"):
        LocalizedSettings.from_dict({"step": 3})
    with pytest.raises(ValueError, match="fractions must lie in"):
        LocalizedSettings.from_dict({"fractions": [0.0, 1.0]})


def test_fractions_and_batches_are_seeded() -> None:
    assert len(fraction_subset(28, 0.01, 1)) == 1 and len(fraction_subset(28, 0.1, 1)) == 3
    assert fraction_subset(28, 1.0, 4).tolist() == list(range(28))
    assert fraction_subset(28, 0.1, 1).tolist() == fraction_subset(28, 0.1, 1).tolist()
    assert fraction_subset(200, 0.1, 1).tolist() != fraction_subset(200, 0.1, 2).tolist()
    drawn = batches(fraction_subset(10, 0.5, 3), 2, 5, 3)
    assert [len(b) for b in drawn] == [2] * 5
    flat = [int(i) for b in drawn for i in b]
    subset = fraction_subset(10, 0.5, 3).tolist()
    assert sorted(flat[:5]) == subset and set(flat) == set(subset)  # each pass: the subset once


def _mean_of(scores: list[float]) -> M.Compute:
    """The bootstrap Compute of a per-image score's mean (as Dice is)."""
    values = np.asarray(scores)
    return lambda weights: {"dice": weights @ values / weights.sum(axis=1)}


def test_checkpoint_is_compared_paired_with_each_arm() -> None:
    # test images of very different difficulty; the checkpoint is 0.05 better on every one
    hard_and_easy = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    better = [x + 0.05 for x in hard_and_easy]
    plan = EvalPlan(task="segmentation", train=[], test=[None] * 10, checkpoint=None,
                    bootstrap=30, ci_resamples=400, bootstrap_seed=7)  # fmt: skip
    cells = {
        ("pretrained", "frozen", 1.0): _mean_of(better),
        ("random", "frozen", 1.0): _mean_of(hard_and_easy),
        ("pretrained", "frozen", 0.1): _mean_of(hard_and_easy),
        ("random", "frozen", 0.1): _mean_of(hard_and_easy),
        ("random", "finetuned", 1.0): _mean_of(better),  # no checkpoint cell: no comparison
    }
    runs = [
        {"init": init, "variant": variant, "fraction": fraction, "per_seed": seeds}
        for (init, variant, fraction), seeds in {
            ("pretrained", "frozen", 1.0): [0.5, 0.4, 0.6],
            ("random", "frozen", 1.0): [0.3, 0.5, 0.2],
            ("pretrained", "frozen", 0.1): [0.1, 0.1, 0.1],
            ("random", "frozen", 0.1): [0.1, 0.1, 0.1],
            ("random", "finetuned", 1.0): [0.9, 0.9, 0.9],
        }.items()
    ]
    rows = compare_to_checkpoint(plan, cells, runs, "dice")
    assert [(r["baseline"], r["variant"], r["fraction"]) for r in rows] == [
        ("random", "frozen", 1.0), ("random", "frozen", 0.1),
    ]  # fmt: skip
    full, same = rows
    assert full["pretrained_value"] == pytest.approx(0.5)
    assert full["baseline_value"] == pytest.approx(0.45)
    assert full["difference"] == pytest.approx(0.05)
    # paired: every resample sees the same 0.05 gap, so the interval is that gap and p is 0 …
    assert full["ci_low"] == pytest.approx(0.05) and full["ci_high"] == pytest.approx(0.05)
    assert full["p_bootstrap"] == 0.0 and full["ci_resamples"] == 400
    assert (full["seeds_better"], full["seeds"]) == (2, 3)
    # … while the two arms' own intervals overlap widely
    arm = {name: M.bootstrap(_mean_of(x), 10, 30, 7, 0.95, 400)["dice"]
           for name, x in (("checkpoint", better), ("random", hard_and_easy))}  # fmt: skip
    assert arm["checkpoint"]["ci_low"] < arm["random"]["ci_high"] - 0.2
    assert same["difference"] == 0.0 and same["p_bootstrap"] == 1.0
    assert (same["seeds_better"], same["seeds"]) == (0, 3)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_end_to_end(task, localized_corpus, lovt_checkpoint, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # no ImageNet
    torch.set_num_threads(1)
    out = tmp_path / "out"
    seeds = [1] if task == "detection" else [1, 2]  # detection is the slower head
    doc = localized_eval(localized_corpus["root"], "synthetic", "lovt", task, _params(seeds=seeds),
                         checkpoint=lovt_checkpoint, out=out)  # fmt: skip
    saved = json.loads((out / "results.json").read_text())
    assert saved["runs"] == json.loads(json.dumps(doc["runs"]))
    assert (
        set(doc["skipped"]) == {"imagenet"}
        and "not in the local cache" in doc["skipped"]["imagenet"]
    )
    assert [(r["init"], r["fraction"]) for r in doc["runs"]] == [
        ("pretrained", 0.1), ("pretrained", 1.0), ("random", 0.1), ("random", 1.0),
    ]  # fmt: skip
    n_train = doc["train_images"]
    for run in doc["runs"]:
        assert run["train_images"] == max(1, math.ceil(run["fraction"] * n_train))
        assert len(run["per_seed"]) == len(seeds)
        assert run["value"] == pytest.approx(sum(run["per_seed"]) / len(seeds))
        assert 0.0 <= run["ci_low"] <= run["ci_high"] <= 1.0 and 0.0 <= run["value"] <= 1.0
    values = {(r["init"], r["fraction"]): r["value"] for r in doc["runs"]}
    assert [(c["baseline"], c["fraction"]) for c in doc["comparisons"]] == [
        ("random", 0.1), ("random", 1.0),
    ]  # fmt: skip
    for comparison in doc["comparisons"]:
        assert comparison["difference"] == pytest.approx(
            values["pretrained", comparison["fraction"]] - values["random", comparison["fraction"]]
        )
        assert comparison["ci_low"] <= comparison["ci_high"]
        assert 0.0 <= comparison["p_bootstrap"] <= 1.0 and comparison["seeds"] == len(seeds)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == {
        f"{r['init']}/frozen/{r['fraction'] * 100:g}%": r["value"] for r in doc["runs"]
    }
    assert (out / f"{task}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert doc["metric"] == {"detection": "map", "segmentation": "dice"}[task]
    negatives = sum(not s.mask.any() for s in read_split(localized_corpus["index"], "test", 64))
    expected_floor = negatives / doc["test_images"] if task == "segmentation" else 0.0
    assert doc["empty_prediction_floor"] == pytest.approx(expected_floor)
    if task == "segmentation":  # same seeds, same numbers
        again = localized_eval(
            localized_corpus["root"], "synthetic", "lovt", task,
            _params(inits=["random"], fractions=[1.0]), checkpoint=lovt_checkpoint,
            out=tmp_path / "again",
        )  # fmt: skip
        assert again["runs"][0]["per_seed"] == doc["runs"][-1]["per_seed"]


def _invoke(*args: str):
    return CliRunner().invoke(app, ["localized-eval", *args], env={"COLUMNS": "200"})


@pytest.mark.slow
def test_cli_errors(localized_corpus, tiny_data, lovt_checkpoint, tmp_path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params()))
    root = str(localized_corpus["root"])
    result = _invoke("-d", "synthetic", "-m", "lovt", "-t", "detection", "--root", root,
                     "--params", str(params))  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "error: no model checkpoint at" in result.output
    assert "medvill pretrain --model lovt --dataset synthetic" in " ".join(result.output.split())
    # a dataset whose shards have no regions (the tiny classification shards)
    tiny_root = tmp_path / "tinyroot"
    (tiny_root / "data/shards").mkdir(parents=True)
    (tiny_root / "data/shards/tiny").symlink_to(Path(tiny_data["index"]).parent)
    result = _invoke("-d", "tiny", "-m", "lovt", "-t", "segmentation", "--root", str(tiny_root),
                     "--params", str(params), "--checkpoint", str(lovt_checkpoint))  # fmt: skip
    assert result.exit_code == 2
    flat = " ".join(result.output.split())
    assert "error: dataset 'tiny' has no localized annotations" in flat
    result = _invoke("-d", "synthetic", "-m", "xvl", "-t", "detection")
    assert result.exit_code == 2 and "'xvl' is not one of" in " ".join(result.output.split())
    help_text = " ".join(_invoke("--help").output.split())
    assert "detection|segmentation" in help_text.replace(" ", "") and "mAP" in help_text
    # and a run that works prints each cell and the checkpoint's paired difference to random
    params.write_text(yaml.safe_dump(_params(inits=["pretrained", "random"], fractions=[1.0],
                                             seeds=[1])))  # fmt: skip
    result = _invoke("-d", "synthetic", "-m", "lovt", "-t", "segmentation", "--root", root,
                     "--params", str(params), "--checkpoint", str(lovt_checkpoint),
                     "--out", str(tmp_path / "cli"))  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output[result.output.index("{") :])
    runs, minus = printed["runs"], printed["checkpoint_minus"]["random/frozen/100%"]
    assert set(runs) == {"pretrained/frozen/100%", "random/frozen/100%"}
    assert minus["difference"] == pytest.approx(
        runs["pretrained/frozen/100%"] - runs["random/frozen/100%"], abs=2e-4
    )
    assert minus["ci_low"] <= minus["ci_high"] and 0.0 <= minus["p_bootstrap"] <= 1.0


def test_dvc_stages_run_the_demo_corpus_and_both_tasks(tmp_path) -> None:
    """DVC's own parse of dvc.yaml: the corpus stage, one evaluation per task, each depending
    on the chosen localized_eval profile only (and the bootstrap of `evaluate`)."""
    import shutil

    dvc_repo = pytest.importorskip("dvc.repo")
    dvc_repo.Repo.init(str(tmp_path), no_scm=True)
    shutil.copy2(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    with dvc_repo.Repo(str(tmp_path)) as repo:
        stages = {stage.name: stage for stage in repo.index.stages}
    assert "medvill-prep all --dataset localized_demo --adapter synthetic" in (
        stages["localized_corpus@localized_demo"].cmd
    )
    for task in LOCALIZED_TASKS:
        stage = stages[f"localized_eval@localized_demo-lovt-{task}"]
        assert stage.cmd == (
            f"medvill localized-eval --dataset localized_demo --model lovt --task {task} "
            "--pretrained-on sample"
        )
        params = {key for dep in stage.deps if hasattr(dep, "params") for key in dep.params}
        assert params == {"localized_eval.profile", "localized_eval.profiles.demo", "evaluate"}
        assert f"reports/localized_demo/localized-lovt-{task}/results.json" in {
            str(d.def_path) for d in stages["summary"].deps
        }
