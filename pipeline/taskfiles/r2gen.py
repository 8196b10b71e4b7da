"""R2Gen-style ``annotation.json`` for the R2Gen family of report-generation code.

R2Gen reads ``{"train": [...], "val": [...], "test": [...]}`` with entries
``{id, report, image_path: [...], split}`` (MIMIC entries also carry ``study_id`` and
``subject_id``). We write one entry per task record, with the same ``id`` and report text as
the JSONL, so that both families train on the same pairs. ``image_path`` lists every usable
image of the record's study, the JSONL image first, relative to the same root as the JSONL
``img`` (pass that root as R2Gen's ``--image_dir``). Labels play no part here, so unlabelled
records are included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.taskfiles.common import SPLITS, TaskRecord

#: Our split name → R2Gen's.
R2GEN_SPLIT: dict[str, str] = {"train": "train", "valid": "val", "test": "test"}


def numeric_id(value: str, prefix: str) -> int | str:
    """``"s50414267"``/``"50414267"`` → ``50414267`` as R2Gen's MIMIC file has; else unchanged."""
    digits = value[len(prefix) :] if value.startswith(prefix) else value
    return int(digits) if digits.isdigit() else value


def r2gen_entry(record: TaskRecord, with_ids: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "id": record.task_id,
        "report": record.text,
        "image_path": list(record.images),
        "split": R2GEN_SPLIT[record.split],
    }
    if with_ids:
        entry["study_id"] = numeric_id(record.study_id, "s")
        entry["subject_id"] = numeric_id(record.patient_id, "p")
    return entry


def annotation(records: Sequence[TaskRecord], with_ids: bool) -> dict[str, list[dict[str, Any]]]:
    """The annotation mapping, every list sorted by id (stable bytes on rerun)."""
    return {
        R2GEN_SPLIT[split]: [
            r2gen_entry(record, with_ids)
            for record in sorted(records, key=lambda r: r.task_id)
            if record.split == split
        ]
        for split in SPLITS
    }
