"""The paper's attention-mask ablation in miniature (issue 13 §4; paper tables II–V).

One *arm* per pretraining mask — BAR (MedViLL's), Bi&S2S, Bi, S2S and Non-cross — each
pretrained on the same shards and fine-tuned on the same four tasks with the same budget. Only
the pretraining mask differs: fine-tuning uses each task's own mask (Bi for the understanding
tasks, S2S for report generation), as the paper and its release do for every compared model.

An arm lives in its own folders, ``models/<dataset>/ablation/<mask>/`` (``pretrain/``,
``<task>/final``) and ``reports/<dataset>/ablation/<mask>/<task>/``, so arms never overwrite
each other or the dataset's main run. This module names those folders, checks that a
checkpoint really was pretrained with its arm's mask, and renders the comparison as the paper
lays it out: rows are the pretraining masks, columns the task metrics, with bootstrap
intervals, and p-values against MedViLL (BAR) from the same resamples (``medvill compare``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from medvill.config import MASK_TYPES

#: The arms in the row order of the paper's tables (MedViLL, Bi&S2S, Bi, S2S, Non-crossing).
ABLATION_MASKS: tuple[str, ...] = ("bar", "bi_s2s", "bi", "s2s", "noncross")
#: Row labels as the paper names the models (MedViLL is the BAR mask).
MASK_LABELS: dict[str, str] = {
    "bar": "MedViLL (BAR)",
    "bi_s2s": "Bi&S2S",
    "bi": "Bi",
    "s2s": "S2S",
    "noncross": "Non-cross",
}
TASKS: tuple[str, ...] = ("classification", "retrieval", "vqa", "generation")
#: Columns of the overview table: (task, metric key in metrics.json, heading).
HEADLINE: tuple[tuple[str, str, str], ...] = (
    ("classification", "micro_auroc", "cls micro-AUROC"),
    ("classification", "micro_f1", "cls micro-F1"),
    ("retrieval", "r2i/mrr", "R2I MRR"),
    ("retrieval", "i2r/mrr", "I2R MRR"),
    ("vqa", "closed", "VQA closed"),
    ("vqa", "open", "VQA open"),
    ("generation", "ce_f1", "CE-F1"),
    ("generation", "bleu4", "BLEU-4"),
)
#: The paper's values of the overview's columns, per mask (tables II–V: MIMIC-CXR for
#: classification, retrieval and generation, VQA-RAD 'ALL' for VQA; retrieval as fractions).
PAPER_ROWS: dict[str, tuple[float, ...]] = {
    "bar": (0.980, 0.839, 0.565, 0.558, 0.777, 0.595, 0.621, 0.066),
    "bi_s2s": (0.979, 0.846, 0.555, 0.545, 0.760, 0.541, 0.511, 0.066),
    "bi": (0.984, 0.852, 0.580, 0.567, 0.784, 0.580, 0.110, 0.015),
    "s2s": (0.982, 0.846, 0.588, 0.579, 0.730, 0.505, 0.534, 0.043),
    "noncross": (0.980, 0.824, 0.547, 0.546, 0.734, 0.531, 0.120, 0.007),
}
#: The metrics each paper table tests against MedViLL (its p-value columns).
TESTED: dict[str, tuple[str, ...]] = {
    "classification": ("micro_auroc", "micro_f1"),
    "retrieval": ("r2i/mrr", "i2r/mrr"),
    "vqa": ("open", "closed"),
    "generation": ("ce_f1",),
}
#: Per-task columns: the metrics of the paper's table (same keys as medvill.report.PAPER).
COLUMNS: dict[str, tuple[str, ...]] = {
    "classification": ("micro_auroc", "micro_f1"),
    "retrieval": (
        "r2i/mrr", "r2i/hit@5", "r2i/recall@5", "r2i/precision@5",
        "i2r/mrr", "i2r/hit@5", "i2r/recall@5", "i2r/precision@5",
    ),
    "vqa": ("open", "closed"),
    "generation": (
        "perplexity", "ce_accuracy", "ce_precision", "ce_recall", "ce_f1", "bleu4",
    ),
}  # fmt: skip
#: Column headings of the per-task tables (the paper's names for the metrics).
HEADINGS: dict[str, str] = {
    "micro_auroc": "micro AUROC", "micro_f1": "micro F1",
    "r2i/mrr": "R2I MRR", "r2i/hit@5": "R2I H@5", "r2i/recall@5": "R2I R@5",
    "r2i/precision@5": "R2I P@5", "i2r/mrr": "I2R MRR", "i2r/hit@5": "I2R H@5",
    "i2r/recall@5": "I2R R@5", "i2r/precision@5": "I2R P@5",
    "open": "open", "closed": "closed",
    "perplexity": "perplexity (lower is better)", "ce_accuracy": "CE accuracy",
    "ce_precision": "CE precision", "ce_recall": "CE recall", "ce_f1": "CE F1", "bleu4": "BLEU-4",
}  # fmt: skip
TITLES: dict[str, str] = {
    "classification": "Diagnosis classification (paper table II)",
    "retrieval": "Image-report retrieval (paper table III)",
    "vqa": "VQA (paper table IV)",
    "generation": "Report generation (paper table V)",
}


def check_mask(mask: str) -> str:
    """``mask`` if it is one of the ablation's arms, else a ValueError listing them."""
    if mask not in ABLATION_MASKS:
        raise ValueError(f"unknown ablation mask {mask!r}; expected one of {ABLATION_MASKS}")
    return mask


def run_name(mask: str) -> str:
    """The arm's folder inside ``models/<dataset>/`` and ``reports/<dataset>/``."""
    return f"ablation/{check_mask(mask)}"


def pretrain_paths(dataset: str, mask: str, root: Path = Path(".")) -> Any:
    """:class:`medvill.pretrain.Paths` of one arm: the dataset's shards, negatives and
    tokenizer, the arm's own output folder."""
    from medvill.pretrain import Paths

    base = Paths.for_dataset(dataset, root)
    return replace(base, out=Path(root) / "models" / dataset / run_name(mask) / "pretrain")


def task_paths(dataset: str, mask: str, root: Path = Path(".")) -> Any:
    """:class:`medvill.tasks.common.TaskPaths` of one arm (its pretraining checkpoint, its
    fine-tuned models and its reports)."""
    from medvill.tasks.common import TaskPaths

    return TaskPaths(Path(root), dataset, run_name(mask))


def checkpoint_mask(checkpoint: Path) -> str:
    """The ``attention_mask_type`` saved in a checkpoint's ``config.json``."""
    path = Path(checkpoint) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: not a model checkpoint")
    mask = json.loads(path.read_text(encoding="utf-8")).get("attention_mask_type")
    if mask not in MASK_TYPES:
        raise ValueError(f"{path}: attention_mask_type {mask!r} is not one of {MASK_TYPES}")
    return str(mask)


def require_arm_checkpoint(checkpoint: Path, mask: str) -> Path:
    """``checkpoint`` if it was pretrained with ``mask``; otherwise an error naming both, so
    that an arm can never be fine-tuned from another arm's (or the main run's) weights."""
    from medvill.tasks.common import require_checkpoint

    require_checkpoint(checkpoint, f"run `medvill pretrain --ablation {mask}` for this arm first")
    found = checkpoint_mask(checkpoint)
    if found != check_mask(mask):
        raise ValueError(
            f"{checkpoint} was pretrained with the {found!r} mask, not {mask!r}: rerun "
            f"`medvill pretrain --ablation {mask}` for this arm"
        )
    return Path(checkpoint)


# --------------------------------------------------------------------------- the table


def _arm_reports(root: Path, dataset: str) -> dict[str, dict[str, Path]]:
    """``{mask: {task: report folder}}`` of every arm and task evaluated so far."""
    found: dict[str, dict[str, Path]] = {}
    for mask in ABLATION_MASKS:
        for task in TASKS:
            folder = Path(root) / "reports" / dataset / run_name(mask) / task
            if (folder / "metrics.json").is_file():
                found.setdefault(mask, {})[task] = folder
    return found


def _read_metrics(folder: Path, mask: str, task: str) -> dict[str, Any]:
    """An arm's metrics.json, checked to come from a model pretrained with the arm's mask."""
    path = folder / "metrics.json"
    doc = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("task") != task:
        raise ValueError(f"{path} holds {doc.get('task')!r} metrics, not {task!r}")
    if doc.get("pretraining_mask") != mask:
        raise ValueError(
            f"{path} was evaluated on a model pretrained with the "
            f"{doc.get('pretraining_mask')!r} mask, not {mask!r}: rerun this arm's "
            f"`medvill finetune {task} --ablation {mask}` and `medvill evaluate`"
        )
    return doc


def _num(value: Any) -> str:
    if value is None or value != value:  # None or NaN
        return "–"
    return f"{value:.3f}"


def _p(value: Any) -> str:
    if value is None or value != value:
        return "–"
    return f"{value:.3g}" if value >= 1e-3 else f"{value:.1e}"


def _cell(stats: dict[str, Any] | None, detail: bool) -> str:
    if stats is None:
        return "–"
    interval = f"[{_num(stats['ci_low'])}, {_num(stats['ci_high'])}]"
    if not detail:
        return f"{_num(stats['value'])} {interval}"
    return f"{_num(stats['value'])} ({_num(stats['mean'])} ± {_num(stats['std'])}) {interval}"


def _comparisons(
    task: str, base: Path | None, folder: Path, doc: dict[str, Any]
) -> dict[str, dict[str, float]]:
    """Paired bootstrap of one arm against BAR on the same resamples as its metrics.json."""
    from medvill.report import compare

    if base is None or base == folder:
        return {}
    boot = doc["bootstrap"]
    result = compare(
        task,
        base,
        folder,
        boot["resamples"],
        boot["seed"],
        boot.get("confidence", 0.95),
        boot.get("ci_resamples", 1000),
    )
    return result["metrics"]


def ablation_markdown(root: Path, dataset: str) -> str:
    """The mask comparison of ``dataset``: an overview (rows = pretraining masks, columns =
    each task's headline metrics, value and percentile interval) and one table per task in the
    layout of the paper's tables II–V, with p-values against MedViLL (BAR)."""
    arms = _arm_reports(root, dataset)
    if not arms:
        raise FileNotFoundError(
            f"no ablation results under {Path(root) / 'reports' / dataset / 'ablation'}: run "
            f"the ablation stages (see README, 'The attention-mask ablation') first"
        )
    docs = {
        mask: {task: _read_metrics(folder, mask, task) for task, folder in tasks.items()}
        for mask, tasks in arms.items()
    }
    lines = [
        f"# Attention-mask ablation: {dataset}",
        "",
        "Generated by `medvill summary --ablation "
        f"{dataset}` from `reports/{dataset}/ablation/<mask>/<task>/metrics.json`; do not "
        "edit. Rows: the mask used in pretraining (fine-tuning uses each task's own mask, Bi "
        "or S2S, for every row, as the paper). Cells: value on the full split and its "
        "percentile interval; per-task tables add the bootstrap mean ± std. p-values compare "
        "each row with MedViLL (BAR) on the same resamples: the paper's independent t-test "
        "over the `evaluate.bootstrap` resample values, and the paired bootstrap p-value. "
        "'not run': no evaluation of that arm and task yet; '–': undefined on this split "
        "(or, for p-values, the BAR row itself).",
        "",
        "## Overview",
        "",
        "| pretraining mask | " + " | ".join(h for _, _, h in HEADLINE) + " |",
        "|---|" + "---|" * len(HEADLINE),
    ]
    for mask in ABLATION_MASKS:
        row = [MASK_LABELS[mask]]
        for task, key, _ in HEADLINE:
            doc = docs.get(mask, {}).get(task)
            row.append(_cell(doc["bootstrap"]["metrics"].get(key), False) if doc else "not run")
        lines.append("| " + " | ".join(row) + " |")
    resamples = sorted(
        {
            (d["bootstrap"]["resamples"], d["bootstrap"].get("ci_resamples", 0))
            for tasks in docs.values()
            for d in tasks.values()
        }
    )
    lines += [
        "",
        "Resamples (mean ± std, interval): "
        + "; ".join(f"{r} and {c}" for r, c in resamples)
        + ".",
        "",
        "The paper's values of the same columns (mean of 30 bootstrap runs; MIMIC-CXR, VQA-RAD "
        "'ALL' for VQA), for the order of the rows rather than their level:",
        "",
        "| paper | " + " | ".join(h for _, _, h in HEADLINE) + " |",
        "|---|" + "---|" * len(HEADLINE),
        *(
            "| " + " | ".join([MASK_LABELS[m], *(f"{v:.3f}" for v in PAPER_ROWS[m])]) + " |"
            for m in ABLATION_MASKS
        ),
        "",
    ]
    for task in TASKS:
        lines += _task_table(task, arms, docs)
    return "\n".join(lines) + "\n"


def _task_table(
    task: str, arms: dict[str, dict[str, Path]], docs: dict[str, dict[str, dict[str, Any]]]
) -> list[str]:
    columns = COLUMNS[task]
    tested = TESTED[task]
    if not any(task in tasks for tasks in arms.values()):
        return [f"## {TITLES[task]}", "", "No arm evaluated on this task yet.", ""]
    header = (
        ["pretraining mask", *(HEADINGS[name] for name in columns)]
        + [f"p {HEADINGS[name]} (t-test)" for name in tested]
        + [f"p {HEADINGS[name]} (paired)" for name in tested]
    )
    lines = [f"## {TITLES[task]}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    base = arms.get("bar", {}).get(task)
    for mask in ABLATION_MASKS:
        folder = arms.get(mask, {}).get(task)
        if folder is None:
            lines.append(
                "| " + " | ".join([MASK_LABELS[mask]] + ["not run"] * (len(header) - 1)) + " |"
            )
            continue
        doc = docs[mask][task]
        stats = doc["bootstrap"]["metrics"]
        tests = _comparisons(task, base, folder, doc)
        row = [MASK_LABELS[mask]] + [_cell(stats.get(name), True) for name in columns]
        row += [_p(tests.get(name, {}).get("p_ttest_independent")) for name in tested]
        row += [_p(tests.get(name, {}).get("p_bootstrap")) for name in tested]
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def write_ablation_summary(root: Path, dataset: str) -> Path:
    """Write ``reports/<dataset>/ablation/summary.md`` atomically and return its path."""
    from pipeline.records import atomic_write_bytes

    path = Path(root) / "reports" / dataset / "ablation" / "summary.md"
    atomic_write_bytes(path, ablation_markdown(root, dataset).encode("utf-8"))
    return path
