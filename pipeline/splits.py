"""The split stage: patient-level train / valid / test assignment.

Where a dataset ships an official split (MIMIC-CXR's ``mimic-cxr-2.0.0-split.csv.gz``) it is
used as is, so numbers stay comparable with published work. Otherwise each patient goes to a
split by a stable hash of ``(seed, patient_id)``: the assignment of a patient never depends on
which other patients exist, so adding new patients never moves existing ones between splits
(and a model never ends up evaluated on a patient it was trained on after a data refresh).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import pandas as pd

from pipeline.params import DatasetPaths
from pipeline.records import read_parquet, require_columns, write_parquet
from pipeline.stage import StageRun

SPLITS = ("train", "valid", "test")


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


def check_patient_level(frame: pd.DataFrame) -> None:
    """Raise SplitLeakError naming the patients that appear in two splits."""
    per_patient = frame.groupby("patient_id")["split"].nunique()
    leaking = per_patient[per_patient > 1].index.tolist()
    if leaking:
        examples = ", ".join(map(str, leaking[:5]))
        raise SplitLeakError(
            f"{len(leaking)} patient(s) appear in more than one split (e.g. {examples}); "
            "a patient-level split is required to avoid train/test leakage. Check the "
            "dataset's official split file or set split.use_official: false."
        )


def run_stage(paths: DatasetPaths, params: dict[str, Any], workers: int) -> dict[str, Any]:
    """Assign splits to ``<interim>/label/records.parquet`` → ``<interim>/split/``."""
    config = params.get("split", {})
    ratios = validate_ratios(config.get("ratios", {"train": 0.8, "valid": 0.1, "test": 0.1}))
    seed = int(config.get("seed", 123))
    source = paths.stage_dir("label") / "records.parquet"
    records = read_parquet(source)
    require_columns(records, ["patient_id", "official_split"], source)
    run = StageRun("split", paths.name, paths.stage_dir("split"))
    run.n_in = len(records)

    official = records["official_split"].fillna("").astype(str)
    use_official = bool(config.get("use_official", True))
    hashed = records["patient_id"].astype(str).map(lambda p: assign_split(seed, p, ratios))
    has_official = use_official & official.isin(SPLITS)
    out = records.copy()
    out["split"] = official.where(has_official, hashed).astype("string")
    check_patient_level(out)

    patients = (
        out[["patient_id", "split"]].drop_duplicates().sort_values("patient_id", kind="stable")
    )
    write_parquet(patients.reset_index(drop=True), paths.stage_dir("split") / "patients.parquet")
    run.extra["source"] = "official" if bool(has_official.all()) and len(out) else "hash"
    run.extra["official_rows"] = int(has_official.sum())
    run.extra["seed"] = seed
    run.extra["ratios"] = ratios
    run.extra["splits"] = {
        name: {
            "records": int((out["split"] == name).sum()),
            "patients": int(out.loc[out["split"] == name, "patient_id"].nunique()),
            "studies": int(out.loc[out["split"] == name, "study_id"].nunique()),
        }
        for name in SPLITS
    }
    return run.finish(out)
