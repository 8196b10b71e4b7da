"""Plan a synthetic corpus from a seed and lay it out as a raw dataset tree.

Layout (the ``sample`` adapter's manifest layout, plus ground truth and VQA)::

    manifest.csv        one row per image: image_id, patient_id, study_id, view, image, report,
                        synthetic, study_date, source, split
    images/<image_id>.jpg   8-bit grey radiographs (frontal PA/AP and lateral)
    reports/<study_id>.txt  one radiology report per study
    labels.csv          ground truth: study_id + the 14 CheXpert columns (1, 0, -1, blank),
                        the format ``label.backend: csv`` reads
    findings.jsonl      the drawn findings per study (kind, side, severity, zone, size)
    regions.jsonl       where each finding is drawn on each frontal image: box and mask
                        (pipeline/synthetic/regions.py), for localized evaluation
    vqa/questions.json  closed and open questions in the VQA-RAD release format
    corpus.json         generator version, seed and counts (what made this tree)

Planning (patients, studies, findings, reports, questions) runs in one process from
``rng([seed, 0])``; each image is drawn from its own ``rng([seed, 1, study, view])``, so the
tree is byte-identical for a seed whatever the number of workers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipeline.parallel import parallel_map
from pipeline.records import CHEXPERT_LABELS
from pipeline.synthetic.drawing import Anatomy, render
from pipeline.synthetic.findings import StudyFindings, sample_study
from pipeline.synthetic.regions import REGIONS_FILE, region_masks, regions_entry, regions_line
from pipeline.synthetic.reports import EXAMINATIONS, write_report
from pipeline.synthetic.vqa import vqa_entries

GENERATOR_VERSION = "1"
MANIFEST_COLUMNS: tuple[str, ...] = (
    "image_id",
    "patient_id",
    "study_id",
    "view",
    "image",
    "report",
    "synthetic",
    "study_date",
    "source",
    "split",
)
VQA_FILE = "vqa/questions.json"
#: Studies per patient (1–4) and their probabilities.
STUDIES_PER_PATIENT = (0.45, 0.3, 0.15, 0.1)


@dataclass(frozen=True)
class CorpusConfig:
    """The ``synthetic:`` block of params.yaml."""

    n_images: int = 2000
    seed: int = 123
    image_size: int = 512
    jpeg_quality: int = 92
    questions_per_image: int = 0
    train: float = 0.8
    valid: float = 0.1

    @classmethod
    def from_params(cls, params: dict[str, Any], **overrides: Any) -> CorpusConfig:
        block = dict(params.get("synthetic", {}) or {})
        block.update({k: v for k, v in overrides.items() if v is not None})
        ratios = block.pop("ratios", {}) or {}
        config = cls(
            n_images=int(block.get("n_images", cls.n_images)),
            seed=int(block.get("seed", cls.seed)),
            image_size=int(block.get("image_size", cls.image_size)),
            jpeg_quality=int(block.get("jpeg_quality", cls.jpeg_quality)),
            questions_per_image=int(block.get("questions_per_image", cls.questions_per_image)),
            train=float(ratios.get("train", cls.train)),
            valid=float(ratios.get("valid", cls.valid)),
        )
        if config.n_images < 1:
            raise ValueError(f"synthetic.n_images must be >= 1, got {config.n_images}")
        if config.image_size < 64:
            raise ValueError(f"synthetic.image_size must be >= 64, got {config.image_size}")
        if not 0 < config.train < 1 or not 0 <= config.valid < 1 - config.train:
            raise ValueError(
                f"synthetic.ratios: train {config.train} and valid {config.valid} must leave a "
                "test share (train + valid < 1)"
            )
        return config


@dataclass(frozen=True)
class StudyPlan:
    """Everything about one study except its pixels."""

    index: int
    patient_id: str
    study_id: str
    study_date: str
    split: str
    views: tuple[str, ...]
    findings: StudyFindings
    anatomy: Anatomy
    report: str
    labels: dict[str, float]

    def image_id(self, view: str) -> str:
        return f"{self.study_id}_{view.lower()}"


def _views(findings: StudyFindings, rng: np.random.Generator) -> tuple[str, ...]:
    """Portable AP (most ICU films with devices), else PA with a lateral most of the time."""
    portable = rng.random() < (0.85 if "devices" in findings.kinds() else 0.3)
    if portable:
        return ("AP",)
    return ("PA", "LATERAL") if rng.random() < 0.85 else ("PA",)


def _split(rng: np.random.Generator, config: CorpusConfig) -> str:
    draw = rng.random()
    return (
        "train"
        if draw < config.train
        else "valid"
        if draw < config.train + config.valid
        else "test"
    )


def plan_corpus(config: CorpusConfig) -> list[StudyPlan]:
    """Patients with 1–4 studies each until exactly ``n_images`` images are planned."""
    rng = np.random.default_rng([config.seed, 0])
    plans: list[StudyPlan] = []
    images = 0
    patient = 0
    while images < config.n_images:
        patient += 1
        patient_id = f"p{patient:05d}"
        anatomy = Anatomy.sample(rng)
        split = _split(rng, config)
        day = int(rng.integers(0, 300))
        visits = 1 + int(rng.choice(len(STUDIES_PER_PATIENT), p=STUDIES_PER_PATIENT))
        previous = ""
        for _ in range(visits):
            if images >= config.n_images:
                break
            findings = sample_study(rng)
            views = _views(findings, rng)[: config.n_images - images]
            day += int(rng.integers(1, 60))
            date = f"{2150 + day // 336}-{1 + day // 28 % 12:02d}-{1 + day % 28:02d}"
            exam = (
                EXAMINATIONS["AP"]
                if views[0] == "AP"
                else (EXAMINATIONS["PA"] if "LATERAL" in views else EXAMINATIONS["PA_ONLY"])
            )
            comparison = f"Chest radiograph of {previous}." if previous else "None."
            report, labels = write_report(findings, exam, comparison, rng)
            study_id = f"s{len(plans) + 1:06d}"
            plans.append(
                StudyPlan(
                    index=len(plans),
                    patient_id=patient_id,
                    study_id=study_id,
                    study_date=date,
                    split=split,
                    views=views,
                    findings=findings,
                    anatomy=anatomy,
                    report=report,
                    labels=labels,
                )
            )
            previous = date
            images += len(views)
    return plans


def _render_job(job: tuple[StudyPlan, str, int, Path, CorpusConfig]) -> str | None:
    """Draw and write one image; for a frontal view, return its ``regions.jsonl`` line."""
    plan, view, view_index, path, config = job
    rng = np.random.default_rng([config.seed, 1, plan.index, view_index])
    extents: dict[str, np.ndarray] = {}
    pixels = render(plan.findings, plan.anatomy, view, config.image_size, rng, extents)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=config.jpeg_quality)
    path.write_bytes(buffer.getvalue())
    if view == "LATERAL":
        return None
    masks = region_masks(extents, config.image_size)
    return regions_line(regions_entry(plan.image_id(view), masks, config.image_size))


def _label_text(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.1f}"


def _findings_json(plan: StudyPlan) -> str:
    return json.dumps(
        {
            "study_id": plan.study_id,
            "patient_id": plan.patient_id,
            "findings": [asdict(f) for f in plan.findings.findings],
        },
        sort_keys=True,
    )


def write_corpus(out: Path, config: CorpusConfig, workers: int = 1) -> dict[str, Any]:
    """Generate the corpus into ``out`` (replacing a previous corpus there); returns counts.

    Refuses to overwrite a directory that is not a synthetic corpus, so a mistyped ``--out``
    cannot delete a real dataset.
    """
    if out.exists() and any(out.iterdir()) and not (out / "corpus.json").is_file():
        raise ValueError(
            f"{out} exists and is not a synthetic corpus (no corpus.json); choose an empty or "
            "new directory"
        )
    for sub in ("images", "reports", "vqa"):
        shutil.rmtree(out / sub, ignore_errors=True)
    for sub in ("images", "reports", "vqa"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    plans = plan_corpus(config)
    source = f"medvill synthetic v{GENERATOR_VERSION} seed {config.seed}"
    rows: list[dict[str, str]] = []
    jobs: list[tuple[StudyPlan, str, int, Path, CorpusConfig]] = []
    questions: list[dict[str, Any]] = []
    vqa_rng = np.random.default_rng([config.seed, 2])
    for plan in plans:
        report_file = f"reports/{plan.study_id}.txt"
        (out / report_file).write_text(plan.report, encoding="utf-8")
        for view_index, view in enumerate(plan.views):
            image_file = f"images/{plan.image_id(view)}.jpg"
            jobs.append((plan, view, view_index, out / image_file, config))
            rows.append(
                {
                    "image_id": plan.image_id(view),
                    "patient_id": plan.patient_id,
                    "study_id": plan.study_id,
                    "view": view,
                    "image": image_file,
                    "report": report_file,
                    "synthetic": "true",
                    "study_date": plan.study_date,
                    "source": source,
                    "split": plan.split,
                }
            )
            if view != "LATERAL":
                questions.extend(
                    vqa_entries(
                        Path(image_file).name,
                        plan.findings,
                        view,
                        plan.split == "test",
                        len(questions),
                        vqa_rng,
                        config.questions_per_image,
                    )
                )
    regions = [
        line
        for line in parallel_map(_render_job, jobs, workers, "synthetic images", chunksize=16)
        if line is not None
    ]
    (out / REGIONS_FILE).write_text("".join(f"{line}\n" for line in regions), encoding="utf-8")
    with (out / "manifest.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(MANIFEST_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    with (out / "labels.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["study_id", *CHEXPERT_LABELS])
        for plan in plans:
            writer.writerow(
                [plan.study_id, *(_label_text(plan.labels[n]) for n in CHEXPERT_LABELS)]
            )
    (out / "findings.jsonl").write_text(
        "".join(_findings_json(plan) + "\n" for plan in plans), encoding="utf-8"
    )
    (out / VQA_FILE).write_text(json.dumps(questions, indent=1) + "\n", encoding="utf-8")
    summary = {
        "generator_version": GENERATOR_VERSION,
        "seed": config.seed,
        "image_size": config.image_size,
        "jpeg_quality": config.jpeg_quality,
        "images": len(rows),
        "studies": len(plans),
        "patients": len({p.patient_id for p in plans}),
        "questions": len(questions),
        "views": {v: sum(r["view"] == v for r in rows) for v in ("PA", "AP", "LATERAL")},
        "splits": {s: sum(p.split == s for p in plans) for s in ("train", "valid", "test")},
    }
    (out / "corpus.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def read_ground_truth(raw: Path) -> dict[str, dict[str, float]]:
    """``labels.csv`` of a corpus: study id → the 14 labels (NaN = not mentioned)."""
    path = raw / "labels.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ground-truth labels not found (not a synthetic corpus?)")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [n for n in ("study_id", *CHEXPERT_LABELS) if n not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}")
        return {
            row["study_id"]: {n: float(row[n]) if row[n] else math.nan for n in CHEXPERT_LABELS}
            for row in reader
        }
