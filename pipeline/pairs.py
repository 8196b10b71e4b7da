"""The ``pairs`` stage: MedViLL-compatible task files from the labelled, split records.

MedViLL never released the code that made its data files; this stage rebuilds them so our files
are drop-in for the original code and our own training reads the same content. Inputs are
``<interim>/split/records.parquet`` (labels + split) inner-joined on ``image_id`` with
``<interim>/images/records.parquet`` (the 512² image), the same rule the shards stage uses.
Outputs under ``<interim>/pairs/``:

* ``Train.jsonl``/``Valid.jsonl``/``Test.jsonl`` — report/image JSONL (``taskfiles.jsonl``);
* ``irm_negatives.parquet`` — ``key``, ``text``, ``negative_keys``, ``labels`` for every
  training record (``taskfiles.irm``);
* ``I2T_Label_{Valid,Test}.jsonl``/``T2I_Label_{Valid,Test}.jsonl`` (``taskfiles.retrieval``);
* ``annotation.json`` — R2Gen export (``taskfiles.r2gen``);
* ``label_sets.json`` — the full label-set distribution per split;
* ``records.parquet`` (one row per usable image, with the task id it belongs to),
  ``rejects.parquet``, ``stats.json``, ``timing.json`` via ``StageRun``.

Unit of a task record (``pairs.unit``): MedViLL used one image per study, so for MIMIC-CXR
(``auto`` → ``study``) a record is a study, its id is the study id with an ``s`` prefix and its
image is the study's first AP image (MedViLL's 91,685 pairs are AP), else its first PA image,
else its first image, by image id; other datasets (``auto`` →
``image``) get one record per image with id = image id. Unlabelled records (all 14 labels
blank) stay in the JSONL and the R2Gen export with an empty label but are left out of the IRM
negatives and retrieval blocks; stats.json counts them.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.params import DatasetPaths
from pipeline.records import (
    CHEXPERT_LABELS,
    read_parquet,
    sample_key,
    stream_json,
    write_json,
)
from pipeline.stage import StageRun
from pipeline.taskfiles.common import (
    FILE_SPLIT,
    SPLITS,
    STYLES,
    LabelSet,
    TaskRecord,
    format_label,
    image_path,
    label_set_name,
)
from pipeline.taskfiles.irm import sample_negatives, write_irm
from pipeline.taskfiles.jsonl import write_jsonl, write_split_files
from pipeline.taskfiles.r2gen import annotation
from pipeline.taskfiles.retrieval import DIRECTIONS, RetrievalResult, iter_blocks

log = logging.getLogger("medvill")

STAGE = "pairs"
UNITS: tuple[str, ...] = ("study", "image")
#: The split-table columns the task files are built from (nothing else is read).
SPLIT_COLUMNS: tuple[str, ...] = (
    "dataset",
    "image_id",
    "patient_id",
    "study_id",
    "view",
    "image_path",
    "chosen_text",
    *CHEXPERT_LABELS,
    "split",
)
#: Retrieval files are built for the held-out splits only, as in the original release.
RETRIEVAL_SPLITS: tuple[str, ...] = ("valid", "test")
#: Fixed RNG stream per output so that e.g. changing K leaves the retrieval files unchanged.
IRM_STREAM = 0
#: A study's task image is its first image of the first view here that it has (then any view).
VIEW_PREFERENCE: tuple[str, ...] = ("AP", "PA")
#: Labels sets listed in stats.json per split (the full distribution is in label_sets.json).
TOP_LABEL_SETS = 10


@dataclass(frozen=True)
class PairsConfig:
    """The ``pairs:`` block of params.yaml, validated and with ``auto`` resolved."""

    seed: int
    unit: str
    style: str
    image_root: Path
    irm_negatives_k: int
    retrieval_candidates: int
    mimic_ids: bool

    @classmethod
    def from_params(cls, params: dict[str, Any], adapter: str) -> PairsConfig:
        block = params.get(STAGE, {}) or {}
        unit = str(block.get("unit", "auto"))
        style = str(block.get("style", "auto"))
        if unit == "auto":
            unit = "study" if adapter == "mimic_cxr" else "image"
        if style == "auto":
            style = "openi" if adapter == "openi" else "mimic"
        if unit not in UNITS:
            raise ValueError(f"pairs.unit must be auto, study or image, got '{unit}'")
        if style not in STYLES:
            raise ValueError(f"pairs.style must be auto, mimic or openi, got '{style}'")
        config = cls(
            seed=int(block.get("seed", 123)),
            unit=unit,
            style=style,
            image_root=Path(str(block.get("image_root", "."))),
            irm_negatives_k=int(block.get("irm_negatives_k", 10)),
            retrieval_candidates=int(block.get("retrieval_candidates", 100)),
            mimic_ids=adapter == "mimic_cxr",
        )
        if config.irm_negatives_k < 1:
            raise ValueError(f"pairs.irm_negatives_k must be >= 1, got {config.irm_negatives_k}")
        if config.retrieval_candidates < 2:
            raise ValueError(
                f"pairs.retrieval_candidates must be >= 2, got {config.retrieval_candidates}"
            )
        return config

    def rng(self, stream: int) -> np.random.Generator:
        """An independent seeded generator per output file."""
        return np.random.default_rng([self.seed, stream])


def retrieval_stream(direction: str, split: str) -> int:
    return 1 + DIRECTIONS.index(direction) * len(RETRIEVAL_SPLITS) + RETRIEVAL_SPLITS.index(split)


def study_task_id(study_id: str, mimic: bool) -> str:
    """MIMIC ids carry an ``s`` prefix (``s50000000``); other study ids are kept as they are."""
    if mimic and not study_id.startswith("s"):
        return f"s{study_id}"
    return study_id


def _unusable(row: Any, files: dict[str, str], image_rejects: Path) -> tuple[str, str] | None:
    """Why a split record cannot become a task record (code, reason), or None if it can."""
    image_id = str(row.image_id)
    if image_id not in files:
        return (
            "no_image",
            f"image {image_id} ({row.image_path}) was rejected by the images stage "
            f"(see {image_rejects}); no processed image",
        )
    if row.split not in SPLITS:
        return (
            "bad_split",
            f"image {image_id} ({row.image_path}): split '{row.split}' is not one of "
            f"{', '.join(SPLITS)}",
        )
    text = row.chosen_text if isinstance(row.chosen_text, str) else ""
    if not text.strip():
        return (
            "empty_text",
            f"image {image_id} (study {row.study_id}, {row.image_path}): chosen_text is "
            "empty; no report to pair with the image",
        )
    return None


def load_usable(paths: DatasetPaths, run: StageRun) -> pd.DataFrame:
    """Split records joined with processed images; every other record becomes a reject.

    Only the columns the task files need are read (:data:`SPLIT_COLUMNS`): the split table
    also carries every raw report, its sections as JSON and metadata, which at MIMIC-CXR scale
    are most of its bytes. Reject codes: ``no_image`` (rejected by the images stage),
    ``bad_split`` (split not train/valid/test), ``empty_text`` (no chosen text to pair with
    the image).
    """
    split_path = paths.stage_dir("split") / "records.parquet"
    images_path = paths.stage_dir("images") / "records.parquet"
    records = read_parquet(split_path, SPLIT_COLUMNS)
    images = read_parquet(images_path, ("image_id", "image_file"))
    duplicated = images["image_id"][images["image_id"].duplicated()]
    if len(duplicated):
        raise ValueError(
            f"{images_path}: image id(s) listed twice, e.g. {sorted(duplicated)[:3]}; "
            "re-run the images stage."
        )
    run.n_in = len(records)
    files = dict(zip(images["image_id"].astype(str), images["image_file"].astype(str), strict=True))
    del images
    keep: list[bool] = []
    for row in records[["image_id", "image_path", "split", "chosen_text", "study_id"]].itertuples(
        index=False
    ):
        problem = _unusable(row, files, paths.stage_dir("images") / "rejects.parquet")
        if problem is not None:
            run.reject(str(row.image_id), *problem)
        keep.append(problem is None)
    # Arrow-backed text columns are copied by every filter and sort: one frame at a time
    usable = records[pd.Series(keep, index=records.index, dtype=bool)]
    del records
    usable = usable.sort_values("image_id", kind="stable").reset_index(drop=True)
    usable["image_file"] = [files[str(i)] for i in usable["image_id"]]
    return usable


def view_rank(views: pd.Series) -> np.ndarray:
    """Per image, the index of its view in ``VIEW_PREFERENCE`` (other views rank last)."""
    upper = views.fillna("").astype(str).str.upper()
    rank = {view: index for index, view in enumerate(VIEW_PREFERENCE)}
    return np.array([rank.get(v, len(VIEW_PREFERENCE)) for v in upper], dtype=np.int64)


def label_sets(values: np.ndarray) -> list[LabelSet | None]:
    """:func:`positive_labels` of every row of an (n, 14) label matrix, without a per-row
    Series: None when all 14 are blank, else the names valued 1.0."""
    blank = np.isnan(values)
    positive = values == 1.0
    names = np.array(CHEXPERT_LABELS, dtype=object)
    return [
        None if all_blank else frozenset(names[row].tolist())
        for all_blank, row in zip(blank.all(axis=1), positive, strict=True)
    ]


def task_records(
    usable: pd.DataFrame, paths: DatasetPaths, config: PairsConfig
) -> tuple[list[TaskRecord], pd.DataFrame]:
    """Group usable images into task records; returns them and the per-image output table.

    ``usable`` is sorted by image id. A record's representative is its first image of the
    most preferred view in ``VIEW_PREFERENCE``, found for all records at once by a
    stable sort on (task id, view rank): a loop over 200k study groups took minutes.
    """
    images_dir = paths.stage_dir("images")
    usable = usable.assign(
        img=[image_path(images_dir, f, config.image_root) for f in usable["image_file"]],
        key=[
            sample_key(str(d), str(i))
            for d, i in zip(usable["dataset"], usable["image_id"], strict=True)
        ],
    )
    if config.unit == "study":
        empty = usable["study_id"].astype(str).str.len() == 0
        if empty.any():
            raise ValueError(
                f"pairs.unit is 'study' but {int(empty.sum())} record(s) have no study_id, "
                f"e.g. image {usable.loc[empty, 'image_id'].iloc[0]}; set pairs.unit: image"
            )
        task_ids = [study_task_id(str(s), config.mimic_ids) for s in usable["study_id"]]
    else:
        task_ids = [str(i) for i in usable["image_id"]]
    usable = usable.assign(task_id=task_ids, view_rank=view_rank(usable["view"]))
    ordered = usable[["task_id", "view_rank"]].sort_values(["task_id", "view_rank"], kind="stable")
    first = usable.loc[ordered.drop_duplicates("task_id", keep="first").index]
    images_of = usable.groupby("task_id", sort=True)["img"].agg(tuple)
    labels = label_sets(first[list(CHEXPERT_LABELS)].to_numpy(dtype="float64", na_value=np.nan))
    records = [
        TaskRecord(
            task_id=str(task_id),
            key=str(key),
            split=str(split),
            labels=label_set,
            text=str(text),
            img=str(img),
            study_id=str(study_id),
            patient_id=str(patient_id),
            images=tuple(str(i) for i in images_of[task_id]),
        )
        for task_id, key, split, label_set, text, img, study_id, patient_id in zip(
            first["task_id"],
            first["key"],
            first["split"],
            labels,
            first["chosen_text"],
            first["img"],
            first["study_id"],
            first["patient_id"],
            strict=True,
        )
    ]
    representative = dict(zip(first["task_id"], first["image_id"].astype(str), strict=True))
    label_of = {
        r.task_id: (r.labels is not None, format_label(r.labels or frozenset(), config.style))
        for r in records
    }
    frame = pd.DataFrame(
        {
            "key": usable["key"],
            "dataset": usable["dataset"].astype(str),
            "image_id": usable["image_id"].astype(str),
            "study_id": usable["study_id"].astype(str),
            "patient_id": usable["patient_id"].astype(str),
            "split": usable["split"].astype(str),
            "task_id": usable["task_id"],
            "representative": [
                representative[t] == str(i)
                for t, i in zip(usable["task_id"], usable["image_id"], strict=True)
            ],
            "labelled": [label_of[t][0] for t in usable["task_id"]],
            "label": [label_of[t][1] for t in usable["task_id"]],
            "img": usable["img"],
        }
    )
    frame = frame.astype(
        {c: "string" for c in frame.columns if c not in ("representative", "labelled")}
    )
    return records, frame.sort_values("key", kind="stable").reset_index(drop=True)


def split_stats(records: Sequence[TaskRecord], frame: pd.DataFrame) -> dict[str, Any]:
    """Counts per split and the most frequent label sets (full list: label_sets.json)."""
    stats: dict[str, Any] = {}
    for split in SPLITS:
        chosen = [r for r in records if r.split == split]
        sets = Counter(label_set_name(r.labels) for r in chosen if r.labels is not None)
        top = sorted(sets.items(), key=lambda item: (-item[1], item[0]))[:TOP_LABEL_SETS]
        stats[split] = {
            "images": int((frame["split"] == split).sum()),
            "records": len(chosen),
            "unlabelled": sum(r.labels is None for r in chosen),
            "no_positive_finding": sum(r.labels == frozenset() for r in chosen),
            "distinct_label_sets": len(sets),
            "top_label_sets": [{"label_set": name, "records": n} for name, n in top],
        }
    return stats


def label_set_distribution(records: Sequence[TaskRecord]) -> dict[str, dict[str, int]]:
    return {
        split: dict(
            sorted(Counter(label_set_name(r.labels) for r in records if r.split == split).items())
        )
        for split in SPLITS
    }


def write_irm_negatives(
    out_dir: Path, records: Sequence[TaskRecord], config: PairsConfig, dataset: str
) -> dict[str, Any]:
    train = [r for r in records if r.split == "train"]
    result = sample_negatives(train, config.irm_negatives_k, config.rng(IRM_STREAM))
    write_irm(out_dir / "irm_negatives.parquet", result)
    if result.no_negative:
        log.warning(
            "pairs (%s): %d labelled training record(s) have no negative, because every other "
            "labelled training record shares their label set (e.g. %s); they are not in "
            "irm_negatives.parquet",
            dataset,
            len(result.no_negative),
            result.no_negative[0],
        )
    return result.stats(config.irm_negatives_k)


def write_retrieval(
    out_dir: Path, records: Sequence[TaskRecord], config: PairsConfig
) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    for direction in DIRECTIONS:
        for split in RETRIEVAL_SPLITS:
            name = f"{direction}_Label_{FILE_SPLIT[split]}"
            result = RetrievalResult()
            lines = iter_blocks(
                [r for r in records if r.split == split],
                direction,
                config.retrieval_candidates,
                config.style,
                config.rng(retrieval_stream(direction, split)),
                result,
            )
            write_jsonl(out_dir / f"{name}.jsonl", lines)
            stats[name] = result.stats(config.retrieval_candidates)
    return stats


def run_stage(paths: DatasetPaths, params: dict[str, Any], workers: int) -> dict[str, Any]:
    """Build every task file of ``paths.name`` under ``<interim>/pairs/``.

    ``workers`` is accepted for the stage contract; the work is sampling and JSON writing,
    dominated by I/O, so it runs in one process.
    """
    del workers
    config = PairsConfig.from_params(params, paths.adapter)
    out_dir = paths.stage_dir(STAGE)
    run = StageRun(STAGE, paths.name, out_dir)
    usable = load_usable(paths, run)
    records, frame = task_records(usable, paths, config)
    jsonl_counts = write_split_files(out_dir, records, config.style)
    r2gen = annotation(records, with_ids=config.mimic_ids)
    stream_json(r2gen, out_dir / "annotation.json")
    write_json(label_set_distribution(records), out_dir / "label_sets.json")
    run.extra.update(
        {
            "unit": config.unit,
            "style": config.style,
            "seed": config.seed,
            "splits": split_stats(records, frame),
            "jsonl_lines": jsonl_counts,
            "irm": write_irm_negatives(out_dir, records, config, paths.name),
            "retrieval": write_retrieval(out_dir, records, config),
            "r2gen_entries": {name: len(entries) for name, entries in r2gen.items()},
        }
    )
    return run.finish(frame)
