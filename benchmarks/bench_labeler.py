"""Benchmark and agreement report for the offline CheXpert labeler (``pipeline.labeler``).

Usage: ``python benchmarks/bench_labeler.py [--reports 3000] [--seed 0] [--dev-set DIR]``

Corpora are built by recombining sentences from the reference reports and SPEC examples with
templated variations (sides, sizes, locations), so that a "cold" run sees many distinct
sentences: (i) short impressions (1-3 sentences), (ii) findings + impression (6-10 sentences).
Cold = fresh sentence cache (model already loaded); warm = the same corpus again. Single
process, so the rate is per core. Agreement is measured against the original's expected outputs
kept as test fixtures (``tests/pipeline/labeler/fixtures``: chexpert-labeler's sample reports,
negbio2's two reports).

``--dev-set DIR`` (or ``MEDVILL_LABELER_DEV_SET``) points at a labeled dev set built outside
the repo: ``DIR/reports.csv`` (headerless, one report per row, the labeler's input) and
``DIR/gold.csv`` (``id`` + one 0/1 column per observation scored). It prints per-observation
precision / recall / F1 and the micro F1, counting only 1.0 as positive (blank, 0 and -1 are
negative), as the clinical-efficacy metrics do, once per label backend (``chexpert``, the
original's rules; ``chexpert_plus``, ours on top). The reports themselves never enter the repo.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from pipeline.labeler import label_reports, read_reports_csv
from pipeline.labeler.api import Labeler, backend_labeler
from pipeline.labeler.detect import BACKENDS
from pipeline.records import CHEXPERT_LABELS

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "pipeline" / "labeler" / "fixtures"
DEV_SET_ENV = "MEDVILL_LABELER_DEV_SET"

FIXED = [
    "Heart size normal and lungs are clear.",
    "No edema or pneumonia.",
    "No effusion.",
    "Left pleural effusion with adjacent atelectasis.",
    "Right effusion is also present.",
    "Cardiomegaly without overt edema.",
    "Stable mild cardiomegaly.",
    "Hyperexpanded but clear lungs.",
    "Minimal patchy airspace disease within the lingula, may reflect atelectasis or consolidation.",
    "The lungs are clear without evidence of focal airspace disease.",
    "There is no evidence of pneumothorax or large pleural effusion.",
    "The cardiac and mediastinal contours are within normal limits.",
    "Cannot exclude a small left pleural effusion.",
    "Right PICC with tip within the upper SVC.",
    "Probable enlargement of the main pulmonary artery.",
    "Mild cardiomegaly.",
    "No evidence of focal infiltrate, effusion or pneumothorax.",
    "Heart and mediastinum are stable.",
    "Lungs are unchanged.",
    "No pneumothorax.",
    "Osseous structures unchanged.",
    "No acute cardiopulmonary process.",
    "Heart size is within normal limits.",
    "No focal consolidation.",
    "Degenerative changes of the spine.",
    "Endotracheal tube terminates 4 cm above the carina.",
    "Nasogastric tube courses below the diaphragm.",
    "Mild pulmonary vascular congestion.",
    "No displaced rib fractures.",
    "Pulmonary edema has resolved.",
]
SIDES = [
    "left",
    "right",
    "bilateral",
    "left basilar",
    "right basilar",
    "right upper lobe",
    "left lower lobe",
]
SIZES = ["small", "moderate", "large", "trace", "minimal", "mild"]
FINDINGS = [
    "pleural effusion",
    "atelectasis",
    "consolidation",
    "pneumothorax",
    "opacity",
    "nodule",
    "infiltrate",
]
TEMPLATES = [
    "{size} {side} {finding}.",
    "No {side} {finding}.",
    "There is a {size} {side} {finding}.",
    "{size} {side} {finding}, likely atelectasis.",
    "{side} {finding} may represent pneumonia.",
    "Interval improvement of {side} {finding}.",
    "No evidence of {finding} in the {side} lung.",
    "Unchanged {size} {side} {finding}.",
    "{side} {finding} versus atelectasis.",
    "Possible {size} {side} {finding}.",
    "The {finding} is not seen on the current study.",
]


def _sentence(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(FIXED)
    text = rng.choice(TEMPLATES).format(
        size=rng.choice(SIZES), side=rng.choice(SIDES), finding=rng.choice(FINDINGS)
    )
    return text[0].upper() + text[1:]


def build_corpora(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    short = [" ".join(_sentence(rng) for _ in range(rng.randint(1, 3))) for _ in range(n)]
    full = [
        "FINDINGS: "
        + " ".join(_sentence(rng) for _ in range(rng.randint(5, 8)))
        + " IMPRESSION: "
        + " ".join(_sentence(rng) for _ in range(rng.randint(1, 2)))
        for _ in range(n)
    ]
    return short, full


def rate(texts: list[str], labeler: Labeler) -> float:
    start = time.perf_counter()
    label_reports(texts, labeler=labeler)
    return len(texts) / (time.perf_counter() - start)


def _agree(got: pd.Series, want: pd.Series) -> tuple[int, int]:
    same = sum((math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(got, want, strict=True))
    return same, len(want)


def agreement(labeler: Labeler) -> None:
    """Per-label agreement with the original's expected outputs kept as test fixtures."""
    texts = read_reports_csv(FIXTURES / "sample_reports.csv")
    got = label_reports(texts, labeler=labeler)
    want = pd.read_csv(FIXTURES / "labeled_reports.csv")
    rows: dict[str, list[int]] = {k: [0, 0] for k in CHEXPERT_LABELS}
    for k in CHEXPERT_LABELS:
        s, t = _agree(got[k], want[k])
        rows[k][0] += s
        rows[k][1] += t
    # negbio2 fixture: the two reports' passage text through spaCy vs NegBio's document labels
    result = {"Positive": 1.0, "Negative": 0.0, "Uncertain": -1.0}
    for doc in ET.parse(FIXTURES / "1.neg_chexpert.xml").getroot().iter("document"):
        expected = {k: math.nan for k in CHEXPERT_LABELS}
        for infon in doc.findall("infon"):
            key = infon.get("key", "")
            if key.startswith("CheXpert/"):
                name = key.split("/", 1)[1].replace("Airspace Opacity", "Lung Opacity")
                expected[name] = result[infon.text or ""]
        text = doc.findtext("passage/text") or ""
        [row] = label_reports([text], labeler=labeler).to_dict("records")
        # NegBio's port emits No Finding only when positive, i.e. exactly our 1.0 / blank
        for k in CHEXPERT_LABELS:
            s, _ = _agree(pd.Series([row[k]]), pd.Series([expected[k]]))
            rows[k][0] += s
            rows[k][1] += 1
    print(
        "\nAgreement with expected outputs (sample_reports.csv x4 + negbio2 1.neg_chexpert.xml x2):"
    )
    total = [0, 0]
    for k, (s, t) in rows.items():
        total[0] += s
        total[1] += t
        print(f"  {k:<28} {s}/{t}")
    print(f"  {'ALL':<28} {total[0]}/{total[1]} ({100 * total[0] / total[1]:.1f} %)")


def score_positives(predicted: pd.DataFrame, gold: pd.DataFrame) -> pd.DataFrame:
    """Per-observation precision / recall / F1 (positive = 1.0 only) plus a ``micro`` row.

    ``gold`` holds one 0/1 column per scored observation; ``predicted`` the labeler's frame
    (rows aligned). Only the gold's columns are scored.
    """
    categories = [c for c in gold.columns if c in CHEXPERT_LABELS]
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} labeled rows vs {len(gold)} gold rows")
    y_true = gold[categories].to_numpy(dtype=int)
    y_pred = (predicted[categories].to_numpy(dtype=float) == 1.0).astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, average=None, zero_division=0
    )
    frame = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "gold_positive": support},
        index=categories,
    )
    micro = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
    frame.loc["micro"] = [micro[0], micro[1], micro[2], int(np.sum(support))]
    return frame


def dev_set_report(directory: Path, labeler: Labeler, backend: str) -> pd.DataFrame:
    """Label ``directory/reports.csv`` and print its scores against ``directory/gold.csv``."""
    reports = directory / "reports.csv"
    gold_path = directory / "gold.csv"
    for path in (reports, gold_path):
        if not path.is_file():
            raise SystemExit(f"dev set: {path} is missing (build the dev set first)")
    texts = read_reports_csv(reports)
    gold = pd.read_csv(gold_path)
    start = time.perf_counter()
    predicted = label_reports(texts, labeler=labeler)
    seconds = time.perf_counter() - start
    scores = score_positives(predicted, gold)
    print(
        f"\nDev set {directory}, backend {backend} ({len(texts)} reports, "
        f"labeled in {seconds:.1f} s):"
    )
    for name, row in scores.iterrows():
        print(
            f"  {name:<20} P={row['precision']:.3f} R={row['recall']:.3f} "
            f"F1={row['f1']:.3f} (gold+ {int(row['gold_positive'])})"
        )
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dev-set",
        type=Path,
        default=os.environ.get(DEV_SET_ENV) or None,
        help=f"built dev set folder (reports.csv + gold.csv); default ${DEV_SET_ENV}",
    )
    args = parser.parse_args()
    short, full = build_corpora(args.reports, args.seed)
    base = Labeler()
    base.warm_up()
    for name, corpus in (("(i) short impressions", short), ("(ii) findings+impression", full)):
        labeler = Labeler(graph_source=base.graph_source)
        cold = rate(corpus, labeler)
        warm = rate(corpus, labeler)
        sentences = len(labeler.cache)
        print(
            f"{name:<26} n={len(corpus)} distinct sentences={sentences:>6}  "
            f"cold {cold:8.0f} reports/s   warm {warm:8.0f} reports/s  (1 core)"
        )
    agreement(Labeler(graph_source=base.graph_source))
    if args.dev_set is not None:
        for backend in BACKENDS:
            labeler = backend_labeler(backend, base.graph_source)
            dev_set_report(Path(args.dev_set), labeler, backend)


if __name__ == "__main__":
    main()
