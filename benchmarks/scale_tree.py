"""A MIMIC-CXR-JPG-layout tree of any size, for measuring how the pipeline scales.

MIMIC-CXR-JPG itself is credentialed data; this writes a stand-in with its layout and columns
(docs/adding_a_dataset.md, ``pipeline/datasets/mimic_cxr.py``) so that every stage can be run
at 10k–400k images on any machine:

* ``mimic-cxr-2.0.0-metadata.csv.gz`` — MIMIC's 12 columns (``dicom_id``, ``subject_id``,
  ``study_id``, ``PerformedProcedureStepDescription``, ``ViewPosition``, ``Rows``, ``Columns``,
  ``StudyDate``, ``StudyTime``, and the three ``…CodeSequence_CodeMeaning`` columns);
* ``mimic-cxr-2.0.0-split.csv.gz`` (``dicom_id, study_id, subject_id, split`` with MIMIC's
  ``train``/``validate``/``test`` proportions, patient-level);
* ``mimic-cxr-2.0.0-chexpert.csv.gz`` (``subject_id, study_id`` + the 14 labels, MIMIC's column
  order, 1.0/0.0/-1.0/blank) from the findings each report states;
* ``files/pXX/p<subject>/s<study>/<dicom_id>.jpg`` and ``files/pXX/p<subject>/s<study>.txt``.

The proportions follow MIMIC-CXR-JPG 2.0: ≈ 1.65 images per study, ≈ 3.5 studies per patient,
views AP 39 % / PA 26 % / LATERAL 22 % / LL 9 % / other, 98.6 % train. Reports are MIMIC-style
(FINAL REPORT banner, EXAMINATION, INDICATION, COMPARISON, FINDINGS, IMPRESSION; some without
FINDINGS, some wet reads) of 300–1,000 characters, assembled from a few hundred sentence
variants (findings with side, size and hedge words, negations), so the labeler's sentence
cache sees realistic repetition. Images are small real JPEGs (80–120 px, a black film border
and a body-like gradient), so the image work per record is cheap and the measurement is about
the pipeline's own scaling. A few records are broken on purpose (missing JPG, missing or empty
report), as in real exports, so rejects are part of every run.

Same ``(n_images, seed)`` → the same tree, byte for byte.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

METADATA = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT = "mimic-cxr-2.0.0-split.csv.gz"
CHEXPERT = "mimic-cxr-2.0.0-chexpert.csv.gz"

METADATA_COLUMNS = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
#: MIMIC's chexpert CSV lists the observations alphabetically.
CHEXPERT_COLUMNS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
#: (ViewPosition, share of images, ViewCodeSequence meaning, PatientOrientation meaning).
VIEWS = (
    ("AP", 0.39, "antero-posterior", "Erect"),
    ("PA", 0.26, "postero-anterior", "Erect"),
    ("LATERAL", 0.22, "lateral", "Erect"),
    ("LL", 0.09, "left lateral", "Erect"),
    ("", 0.04, "", ""),
)
#: MIMIC-CXR-JPG 2.0 images per split: 368,960 train, 2,991 validate, 5,159 test.
SPLIT_SHARES = (("train", 0.9784), ("validate", 0.0079), ("test", 0.0137))
#: Share of studies whose report file is missing / empty, and of images whose JPG is missing.
BROKEN_REPORT, EMPTY_REPORT, MISSING_IMAGE = 0.002, 0.002, 0.001

#: Findings a report can state: (CheXpert label, positive sentences, negative sentence).
FINDINGS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "Pleural Effusion",
        (
            "There is a {size} {side} pleural effusion.",
            "{Size} {side} pleural effusion is again seen.",
            "Blunting of the {side} costophrenic angle suggests a {size} effusion.",
        ),
        "No pleural effusion.",
    ),
    (
        "Cardiomegaly",
        (
            "The heart is {degree} enlarged.",
            "{Degree} cardiomegaly is unchanged.",
            "Cardiac silhouette is {degree} enlarged.",
        ),
        "Heart size is normal.",
    ),
    (
        "Pneumothorax",
        ("There is a {size} {side} apical pneumothorax.", "{Size} {side} pneumothorax."),
        "No pneumothorax.",
    ),
    (
        "Edema",
        (
            "There is {degree} pulmonary edema.",
            "{Degree} interstitial edema has worsened.",
            "Pulmonary vascular congestion with {degree} edema.",
        ),
        "No pulmonary edema.",
    ),
    (
        "Consolidation",
        ("There is consolidation in the {side} lower lobe.", "{Side} basilar consolidation."),
        "No focal consolidation.",
    ),
    (
        "Pneumonia",
        (
            "Opacity in the {side} lower lobe may reflect pneumonia.",
            "Findings are concerning for {side} lower lobe pneumonia.",
        ),
        "No evidence of pneumonia.",
    ),
    (
        "Atelectasis",
        (
            "{Side} basilar opacity likely reflects atelectasis.",
            "Mild bibasilar atelectasis.",
            "Linear atelectasis at the {side} base.",
        ),
        "No atelectasis.",
    ),
    (
        "Lung Opacity",
        ("There is a {size} opacity in the {side} mid lung.", "Patchy {side} basilar opacity."),
        "The lungs are clear.",
    ),
    (
        "Lung Lesion",
        ("A {size} nodule projects over the {side} upper lobe.", "There is a {side} lung mass."),
        "No suspicious pulmonary nodule.",
    ),
    (
        "Support Devices",
        (
            "Endotracheal tube terminates {distance} cm above the carina.",
            "Right internal jugular central venous catheter ends in the mid SVC.",
            "Enteric tube courses below the diaphragm.",
            "Left chest wall pacemaker with leads in the right atrium and ventricle.",
        ),
        "",
    ),
    (
        "Fracture",
        ("Old healed {side} rib fractures are noted.", "There is a {side} clavicle fracture."),
        "No acute displaced fracture.",
    ),
)
INDICATIONS = (
    "___ year old {sex} with shortness of breath.",
    "___ year old {sex} with fever and cough, evaluate for pneumonia.",
    "___ year old {sex} status post line placement, assess position.",
    "History: ___{letter} with chest pain.",
    "___ year old {sex} with hypoxia.",
    "___ year old {sex} intubated, evaluate tube position.",
)
EXAMS = ("CHEST (PORTABLE AP)", "CHEST (PA AND LAT)", "CHEST (PRE-OP PA AND LAT)")
COMPARISONS = ("___", "Chest radiograph from ___.", "None.", "Prior study from ___ at 08:12.")
CLOSINGS = (
    "No acute cardiopulmonary process.",
    "Findings as above.",
    "Recommend follow-up radiograph.",
    "Interval improvement.",
    "Stable appearance of the chest.",
)
WORDS = {
    "side": ("left", "right", "bilateral"),
    "size": ("small", "moderate", "large"),
    "degree": ("mildly", "moderately", "severely"),
    "distance": ("3", "4", "5", "6"),
}


@dataclass(frozen=True)
class TreeSummary:
    """What was written: counts a test or the benchmark can check against stage stats."""

    images: int
    studies: int
    patients: int
    jpg_missing: int
    reports_missing: int
    reports_empty: int


def _fill(template: str, rng: np.random.Generator) -> str:
    values = {name: str(rng.choice(options)) for name, options in WORDS.items()}
    values |= {name.capitalize(): value.capitalize() for name, value in values.items()}
    return template.format(**values)


def report_text(rng: np.random.Generator, view: str) -> tuple[str, dict[str, float]]:
    """One MIMIC-style report and the CheXpert labels it states (label → 1.0 / 0.0)."""
    labels: dict[str, float] = {}
    findings: list[str] = []
    n_positive = int(rng.choice(5, p=[0.3, 0.3, 0.2, 0.12, 0.08]))
    positive = set(rng.choice(len(FINDINGS), size=n_positive, replace=False).tolist())
    for index, (label, sentences, negative) in enumerate(FINDINGS):
        if index in positive:
            findings.append(_fill(str(rng.choice(sentences)), rng))
            labels[label] = 1.0
        elif negative and rng.random() < 0.45:
            findings.append(negative)
            labels[label] = 0.0
    if not positive:
        labels["No Finding"] = 1.0
    order = rng.permutation(len(findings))
    body = " ".join(findings[i] for i in order) or "The lungs are clear."
    impression = str(rng.choice(CLOSINGS)) if not positive or rng.random() < 0.3 else body
    sex = str(rng.choice(("man", "woman")))
    exam = EXAMS[0] if view == "AP" else str(rng.choice(EXAMS[1:]))
    parts = [" " * 33 + "FINAL REPORT", f" EXAMINATION:  {exam}"]
    parts.append(" INDICATION:  " + str(rng.choice(INDICATIONS)).format(sex=sex, letter="F"))
    parts.append(f" COMPARISON:  {rng.choice(COMPARISONS)}")
    if rng.random() < 0.85:  # some MIMIC reports have an impression only
        parts.append(f" FINDINGS: \n \n {body}")
    parts.append(f" IMPRESSION: \n \n {impression}")
    if rng.random() < 0.05:
        parts.insert(0, " WET READ: ___ ___ 9:41 AM\n  " + body[:80])
    return "\n \n".join(parts) + "\n", labels


def jpeg_pool(rng: np.random.Generator, count: int = 24) -> list[tuple[bytes, int, int]]:
    """Small grey radiograph-like JPEGs: black border, bright body, darker lung fields."""
    pool = []
    for _ in range(count):
        height, width = int(rng.integers(96, 121)), int(rng.integers(80, 105))
        x = np.mgrid[0:height, 0:width][1]
        body = 170 - 60 * np.exp(-(((x - width * 0.3) / (width * 0.15)) ** 2))
        body -= 60 * np.exp(-(((x - width * 0.7) / (width * 0.15)) ** 2))
        body = body + rng.normal(0, 6, size=body.shape)
        pixels = np.clip(body, 0, 255).astype(np.uint8)
        border = int(rng.integers(4, 10))
        pixels[:border, :] = pixels[-border:, :] = 0
        pixels[:, :border] = pixels[:, -border:] = 0
        buffer = io.BytesIO()
        Image.fromarray(pixels, mode="L").save(buffer, format="JPEG", quality=90)
        pool.append((buffer.getvalue(), height, width))
    return pool


def _dicom_id(rng: np.random.Generator) -> str:
    return "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=5))


def _write_gz_csv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    # mtime=0: the gzip header holds no timestamp, so the file is byte-identical on rerun
    path.write_bytes(gzip.compress(text.getvalue().encode("utf-8"), mtime=0))


def write_tree(root: Path, n_images: int, seed: int = 0) -> TreeSummary:
    """Write a tree of exactly ``n_images`` metadata rows under ``root``."""
    rng = np.random.default_rng(seed)
    pool = jpeg_pool(rng)
    view_names = [v[0] for v in VIEWS]
    view_shares = np.array([v[1] for v in VIEWS])
    view_shares = view_shares / view_shares.sum()
    meaning = {v[0]: (v[2], v[3]) for v in VIEWS}
    metadata: list[tuple[str, ...]] = []
    splits: list[tuple[str, ...]] = []
    chexpert: list[tuple[str, ...]] = []
    used_ids: set[str] = set()
    counts = {"studies": 0, "patients": 0, "jpg": 0, "missing": 0, "empty": 0}
    subject, study = 10_000_000, 50_000_000
    written = 0
    while written < n_images:
        subject += int(rng.integers(1, 40))
        counts["patients"] += 1
        split = str(rng.choice([s for s, _ in SPLIT_SHARES], p=[p for _, p in SPLIT_SHARES]))
        for _ in range(int(rng.integers(1, 7))):  # ≈ 3.5 studies per patient
            if written >= n_images:
                break
            study += int(rng.integers(1, 1000))
            counts["studies"] += 1
            n_study = min(int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15])), n_images - written)
            views = [str(v) for v in rng.choice(view_names, size=n_study, p=view_shares)]
            frontal = next((v for v in views if v in ("AP", "PA")), "AP")
            text, labels = report_text(rng, frontal)
            folder = root / f"files/p{str(subject)[:2]}/p{subject}"
            folder.mkdir(parents=True, exist_ok=True)
            fate = rng.random()
            if fate < BROKEN_REPORT:
                counts["missing"] += 1
            else:
                if fate < BROKEN_REPORT + EMPTY_REPORT:
                    text = ""
                    counts["empty"] += 1
                (folder / f"s{study}.txt").write_text(text, encoding="utf-8")
            chexpert.append(
                (
                    str(subject),
                    str(study),
                    *(str(labels[c]) if c in labels else "" for c in CHEXPERT_COLUMNS),
                )
            )
            (folder / f"s{study}").mkdir(exist_ok=True)
            date = f"21{int(rng.integers(10, 99)):02d}{int(rng.integers(1, 13)):02d}15"
            for view in views:
                dicom_id = _dicom_id(rng)
                while dicom_id in used_ids:
                    dicom_id = _dicom_id(rng)
                used_ids.add(dicom_id)
                data, height, width = pool[int(rng.integers(len(pool)))]
                if rng.random() >= MISSING_IMAGE:
                    (folder / f"s{study}" / f"{dicom_id}.jpg").write_bytes(data)
                else:
                    counts["jpg"] += 1
                code, orientation = meaning[view]
                metadata.append(
                    (
                        dicom_id,
                        str(subject),
                        str(study),
                        EXAMS[0] if view == "AP" else EXAMS[1],
                        view,
                        str(height),
                        str(width),
                        date,
                        f"{int(rng.integers(0, 235959)):06d}.000",
                        "Chest X-ray",
                        code,
                        orientation,
                    )
                )
                splits.append((dicom_id, str(study), str(subject), split))
                written += 1
    _write_gz_csv(root / METADATA, METADATA_COLUMNS, metadata)
    _write_gz_csv(root / SPLIT, ("dicom_id", "study_id", "subject_id", "split"), splits)
    _write_gz_csv(root / CHEXPERT, ("subject_id", "study_id", *CHEXPERT_COLUMNS), chexpert)
    return TreeSummary(
        images=written,
        studies=counts["studies"],
        patients=counts["patients"],
        jpg_missing=counts["jpg"],
        reports_missing=counts["missing"],
        reports_empty=counts["empty"],
    )


def main() -> None:
    """``python benchmarks/scale_tree.py ROOT N_IMAGES [SEED]``: write a tree, print its
    summary as JSON (bench_scale.py runs this in its own process, see there)."""
    import json
    import sys
    from dataclasses import asdict

    root, n_images = Path(sys.argv[1]), int(sys.argv[2])
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    print(json.dumps(asdict(write_tree(root, n_images, seed))))


if __name__ == "__main__":
    main()
