"""The label stage: 14 CheXpert labels per record, from the built-in labeler or a CSV.

Backends (``label.backend`` in params.yaml):

* ``chexpert`` — the offline CheXpert-compatible labeler in :mod:`pipeline.labeler`, run on the
  section the ``sections`` stage chose (or on the full report with ``label.text: full``). Each
  distinct text is labelled once, since studies with several images share one report.
* ``chexpert_plus`` — the same labeler with our opt-in extra rules on top of the original's,
  a few of its rules and phrases replaced, and reports aggregated as radiologists label them
  (No Finding only for a study with no abnormality at all) where their labels follow another
  convention (docs/labeler_fidelity.md §5); measured separately, never the default.
* ``csv`` — precomputed labels, e.g. MIMIC-CXR's official ``mimic-cxr-2.0.0-chexpert.csv.gz``,
  joined on ``label.csv_key``. The official MIMIC labels were computed on the impression-first
  section choice of the MIMIC section parser, not on MedViLL's "longest" choice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.params import DatasetPaths
from pipeline.plots import label_prevalence_figure, save_figure
from pipeline.rawfiles import read_csv_table
from pipeline.records import CHEXPERT_LABELS, require_columns, require_table
from pipeline.sections import text_digest
from pipeline.stage import StageRun
from pipeline.tables import FrameWriter, iter_frames, table_rows

BACKENDS = ("chexpert", "chexpert_plus", "csv")
#: Backends served by the built-in labeler (the rest read a table).
LABELER_BACKENDS = ("chexpert", "chexpert_plus")
VALUE_NAMES = {1.0: "positive", 0.0: "negative", -1.0: "uncertain"}
#: The counts :func:`prevalence` gives per observation, in its order.
VALUE_KEYS = ("positive", "negative", "uncertain", "blank")


def _normalise_id(value: object) -> str:
    """Study/subject ids compare as digits: ``s50414267``, ``50414267`` and 50414267.0 match."""
    text = str(value).strip()
    if text[:1] in {"s", "p"} and text[1:].isdigit():
        text = text[1:]
    if text.endswith(".0") and text[:-2].isdigit():
        text = text[:-2]
    return text


def labels_from_chexpert(texts: list[str], workers: int, backend: str = "chexpert") -> pd.DataFrame:
    """Label each distinct text once with the built-in labeler; rows align with ``texts``."""
    from pipeline.labeler import label_reports

    unique = sorted(set(texts))
    labelled = label_reports(unique, workers=workers, backend=backend)
    by_text = dict(
        zip(unique, labelled[list(CHEXPERT_LABELS)].itertuples(index=False), strict=True)
    )
    return pd.DataFrame([by_text[t] for t in texts], columns=list(CHEXPERT_LABELS), dtype="float64")


def read_label_csv(path: Path, key: str) -> pd.DataFrame:
    """Read a precomputed label table (plain or gzipped CSV) indexed by normalised ``key``."""
    if not path.is_file():
        raise FileNotFoundError(f"label.csv_path: {path} not found")
    table = read_csv_table(path)
    require_columns(table, [key, *CHEXPERT_LABELS], path)
    table = table[[key, *CHEXPERT_LABELS]].copy()
    table[key] = table[key].map(_normalise_id)
    duplicated = table[key].duplicated(keep=False)
    if duplicated.any():
        example = table.loc[duplicated, key].iloc[0]
        raise ValueError(f"{path}: {key} {example} appears more than once")
    return table.set_index(key).astype("float64")


def prevalence(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Counts of positive / negative / uncertain / blank per observation."""
    counts: dict[str, dict[str, int]] = {}
    for label in CHEXPERT_LABELS:
        column = frame[label]
        counts[label] = {
            "positive": int((column == 1.0).sum()),
            "negative": int((column == 0.0).sum()),
            "uncertain": int((column == -1.0).sum()),
            "blank": int(column.isna().sum()),
        }
    return counts


def run_stage(paths: DatasetPaths, params: dict[str, Any], workers: int) -> dict[str, Any]:
    """Label ``<interim>/sections/records.parquet`` into ``<interim>/label/``.

    The table is read and written in batches (:mod:`pipeline.tables`); the built-in labeler
    labels each batch's distinct texts on ``workers`` processes, the csv backend joins each
    batch with the (small: one row per study) label table.
    """
    config = params.get("label", {})
    backend = config.get("backend", "chexpert")
    if backend not in BACKENDS:
        raise ValueError(f"label.backend must be one of {BACKENDS}, got '{backend}'")
    source = paths.stage_dir("sections") / "records.parquet"
    text_column = {"chosen": "chosen_text", "full": "report_text"}[config.get("text", "chosen")]
    require_table(source, ["study_id", "image_id", text_column])
    run = StageRun("label", paths.name, paths.stage_dir("label"))
    run.n_in = table_rows(source)
    table = None
    if backend not in LABELER_BACKENDS:
        key = config.get("csv_key", "study_id")
        table = read_label_csv(Path(config.get("csv_path", "")), key)
    counts = {label: dict.fromkeys(VALUE_KEYS, 0) for label in CHEXPERT_LABELS}
    distinct: set[bytes] = set()
    with FrameWriter(paths.stage_dir("label") / "records.parquet") as writer:
        for records in iter_frames(source):
            if table is None:
                texts = records[text_column].astype(str).tolist()
                distinct.update(text_digest(t) for t in texts)
                labels = labels_from_chexpert(texts, workers, backend)
                keep = pd.Series(True, index=records.index)
            else:
                key = config.get("csv_key", "study_id")
                ids = records[key].map(_normalise_id)
                keep = ids.isin(table.index)
                for image_id, value in zip(records.loc[~keep, "image_id"], ids[~keep], strict=True):
                    run.reject(
                        image_id,
                        "no_labels",
                        f"image {image_id}: {key} {value} has no row in {config.get('csv_path')}",
                    )
                labels = table.reindex(ids[keep]).reset_index(drop=True)
            kept = records[keep].reset_index(drop=True)
            out = pd.concat([kept, labels.reset_index(drop=True)], axis=1)
            out["label_source"] = backend
            for label, values in prevalence(out).items():
                for name, value in values.items():
                    counts[label][name] += value
            writer.write(out)
    if table is None:
        run.extra["labelled_texts"] = len(distinct)
    run.extra["backend"] = backend
    run.extra["text"] = text_column
    run.extra["prevalence"] = counts
    stats = run.finish_streamed(writer.rows)
    figure = label_prevalence_figure(
        counts,
        CHEXPERT_LABELS,
        f"{paths.name}: CheXpert labels of {writer.rows} records ({backend})",
    )
    save_figure(figure, paths.stage_dir("label") / "label_prevalence.png")
    return stats
