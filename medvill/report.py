"""``medvill compare`` (paired bootstrap of two evaluations) and ``reports/summary.md`` (our
numbers beside the paper's, generated from the metrics JSONs — never written by hand)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from medvill import metrics as M
from medvill.tasks import task_module
from medvill.tasks.common import TASKS

#: MedViLL's own rows of the paper's tables (mean over 30 bootstrap runs; retrieval ×100 in the
#: paper, stored here as fractions). Table II: classification; III: retrieval; IV: VQA-RAD;
#: V: report generation. Inference time (ms) from each table's caption (MIMIC-CXR).
PAPER: dict[str, dict[str, Any]] = {
    "classification": {
        "table": "II",
        "metrics": {
            "micro_auroc": {"MIMIC-CXR": 0.980, "Open-I": 0.892},
            "micro_f1": {"MIMIC-CXR": 0.839, "Open-I": 0.407},
        },
        "inference_ms": {"classification": 12.5},
    },
    "retrieval": {
        "table": "III",
        "metrics": {
            "r2i/mrr": {"MIMIC-CXR": 0.565, "Open-I": 0.513},
            "r2i/hit@5": {"MIMIC-CXR": 0.770, "Open-I": 0.730},
            "r2i/recall@5": {"MIMIC-CXR": 0.474, "Open-I": 0.129},
            "r2i/precision@5": {"MIMIC-CXR": 0.199, "Open-I": 0.317},
            "i2r/mrr": {"MIMIC-CXR": 0.558, "Open-I": 0.504},
            "i2r/hit@5": {"MIMIC-CXR": 0.755, "Open-I": 0.638},
            "i2r/recall@5": {"MIMIC-CXR": 0.471, "Open-I": 0.129},
            "i2r/precision@5": {"MIMIC-CXR": 0.197, "Open-I": 0.355},
        },
        "inference_ms": {"r2i": 7.6, "i2r": 7.8},
    },
    "vqa": {
        "table": "IV",
        "metrics": {
            "open": {"VQA-RAD": 0.595},
            "closed": {"VQA-RAD": 0.777},
            "chest_open": {"VQA-RAD": 0.587},
            "chest_closed": {"VQA-RAD": 0.782},
        },
        "inference_ms": {"vqa": 19.46},
    },
    "generation": {
        "table": "V",
        "metrics": {
            "perplexity": {"MIMIC-CXR": 4.185, "Open-I": 5.637},
            "ce_accuracy": {"MIMIC-CXR": 0.841, "Open-I": 0.734},
            "ce_precision": {"MIMIC-CXR": 0.698, "Open-I": 0.512},
            "ce_recall": {"MIMIC-CXR": 0.559, "Open-I": 0.594},
            "ce_f1": {"MIMIC-CXR": 0.621, "Open-I": 0.550},
            "bleu4": {"MIMIC-CXR": 0.066, "Open-I": 0.049},
        },
        "inference_ms": {"generation": 32.81},
    },
}
TITLES = {
    "classification": "Diagnosis classification",
    "retrieval": "Image-report retrieval",
    "vqa": "VQA-RAD",
    "generation": "Report generation",
}


def _load_predictions(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "predictions.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} missing: run `medvill evaluate` into {folder} first")
    return json.loads(path.read_text(encoding="utf-8"))


def _ids(task: str, pred: dict[str, Any]) -> list[Any]:
    return {
        "classification": lambda p: p["keys"],
        "vqa": lambda p: p["qids"],
        "generation": lambda p: p["ids"],
    }[task](pred)


def compare(
    task: str,
    a: Path,
    b: Path,
    n_resamples: int,
    seed: int,
    confidence: float = 0.95,
    ci_resamples: int = 1000,
) -> dict[str, Any]:
    """Paired bootstrap (and the paper's independent t-test) of evaluation ``b`` against ``a``:
    both must have scored the same items in the same order."""
    module = task_module(task)
    pa, pb = _load_predictions(a), _load_predictions(b)
    for name, pred in (("A", pa), ("B", pb)):
        if pred.get("task") != task:
            raise ValueError(f"{name} holds {pred.get('task')!r} predictions, not {task!r}")
    parts = (
        [(d, pa[d], pb[d]) for d in module.DIRECTIONS] if task == "retrieval" else [("", pa, pb)]
    )
    result: dict[str, Any] = {}
    for prefix, x, y in parts:
        key_x = x["queries"] if task == "retrieval" else _ids(task, x)
        key_y = y["queries"] if task == "retrieval" else _ids(task, y)
        if key_x != key_y:
            raise ValueError(
                "the two evaluations scored different items: compare needs the "
                "same test set in the same order"
            )
        stats = M.paired_bootstrap(
            module.compute_fn(x),
            module.compute_fn(y),
            len(key_x),
            n_resamples,
            seed,
            confidence,
            ci_resamples,
        )
        result.update({f"{prefix}/{k}" if prefix else k: v for k, v in stats.items()})
    return {
        "task": task,
        "a": str(a),
        "b": str(b),
        "resamples": n_resamples,
        "ci_resamples": ci_resamples,
        "seed": seed,
        "metrics": result,
    }


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines: header, separator, one line per row."""
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _resamples_note(dataset: str, doc: dict[str, Any]) -> str:
    """Which number of resamples each figure of one evaluation used."""
    boot = doc["bootstrap"]
    confidence = boot.get("confidence", 0.95) * 100
    ci = boot.get("ci_resamples", boot["resamples"])  # older metrics.json: one count for both
    return (
        f"{dataset}: mean ± std over {boot['resamples']}, {confidence:g} % interval over "
        f"{ci} (seed {boot['seed']})"
    )


def summary_markdown(root: Path) -> str:
    """The summary table: per task, each metric with our value, bootstrap mean ± std and 95 %
    interval per dataset, beside MedViLL's row of the paper's table."""
    reports = Path(root) / "reports"
    found: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in TASKS}
    for path in sorted(reports.glob("*/*/metrics.json")):
        task, dataset = path.parent.name, path.parent.parent.name
        if task in found:
            found[task][dataset] = json.loads(path.read_text(encoding="utf-8"))
    lines = [
        "# MedViLL downstream results",
        "",
        "Generated by `medvill summary` from `reports/<dataset>/<task>/metrics.json`; "
        "do not edit. Ours: value on the full split, then the bootstrap mean ± std (over "
        "`evaluate.bootstrap` resamples, 30 as the paper) and the percentile interval (over "
        "`evaluate.bootstrap_ci_resamples` resamples, ≥ 1,000); each table says how many. "
        "Paper: MedViLL's row of the cited table (mean of 30 bootstrap runs; retrieval shown "
        "as fractions, the paper prints ×100).",
        "",
    ]
    for task in TASKS:
        paper = PAPER[task]
        lines += [f"## {TITLES[task]} (paper table {paper['table']})", ""]
        runs = found[task]
        if not runs:
            lines += ["No evaluation yet: run `medvill evaluate " + task + "`.", ""]
            continue
        paper_sets = sorted({d for m in paper["metrics"].values() for d in m})
        header = ["metric"] + [f"ours: {d}" for d in runs] + [f"paper: {d}" for d in paper_sets]
        names = list(paper["metrics"])
        for doc in runs.values():
            names += [n for n in doc["metrics"] if n not in names]
        rows = []
        for name in names:
            row = [name]
            for doc in runs.values():
                stats = doc["bootstrap"]["metrics"].get(name)
                if stats is None:
                    row.append("–")
                else:
                    row.append(
                        f"{_fmt(stats['value'])} ({_fmt(stats['mean'])} ± "
                        f"{_fmt(stats['std'])}; [{_fmt(stats['ci_low'])}, "
                        f"{_fmt(stats['ci_high'])}])"
                    )
            row += [_fmt(paper["metrics"].get(name, {}).get(d)) for d in paper_sets]
            rows.append(row)
        lines += _table(header, rows)
        timing = []
        for dataset, doc in runs.items():
            for part, ms in doc["inference_ms_per_sample"].items():
                timing.append(
                    f"{dataset} {part}: {_fmt(ms, 1)} ms ({doc['environment']['device']})"
                )
        paper_ms = ", ".join(f"{k} {v} ms" for k, v in paper["inference_ms"].items())
        lines += [
            "",
            "Resamples — " + "; ".join(_resamples_note(d, doc) for d, doc in runs.items()),
        ]
        lines += [
            "",
            f"Inference time per sample — ours: {'; '.join(timing)}; paper "
            f"(MIMIC-CXR, RTX-3090): {paper_ms}.",
            "",
        ]
    lines += families_markdown(root)
    lines += xvl_markdown(root)
    lines += localized_markdown(root)
    return "\n".join(lines) + "\n"


#: The one-table comparison of the model families: (column, MedViLL's task and metric, the
#: contrastive families' metric in reports/<dataset>/zoo-<model>/metrics.json).
FAMILY_COLUMNS: tuple[tuple[str, str, str, str], ...] = (
    ("classification micro-AUROC", "classification", "micro_auroc", "probe/micro_auroc"),
    ("classification macro-AUROC", "classification", "macro_auroc", "probe/macro_auroc"),
    ("I2R MRR", "retrieval", "i2r/mrr", "zeroshot/i2r/mrr"),
    ("I2R Hit@5", "retrieval", "i2r/hit@5", "zeroshot/i2r/hit@5"),
    ("R2I MRR", "retrieval", "r2i/mrr", "zeroshot/r2i/mrr"),
    ("R2I Hit@5", "retrieval", "r2i/hit@5", "zeroshot/r2i/hit@5"),
)


def _cell(doc: dict[str, Any] | None, name: str) -> str:
    stats = (doc or {}).get("bootstrap", {}).get("metrics", {}).get(name)
    if stats is None:
        return "–"
    return f"{_fmt(stats['value'])} [{_fmt(stats['ci_low'])}, {_fmt(stats['ci_high'])}]"


def families_markdown(root: Path) -> list[str]:
    """The "Model families" section: one row per dataset × family on the same test blocks
    and split. MedViLL: its fine-tuned classification and retrieval tasks; ConVIRT, CLIP,
    LoVT: a linear probe of the frozen image encoder and zero-shot retrieval, and a second row
    with the retrieval of their fine-tuned encoders when evaluated (``medvill evaluate-zoo``)."""
    from medvill.families import FAMILY_NAMES

    reports = Path(root) / "reports"
    rows: list[list[str]] = []
    for folder in sorted(p for p in reports.glob("*") if p.is_dir()):
        docs = {
            task: json.loads((folder / task / "metrics.json").read_text(encoding="utf-8"))
            for task in ("classification", "retrieval")
            if (folder / task / "metrics.json").is_file()
        }
        if docs:
            cells = [_cell(docs.get(task), name) for _, task, name, _ in FAMILY_COLUMNS]
            rows.append([folder.name, "medvill (fine-tuned)", *cells])
        xvl = _xvl_docs(folder)
        if xvl.get("classification") or xvl.get("retrieval"):
            cells = [_cell(xvl.get(task), name) for _, task, name, _ in FAMILY_COLUMNS]
            rows.append([folder.name, "xvl (fine-tuned)", *cells])
        for family in FAMILY_NAMES[1:]:
            path = folder / f"zoo-{family}" / "metrics.json"
            if path.is_file():
                doc = json.loads(path.read_text(encoding="utf-8"))
                cells = [_cell(doc, name) for *_, name in FAMILY_COLUMNS]
                rows.append([folder.name, f"{family} (probe, zero-shot)", *cells])
                tuned = [
                    _cell(doc, name.replace("zeroshot/", "finetuned/"))
                    if name.startswith("zeroshot/") else "–"
                    for *_, name in FAMILY_COLUMNS
                ]  # fmt: skip
                if any(cell != "–" for cell in tuned):
                    rows.append([folder.name, f"{family} (fine-tuned retrieval)", *tuned])
    lines = ["## Model families", ""]
    if not rows:
        return [*lines, "No evaluation yet: `medvill evaluate-zoo --model <family>`.", ""]
    header = ["dataset", "model (how)", *(c[0] for c in FAMILY_COLUMNS)]
    lines += [
        "Value on the full split [95 % bootstrap interval]. MedViLL: its fine-tuned "
        "classification and retrieval heads (tables above); ConVIRT, CLIP, LoVT: a linear "
        "probe of the frozen image encoder (one logistic regression per label, trained on the "
        'train split) and zero-shot retrieval by embedding similarity; their "fine-tuned '
        'retrieval" rows score the same way after fine-tuning both encoders with their own '
        "contrastive loss on the train split (`medvill finetune-zoo`); all on the same test "
        "images and 100-candidate blocks.",
        "",
        *_table(header, rows),
    ]
    return [*lines, ""]


#: Tasks Medical X-VL is fine-tuned on (medvill.xvl.tasks.XVL_TASKS, without importing it).
XVL_TASKS: tuple[str, ...] = ("classification", "retrieval", "vqa")
#: (task, metric) rows of the X-VL-beside-MedViLL table.
XVL_ROWS: tuple[tuple[str, str], ...] = (
    ("classification", "micro_auroc"),
    ("classification", "macro_auroc"),
    ("classification", "micro_f1"),
    ("retrieval", "i2r/mrr"),
    ("retrieval", "i2r/hit@5"),
    ("retrieval", "r2i/mrr"),
    ("retrieval", "r2i/hit@5"),
    ("vqa", "closed"),
    ("vqa", "open"),
    ("vqa", "overall"),
)


def _xvl_docs(folder: Path) -> dict[str, dict[str, Any]]:
    """The X-VL evaluations of one dataset (``reports/<dataset>/xvl/<task>/metrics.json``)."""
    return {
        task: json.loads((folder / "xvl" / task / "metrics.json").read_text(encoding="utf-8"))
        for task in XVL_TASKS
        if (folder / "xvl" / task / "metrics.json").is_file()
    }


def xvl_markdown(root: Path) -> list[str]:
    """Medical X-VL's fine-tuned tasks beside MedViLL's, per dataset: same test split, same
    blocks and questions, same bootstrap."""
    reports = Path(root) / "reports"
    lines = ["## Medical X-VL beside MedViLL (fine-tuned)", ""]
    tables: list[str] = []
    for folder in sorted(p for p in reports.glob("*") if p.is_dir()):
        xvl = _xvl_docs(folder)
        if not xvl:
            continue
        medvill = {
            task: json.loads((folder / task / "metrics.json").read_text(encoding="utf-8"))
            for task in XVL_TASKS
            if (folder / task / "metrics.json").is_file()
        }
        inputs = xvl.get("classification", {}).get("input")
        tables += [
            f"{folder.name}" + (f" (X-VL classification input: {inputs})" if inputs else ""),
            "",
            "| task | metric | MedViLL | X-VL |",
            "|---|---|---|---|",
        ]
        tables += [
            f"| {task} | {name} | {_cell(medvill.get(task), name)} | {_cell(xvl.get(task), name)} |"
            for task, name in XVL_ROWS
        ]
        tables.append("")
    if not tables:
        return [*lines, "No evaluation yet: `medvill evaluate <task> --model xvl`.", ""]
    return [
        *lines,
        "Value on the full split [95 % bootstrap interval]; MedViLL from "
        "`reports/<dataset>/<task>/`, X-VL from `reports/<dataset>/xvl/<task>/` "
        "(`medvill evaluate <task> --model xvl`).",
        "",
        *tables,
    ]


#: The LoVT paper's localized tasks that a dataset adapter reproduces (same images, same
#: targets), by adapter and task. Its readme names the protocol — 1 %, 10 %, 100 % of the
#: training data, frozen and fine-tuned, five runs per task, RSNA YOLOv3 frozen 10 % as the
#: basic evaluation — but gives its numbers only as figures, so no value is printed here.
LOVT_PAPER_TASKS: dict[tuple[str, str], str] = {
    ("rsna_pneumonia", "detection"): "RSNA pneumonia detection (YOLOv3)",
    ("siim_pneumothorax", "segmentation"): "SIIM pneumothorax segmentation",
    ("object_cxr", "detection"): "Object CXR foreign object detection",
    ("nih_boxes", "detection"): "NIH CXR pathology detection",
}


def localized_markdown(root: Path) -> list[str]:
    """The "Localized tasks" section: every ``reports/<dataset>/localized-<model>-<task>/
    results.json`` (``medvill localized-eval``), one row per initialisation and variant, one
    column per training fraction: mean over seeds [95 % bootstrap interval]."""
    paths = sorted(Path(root).glob("reports/*/localized-*/results.json"))
    lines = ["## Localized tasks (LoVT's protocol)", ""]
    if not paths:
        return [*lines, "No evaluation yet: `medvill localized-eval --model <family> "
                "--dataset <ds> --task detection|segmentation`.", ""]  # fmt: skip
    lines += [
        "Detection: Faster R-CNN + FPN on the model's ResNet, mAP (COCO's 101-point AP at the "
        "profile's IoU thresholds, mean over finding classes); segmentation: an FPN decoder, "
        "Dice per image (1 when prediction and truth are both empty), mean over test images. "
        "Each cell: the mean over the profile's seeds on the full test split [95 % bootstrap "
        "interval over test images, seeds averaged in every resample]. `frozen`: the ResNet "
        "is not trained; `finetuned`: it is. Predicting nothing scores the share of test "
        "images without a mask in Dice (0 in mAP): a model must beat that. "
        "LoVT paper: the paper's task that the dataset "
        "reproduces — its numbers are published as figures only and are not copied here.",
        "",
    ]
    for path in paths:
        doc = json.loads(path.read_text(encoding="utf-8"))
        fractions = sorted({r["fraction"] for r in doc["runs"]})
        paper = LOVT_PAPER_TASKS.get((str(doc.get("adapter")), doc["task"]), "–")
        lines += [
            f"### {doc['dataset']} · {doc['model']} · {doc['task']} ({doc['metric']})",
            "",
            f"{doc['train_images']} training / {doc['test_images']} {doc['split']} images, "
            f"profile `{doc['profile']}`, seeds {doc['settings']['seeds']}, ResNet "
            f"`{doc['backbone']}`; predicting nothing scores "
            f"{_fmt(doc.get('empty_prediction_floor'))}; LoVT paper: {paper}."
            + "".join(f" **{init} skipped**: {why}." for init, why in doc["skipped"].items()),
            "",
        ]
        header = ["init", "variant", *(f"{f * 100:g} %" for f in fractions)]
        rows = []
        for init in dict.fromkeys(r["init"] for r in doc["runs"]):
            for variant in dict.fromkeys(r["variant"] for r in doc["runs"]):
                cells = {
                    r["fraction"]: f"{_fmt(r['value'])} [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]"
                    for r in doc["runs"]
                    if r["init"] == init and r["variant"] == variant
                }
                rows.append([init, variant, *(cells.get(f, "–") for f in fractions)])
        lines += [*_table(header, rows), "", *_localized_differences(doc, fractions)]
    return lines


def _localized_differences(doc: dict[str, Any], fractions: list[float]) -> list[str]:
    """The checkpoint minus each other arm, paired on the same bootstrap resamples: the table
    that says whether pretraining helped (overlapping per-arm intervals do not say it did not)."""
    rows = doc.get("comparisons") or []
    if not rows:
        return []
    lines = [
        "Checkpoint minus baseline, paired bootstrap over the same test resamples: "
        "difference [95 % interval], bootstrap p, seeds where the checkpoint scored higher.",
        "",
    ]
    header = ["checkpoint −", "variant", *(f"{f * 100:g} %" for f in fractions)]
    table = []
    for baseline in dict.fromkeys(r["baseline"] for r in rows):
        for variant in dict.fromkeys(r["variant"] for r in rows):
            cells = {
                r["fraction"]: f"{r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
                f" p {r['p_bootstrap']:.3f}, {r['seeds_better']}/{r['seeds']}"
                for r in rows
                if r["baseline"] == baseline and r["variant"] == variant
            }
            if cells:
                table.append([baseline, variant, *(cells.get(f, "–") for f in fractions)])
    return [*lines, *_table(header, table), ""]


def write_summary(root: Path) -> Path:
    from pipeline.records import atomic_write_bytes

    path = Path(root) / "reports" / "summary.md"
    atomic_write_bytes(path, summary_markdown(root).encode("utf-8"))
    return path
