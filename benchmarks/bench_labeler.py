"""Benchmark and agreement report for the offline CheXpert labeler (``pipeline.labeler``).

Usage: ``python benchmarks/bench_labeler.py [--reports 3000] [--seed 0]``

Corpora are built by recombining sentences from the reference reports and SPEC examples with
templated variations (sides, sizes, locations), so that a "cold" run sees many distinct
sentences: (i) short impressions (1-3 sentences), (ii) findings + impression (6-10 sentences).
Cold = fresh sentence cache (model already loaded); warm = the same corpus again. Single
process, so the rate is per core. Agreement is measured against every expected output in
``../shared/reference/chexpert/``.
"""

from __future__ import annotations

import argparse
import math
import random
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd

from pipeline.labeler import label_reports, read_reports_csv
from pipeline.labeler.api import Labeler
from pipeline.records import CHEXPERT_LABELS

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "chexpert"

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
    """Per-label agreement with every expected output shipped in the reference folder."""
    sample = REFERENCE / "chexpert-labeler"
    texts = read_reports_csv(sample / "sample_reports.csv")
    got = label_reports(texts, labeler=labeler)
    want = pd.read_csv(sample / "labeled_reports.csv")
    rows: dict[str, list[int]] = {k: [0, 0] for k in CHEXPERT_LABELS}
    for k in CHEXPERT_LABELS:
        s, t = _agree(got[k], want[k])
        rows[k][0] += s
        rows[k][1] += t
    # negbio2 fixture: the two source reports through spaCy vs NegBio's expected document labels
    data = REFERENCE / "negbio2" / "tests" / "data"
    result = {"Positive": 1.0, "Negative": 0.0, "Uncertain": -1.0}
    docs = {
        d.findtext("id"): d
        for d in ET.parse(data / "1.neg_chexpert.xml").getroot().iter("document")
    }
    for doc_id, doc in docs.items():
        expected = {k: math.nan for k in CHEXPERT_LABELS}
        for infon in doc.findall("infon"):
            name = (
                infon.get("key", "").split("/", 1)[-1].replace("Airspace Opacity", "Lung Opacity")
            )
            expected[name] = result[infon.text]
        [row] = label_reports([(data / f"{doc_id}.txt").read_text()], labeler=labeler).to_dict(
            "records"
        )
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
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


if __name__ == "__main__":
    main()
