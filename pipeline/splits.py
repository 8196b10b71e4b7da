"""The split stage: patient-level train / valid / test assignment.

Where a dataset ships an official split (MIMIC-CXR's ``mimic-cxr-2.0.0-split.csv.gz``) it is
used as is, so numbers stay comparable with published work. Otherwise each patient goes to a
split by a stable hash of ``(seed, patient_id)``: the assignment of a patient never depends on
which other patients exist, so adding new patients never moves existing ones between splits
(and a model never ends up evaluated on a patient it was trained on after a data refresh).

An official split may also hold only a test set: records marked :data:`TRAIN_OR_VALID` are the
release's training part, whose patients are hashed between train and valid with the ratios of
those two (NIH ChestX-ray14's ``train_val_list.txt``, Object-CXR's ``train`` folder).

Report datasets are split after labelling (``label/records.parquet``); the localized datasets
(RSNA, SIIM-ACR, NIH boxes, Object-CXR: boxes and masks, no reports) have no text stages and
are split straight from ``ingest/records.parquet``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping
from typing import Any

import pandas as pd

from pipeline.datasets import LOCALIZED_ADAPTERS
from pipeline.params import DatasetPaths
from pipeline.records import require_table, write_parquet
from pipeline.stage import StageRun
from pipeline.tables import FrameWriter, iter_frames, table_rows

SPLITS = ("train", "valid", "test")
#: ``official_split`` of a record in the release's training part when the release sets a test
#: set apart but no validation set: its patient is hashed between train and valid.
TRAIN_OR_VALID = "train_or_valid"


class SplitLeakError(ValueError):
    """A patient appears in more than one split."""


def validate_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    unknown = set(ratios) - set(SPLITS)
    if unknown:
        raise ValueError(f"split.ratios: unknown split(s) {sorted(unknown)}; use {SPLITS}")
    values = {name: float(ratios.get(name, 0.0)) for name in SPLITS}
    if any(v < 0 for v in values.values()) or abs(sum(values.values()) - 1.0) > 1e-6:
        raise ValueError(f"split.ratios must be non-negative and sum to 1, got {values}")
    return values


def hash_unit(seed: int, patient_id: str) -> float:
    """A uniform number in [0, 1) that depends only on (seed, patient_id)."""
    digest = hashlib.sha256(f"{seed}:{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(seed: int, patient_id: str, ratios: Mapping[str, float]) -> str:
    """The split of one patient: where its hash falls on the cumulative ratios."""
    point = hash_unit(seed, patient_id)
    cumulative = 0.0
    for name in SPLITS:
        cumulative += ratios[name]
        if point < cumulative:
            return name
    return SPLITS[-1]


def train_or_valid_ratios(ratios: Mapping[str, float]) -> dict[str, float]:
    """``ratios`` without test, renormalised: how the release's training part is divided."""
    kept = ratios["train"] + ratios["valid"]
    if kept <= 0:
        raise ValueError(
            f"split.ratios {dict(ratios)} leave nothing for train or valid, but the dataset's "
            "official split asks for its training part to be divided between them"
        )
    return {"train": ratios["train"] / kept, "valid": ratios["valid"] / kept, "test": 0.0}


def source_stage(paths: DatasetPaths) -> str:
    """The stage whose records the split reads: ``label``, or ``ingest`` for a localized
    dataset (no report, so no sections or labels)."""
    return "ingest" if paths.adapter in LOCALIZED_ADAPTERS else "label"


def check_patient_level(frame: pd.DataFrame) -> None:
    """Raise SplitLeakError naming the patients that appear in two splits."""
    splits_of: dict[str, set[str]] = {}
    for patient, split in zip(frame["patient_id"], frame["split"], strict=True):
        splits_of.setdefault(patient, set()).add(split)
    raise_if_leaking(splits_of)


def raise_if_leaking(splits_of: dict[str, set[str]]) -> None:
    """Raise SplitLeakError when a patient (key) has more than one split (value)."""
    leaking = sorted(p for p, splits in splits_of.items() if len(splits) > 1)
    if leaking:
        examples = ", ".join(map(str, leaking[:5]))
        raise SplitLeakError(
            f"{len(leaking)} patient(s) appear in more than one split (e.g. {examples}); "
            "a patient-level split is required to avoid train/test leakage. Check the "
            "dataset's official split file or set split.use_official: false."
        )


def run_stage(paths: DatasetPaths, params: dict[str, Any], workers: int) -> dict[str, Any]:
    """Assign splits to ``<interim>/label/records.parquet`` (localized datasets:
    ``ingest/records.parquet``) → ``<interim>/split/``.

    The table is read and written in batches (:mod:`pipeline.tables`); the patient-level
    check and the counts keep only ids (patient → splits, studies per split).
    """
    config = params.get("split", {})
    ratios = validate_ratios(config.get("ratios", {"train": 0.8, "valid": 0.1, "test": 0.1}))
    seed = int(config.get("seed", 123))
    source = paths.stage_dir(source_stage(paths)) / "records.parquet"
    require_table(source, ["patient_id", "official_split"])
    run = StageRun("split", paths.name, paths.stage_dir("split"))
    run.n_in = table_rows(source)

    use_official = bool(config.get("use_official", True))
    splits_of: dict[str, set[str]] = {}
    records_in = dict.fromkeys(SPLITS, 0)
    studies_in: dict[str, set[str]] = {name: set() for name in SPLITS}
    official_rows = 0
    patient_dtype: Any = "string"
    with FrameWriter(paths.stage_dir("split") / "records.parquet") as writer:
        for records in iter_frames(source):
            patient_dtype = records["patient_id"].dtype
            official = records["official_split"].fillna("").astype(str)
            partial = use_official & (official == TRAIN_OR_VALID)
            part_ratios = train_or_valid_ratios(ratios) if partial.any() else ratios
            patient_ids = records["patient_id"].astype(str)
            hashed = [
                assign_split(seed, p, part_ratios if part else ratios)
                for p, part in zip(patient_ids, partial, strict=True)
            ]
            has_official = use_official & official.isin(SPLITS)
            out = records.copy()
            out["split"] = official.where(has_official, pd.Series(hashed, index=records.index))
            out["split"] = out["split"].astype("string")
            official_rows += int(has_official.sum()) + int(partial.sum())
            for patient, study, split in zip(
                out["patient_id"], out["study_id"], out["split"], strict=True
            ):
                splits_of.setdefault(patient, set()).add(split)
                if split in records_in:
                    records_in[split] += 1
                    studies_in[split].add(study)
            writer.write(out)
        raise_if_leaking(splits_of)  # before the table is renamed into place

    patients = pd.DataFrame(
        sorted((patient, next(iter(splits))) for patient, splits in splits_of.items()),
        columns=["patient_id", "split"],
    )
    patients = patients.astype({"patient_id": patient_dtype, "split": "string"})
    write_parquet(patients, paths.stage_dir("split") / "patients.parquet")
    patients_in = Counter(split for _, split in patients.itertuples(index=False))
    run.extra["source"] = "official" if official_rows == writer.rows and writer.rows else "hash"
    run.extra["official_rows"] = official_rows
    run.extra["seed"] = seed
    run.extra["ratios"] = ratios
    run.extra["splits"] = {
        name: {
            "records": records_in[name],
            "patients": patients_in[name],
            "studies": len(studies_in[name]),
        }
        for name in SPLITS
    }
    return run.finish_streamed(writer.rows)
