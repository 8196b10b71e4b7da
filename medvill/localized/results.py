"""``medvill localized-eval``: read the dataset, run the grid, write what a reader needs.

Outputs under ``reports/<dataset>/localized-<model>-<task>/``:

* ``results.json`` — the settings, the classes, where each initialisation came from, the arms
  skipped and why (e.g. no ImageNet weights on this machine), and per (init, variant, fraction):
  training images, each seed's metric, their mean (``value``), the bootstrap mean ± std and
  interval, ``seed_std`` and the seconds it took; ``comparisons``: the checkpoint's arm minus
  each other arm, paired on the same bootstrap resamples (docs/localized_eval.md §6);
* ``metrics.json`` — the headline values only, ``<init>/<variant>/<percent>%`` (a DVC metric);
* ``<task>.png`` — the metric against the training fraction (log scale), one line per
  initialisation with its interval, one panel per variant.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from medvill.localized.experiment import (
    LOCALIZED_TASKS,
    EvalPlan,
    LocalizedSettings,
    run_grid,
)
from medvill.localized.targets import read_split, require_regions
from medvill.tasks.common import EvalSettings, pyplot, require_checkpoint, savefig, write_json

log = logging.getLogger(__name__)


def report_folder(root: Path, dataset: str, model: str, task: str) -> Path:
    return Path(root) / "reports" / dataset / f"localized-{model}-{task}"


def settings_for(params: dict[str, Any], profile: str | None) -> tuple[str, LocalizedSettings]:
    """(profile name, its settings) from ``localized_eval`` of params.yaml."""
    block = params.get("localized_eval") or {}
    name = profile or str(block.get("profile") or "demo")
    profiles = block.get("profiles") or {}
    if name not in profiles:
        raise KeyError(f"localized_eval.profiles has no {name!r} (has {sorted(profiles)})")
    return name, LocalizedSettings.from_dict(dict(profiles[name]))


def percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def headline(doc: dict[str, Any]) -> dict[str, float]:
    return {
        f"{run['init']}/{run['variant']}/{percent(run['fraction'])}": run["value"]
        for run in doc["runs"]
    }


def plot(doc: dict[str, Any], path: Path) -> None:
    """Metric against training fraction, per initialisation, one panel per variant."""
    plt = pyplot()
    variants = list(dict.fromkeys(r["variant"] for r in doc["runs"])) or ["frozen"]
    fig, axes = plt.subplots(1, len(variants), figsize=(5 * len(variants), 3.6), squeeze=False)
    for ax, variant in zip(axes[0], variants, strict=True):
        for init in dict.fromkeys(r["init"] for r in doc["runs"]):
            rows = sorted(
                (r for r in doc["runs"] if r["init"] == init and r["variant"] == variant),
                key=lambda r: r["fraction"],
            )
            x = [r["fraction"] * 100 for r in rows]
            y = [r["value"] for r in rows]
            low = [r["value"] - r["ci_low"] for r in rows]
            high = [r["ci_high"] - r["value"] for r in rows]
            ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=init)
        floor = doc.get("empty_prediction_floor")
        if floor:
            ax.axhline(floor, color="grey", linestyle="--", linewidth=1, label="predict nothing")
        ax.set_xscale("log")
        ticks = sorted({r["fraction"] * 100 for r in doc["runs"]})
        ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.set_xlabel("training images (%)")
        ax.set_ylabel(doc["metric"])
        ax.set_title(f"{doc['task']} · {variant}")
        ax.legend(fontsize=8)
    skipped = ", ".join(f"{k}: skipped" for k in doc["skipped"])
    title = f"{doc['dataset']} · {doc['model']} checkpoint"
    fig.suptitle(f"{title} ({skipped})" if skipped else title, fontsize=9)
    fig.tight_layout()
    savefig(fig, path)
    plt.close(fig)


def localized_eval(
    root: Path,
    dataset: str,
    model: str,
    task: str,
    params: dict[str, Any],
    profile: str | None = None,
    checkpoint: Path | None = None,
    pretrained_on: str | None = None,
    out: Path | None = None,
) -> dict[str, Any]:
    """Run the protocol for one checkpoint, dataset and task; write and return results.json."""
    from medvill.pretrain import pretrain_folder

    if task not in LOCALIZED_TASKS:
        raise ValueError(f"task must be one of {LOCALIZED_TASKS}, got {task!r}")
    root = Path(root)
    name, settings = settings_for(params, profile)
    evaluation = EvalSettings.from_params(params)
    source = pretrained_on or dataset
    default = root / "models" / source / pretrain_folder(model) / "final"
    ckpt = require_checkpoint(
        checkpoint or default,
        f"run `medvill pretrain --model {model} --dataset {source}` first, or give --checkpoint",
    )
    index = root / "data" / "shards" / dataset / "index.json"
    require_regions(index, dataset)
    wanted = frozenset(settings.findings) or None
    train = read_split(index, "train", settings.image_size, wanted)
    test = read_split(index, evaluation.split, settings.image_size, wanted)
    log.info("localized %s on %s: %d train, %d %s images", task, dataset, len(train), len(test),
             evaluation.split)  # fmt: skip
    plan = EvalPlan(
        task=task, train=train, test=test, checkpoint=ckpt, bootstrap=evaluation.bootstrap,
        ci_resamples=evaluation.bootstrap_ci_resamples, bootstrap_seed=evaluation.seed,
        confidence=evaluation.confidence,
    )  # fmt: skip
    grid = run_grid(plan, settings)
    doc = {
        "task": task,
        "dataset": dataset,
        # which release the dataset is (its params.yaml entry), so the summary can put the
        # LoVT paper's matching task beside it
        "adapter": (params.get("datasets") or {}).get(dataset, {}).get("adapter"),
        "model": model,
        "checkpoint": str(ckpt),
        "profile": name,
        "settings": asdict(settings),
        "split": evaluation.split,
        "train_images": len(train),
        "test_images": len(test),
        # what predicting nothing scores: Dice 1 on every test image without a mask, mAP 0
        "empty_prediction_floor": float(np.mean([not x.mask.any() for x in test]))
        if task == "segmentation"
        else 0.0,
        **grid,
    }
    folder = Path(out) if out else report_folder(root, dataset, model, task)
    write_json(doc, folder / "results.json")
    write_json(headline(doc), folder / "metrics.json")
    if doc["runs"]:
        plot(doc, folder / f"{task}.png")
    return doc
