"""VQA-RAD adapter and the demo's synthetic VQA set, both written in the MEVF ``data_RAD`` layout.

MedViLL's VQA loader reads the MEVF files (docs/formats.md §4): ``trainset.json``/``testset.json``
(lists of ``qid, image_name, image_organ, question, answer, answer_type, question_type,
phrase_type``) plus a pickled answer vocabulary and targets. We write the same content as JSON
(never pickles) under ``<interim>/vqa/``:

* ``trainset.json``, ``testset.json`` — the QA entries, sorted by qid;
* ``ans2label.json`` (answer → index) and ``label2ans.json`` (index → answer) — the vocabulary
  over train + test answers, as MEVF's ``trainval`` files;
* ``train_target.json``, ``test_target.json`` — ``{qid, image_name, labels, scores}``;
* ``imgid2idx.json`` — image name → index; ``image_paths.json`` — image name → the processed
  512² image, relative to ``vqa.image_root``;
* ``records.parquet``, ``rejects.parquet``, ``stats.json`` via ``StageRun``.

For a ``vqa_rad`` dataset the public release is read (one JSON list plus its image folder), its
images go through the shared images stage via an ingest-style table, and questions are split by
``phrase_type`` (``test_*`` → test). For a report dataset named in
``vqa.synthetic_for_reports`` (the demo) a small closed/open question set is generated from
the split records' labels and views; every entry carries ``"synthetic": true``. Other report
datasets (MIMIC-CXR, Open-I) get empty VQA files by default: at MIMIC scale the generator
would write ≈ 1.6 M questions nobody asked for.
"""

from __future__ import annotations

import importlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from pipeline.datasets.common import LayoutError, extra_json
from pipeline.params import DatasetPaths
from pipeline.records import (
    CHEXPERT_LABELS,
    INGEST_COLUMNS,
    Reject,
    read_parquet,
    require_columns,
    write_json,
)
from pipeline.stage import StageRun
from pipeline.taskfiles.common import image_path

STAGE = "vqa"
#: Keys of a MEVF ``trainset.json`` entry.
VQA_KEYS: tuple[str, ...] = (
    "qid",
    "image_name",
    "image_organ",
    "question",
    "answer",
    "answer_type",
    "question_type",
    "phrase_type",
)
ANSWER_TYPES: tuple[str, ...] = ("CLOSED", "OPEN")
#: Names the release JSON and image folder have been published under.
RELEASE_JSON_NAMES: tuple[str, ...] = ("VQA_RAD Dataset Public.json", "vqa_rad_original_set.json")
RELEASE_IMAGE_DIRS: tuple[str, ...] = ("VQA_RAD Image Folder", "images")

#: Demo questions: one closed question per CheXpert finding with a definite (1/0) label.
FINDING_QUESTIONS: dict[str, tuple[str, str]] = {
    "No Finding": ("Is this chest x-ray normal?", "ABN"),
    "Enlarged Cardiomediastinum": ("Is the cardiomediastinum enlarged?", "PRES"),
    "Cardiomegaly": ("Is there cardiomegaly?", "PRES"),
    "Lung Lesion": ("Is there a lung lesion?", "PRES"),
    "Lung Opacity": ("Is there a lung opacity?", "PRES"),
    "Edema": ("Is there pulmonary edema?", "PRES"),
    "Consolidation": ("Is there consolidation?", "PRES"),
    "Pneumonia": ("Is there pneumonia?", "PRES"),
    "Atelectasis": ("Is there atelectasis?", "PRES"),
    "Pneumothorax": ("Is there a pneumothorax?", "PRES"),
    "Pleural Effusion": ("Is there a pleural effusion?", "PRES"),
    "Pleural Other": ("Is there another pleural abnormality?", "PRES"),
    "Fracture": ("Is there a fracture?", "PRES"),
    "Support Devices": ("Are there support devices?", "PRES"),
}
VIEW_QUESTION = "Which view is this?"
#: Demo split → VQA split: VQA-RAD has no validation set, so valid questions train.
DEMO_SPLIT: dict[str, str] = {"train": "train", "valid": "train", "test": "test"}


@dataclass(frozen=True)
class VqaConfig:
    """The ``vqa:`` block of params.yaml."""

    json: str
    image_dir: str
    image_root: Path
    #: ``true`` (every report dataset), ``false`` (none) or the dataset names that get the
    #: demo's synthetic questions.
    synthetic_for_reports: bool | tuple[str, ...] = False

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> VqaConfig:
        block = params.get(STAGE, {}) or {}
        synthetic = block.get("synthetic_for_reports", False)
        return cls(
            json=str(block.get("json", "")),
            image_dir=str(block.get("image_dir", "")),
            image_root=Path(str(block.get("image_root", "."))),
            synthetic_for_reports=(
                synthetic if isinstance(synthetic, bool) else tuple(map(str, synthetic))
            ),
        )

    def synthetic_questions_for(self, dataset: str) -> bool:
        """Whether report dataset ``dataset`` gets the generated closed/open questions."""
        if isinstance(self.synthetic_for_reports, bool):
            return self.synthetic_for_reports
        return dataset in self.synthetic_for_reports


@dataclass
class VqaRelease:
    """What the release held: kept entries, rejected ones, and where each image is."""

    n_in: int = 0
    entries: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    image_paths: dict[str, str] = field(default_factory=dict)  # image name → path under raw


class EntryError(ValueError):
    """A release entry that cannot be used; ``code`` goes into rejects.parquet."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


# --- reading the release -------------------------------------------------------------------


def locate_release(raw: Path, config: VqaConfig) -> tuple[Path, Path]:
    """The release JSON and image folder under ``raw`` (configured names or the public ones)."""
    json_names = (config.json,) if config.json else RELEASE_JSON_NAMES
    dir_names = (config.image_dir,) if config.image_dir else RELEASE_IMAGE_DIRS
    json_path = next((raw / n for n in json_names if (raw / n).is_file()), None)
    image_dir = next((raw / n for n in dir_names if (raw / n).is_dir()), None)
    layout = (
        f"{raw}/<{' | '.join(json_names)}> (the public JSON list) and "
        f"{raw}/<{' | '.join(dir_names)}>/ (its images); set vqa.json / vqa.image_dir otherwise"
    )
    if json_path is None:
        raise LayoutError(f"VQA-RAD question file not found under {raw}\nexpected layout: {layout}")
    if image_dir is None:
        raise LayoutError(f"VQA-RAD image folder not found under {raw}\nexpected layout: {layout}")
    return json_path, image_dir


def _text(item: Mapping[str, Any], key: str) -> str:
    value = item.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def normalise_entry(item: Any, image_dir: Path) -> dict[str, Any]:
    """One release dict → a MEVF entry, or ``EntryError`` saying why it cannot be used.

    Strips stray whitespace in every text field (``answer_type`` is ``"CLOSED "`` in places),
    turns ``qid`` (``"0"`` is a string in the release) and numeric answers into int / str.
    """
    if not isinstance(item, Mapping):
        raise EntryError("bad_entry", f"entry is a {type(item).__name__}, not an object")
    qid_text = _text(item, "qid")
    if not qid_text.lstrip("-").isdigit():
        raise EntryError("bad_qid", f"qid {qid_text!r} is not an integer")
    qid = int(qid_text)
    entry = {key: _text(item, key) for key in VQA_KEYS}
    entry["qid"] = qid
    entry["answer_type"] = entry["answer_type"].upper()
    if not entry["answer"]:
        raise EntryError("no_answer", f"qid {qid}: no answer (question {entry['question']!r})")
    if not entry["question"]:
        raise EntryError("no_question", f"qid {qid}: no question text")
    if entry["answer_type"] not in ANSWER_TYPES:
        raise EntryError(
            "bad_answer_type",
            f"qid {qid}: answer_type {item.get('answer_type')!r} is not OPEN or CLOSED",
        )
    name = entry["image_name"]
    if not name or PurePath(name).name != name or not (image_dir / name).is_file():
        raise EntryError("unknown_image", f"qid {qid}: image {name!r} not found in {image_dir}")
    return entry


def read_release(raw: Path, config: VqaConfig) -> VqaRelease:
    """Read the release; every entry ends up kept or rejected with a reason naming it."""
    json_path, image_dir = locate_release(raw, config)
    try:
        items = json.loads(json_path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as error:
        raise LayoutError(f"{json_path}: not valid JSON ({error})") from error
    if not isinstance(items, list):
        raise LayoutError(f"{json_path}: expected a JSON list of questions")
    release = VqaRelease(n_in=len(items))
    seen: set[int] = set()
    for position, item in enumerate(items):
        try:
            entry = normalise_entry(item, image_dir)
        except EntryError as error:
            qid = _text(item, "qid") if isinstance(item, Mapping) else ""
            record_id = qid or f"entry-{position}"
            release.rejects.append(
                Reject(record_id, STAGE, error.code, f"{json_path.name} #{position}: {error}")
            )
            continue
        if entry["qid"] in seen:
            release.rejects.append(
                Reject(
                    str(entry["qid"]),
                    STAGE,
                    "duplicate_qid",
                    f"{json_path.name} #{position}: qid {entry['qid']} appears more than once",
                )
            )
            continue
        seen.add(entry["qid"])
        release.entries.append(entry)
        release.image_paths[entry["image_name"]] = (
            (image_dir / entry["image_name"]).relative_to(raw).as_posix()
        )
    release.entries.sort(key=lambda e: e["qid"])
    return release


def vqa_split(phrase_type: str) -> str:
    """MEVF's rule: ``test_freeform`` / ``test_para`` → test, everything else → train."""
    return "test" if phrase_type.startswith("test") else "train"


def image_id_of(image_name: str) -> str:
    """The image id in the images stage: the file name without its extension."""
    return PurePath(image_name).stem


def ingest_frame(dataset: str, release: VqaRelease) -> pd.DataFrame:
    """An ingest-style table (``INGEST_COLUMNS``), one row per distinct image, no report."""
    organs: dict[str, str] = {}
    for entry in release.entries:
        organs.setdefault(entry["image_name"], entry["image_organ"])
    by_id: dict[str, str] = {}
    rows = []
    for name in sorted(release.image_paths):
        image_id = image_id_of(name)
        if image_id in by_id:
            raise LayoutError(
                f"images {by_id[image_id]!r} and {name!r} differ only by extension; the images "
                "stage names its output by image id, so rename one of them"
            )
        by_id[image_id] = name
        rows.append(
            {
                "dataset": dataset,
                "image_id": image_id,
                "patient_id": image_id,
                "study_id": image_id,
                "view": "",
                "image_path": release.image_paths[name],
                "report_text": "",
                "official_split": "",
                "synthetic_report": False,
                "extra_json": extra_json({"image_name": name, "image_organ": organs[name]}),
            }
        )
    frame = pd.DataFrame(rows, columns=list(INGEST_COLUMNS))
    frame = frame.astype({c: "string" for c in INGEST_COLUMNS if c != "synthetic_report"})
    return frame.astype({"synthetic_report": bool})


# --- answer vocabulary and outputs ---------------------------------------------------------


def normalise_answer(answer: str) -> str:
    """The vocabulary form of an answer: lower case, single spaces (``"Yes "`` = ``"yes"``)."""
    return " ".join(answer.lower().split())


def answer_vocabulary(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    """Sorted distinct normalised answers of train and test (MEVF's ``trainval`` vocabulary)."""
    return sorted({normalise_answer(str(e["answer"])) for e in entries})


def write_vqa_files(
    out_dir: Path, entries: Sequence[dict[str, Any]], image_paths: Mapping[str, str]
) -> dict[str, Any]:
    """Write the MEVF-layout JSON files for ``entries`` (already filtered); return stats."""
    vocab = answer_vocabulary(entries)
    ans2label = {answer: index for index, answer in enumerate(vocab)}
    images = sorted({e["image_name"] for e in entries})
    stats: dict[str, Any] = {"answers": len(vocab), "images": len(images)}
    for split in ("train", "test"):
        chosen = sorted(
            (e for e in entries if vqa_split(e["phrase_type"]) == split), key=lambda e: e["qid"]
        )
        write_json(chosen, out_dir / f"{split}set.json")
        targets = [
            {
                "qid": e["qid"],
                "image_name": e["image_name"],
                "labels": [ans2label[normalise_answer(str(e["answer"]))]],
                "scores": [1.0],
            }
            for e in chosen
        ]
        write_json(targets, out_dir / f"{split}_target.json")
        types = Counter(e["answer_type"] for e in chosen)
        stats[split] = {
            "questions": len(chosen),
            "answer_types": dict(sorted(types.items())),
            "organs": dict(sorted(Counter(e["image_organ"] for e in chosen).items())),
        }
    write_json(ans2label, out_dir / "ans2label.json")
    write_json(vocab, out_dir / "label2ans.json")
    write_json({name: index for index, name in enumerate(images)}, out_dir / "imgid2idx.json")
    write_json({name: image_paths[name] for name in images}, out_dir / "image_paths.json")
    return stats


def records_frame(
    entries: Sequence[Mapping[str, Any]], image_paths: Mapping[str, str]
) -> pd.DataFrame:
    """The stage's records.parquet: one row per kept question."""
    frame = pd.DataFrame(
        {
            "qid": [int(e["qid"]) for e in entries],
            "image_name": [e["image_name"] for e in entries],
            "split": [vqa_split(e["phrase_type"]) for e in entries],
            "answer_type": [e["answer_type"] for e in entries],
            "image_organ": [e["image_organ"] for e in entries],
            "question": [e["question"] for e in entries],
            "answer": [str(e["answer"]) for e in entries],
            "img": [image_paths[e["image_name"]] for e in entries],
            "synthetic": [bool(e.get("synthetic", False)) for e in entries],
        }
    )
    frame = frame.astype({"qid": "int64", "synthetic": bool})
    text = [c for c in frame.columns if c not in ("qid", "synthetic")]
    return frame.astype({c: "string" for c in text}).sort_values("qid").reset_index(drop=True)


def processed_paths(
    image_files: Mapping[str, str], images_dir: Path, image_root: Path
) -> dict[str, str]:
    """image id → processed image path relative to ``image_root`` (as pairs' ``img``)."""
    return {i: image_path(images_dir, f, image_root) for i, f in sorted(image_files.items())}


def finish_release(
    paths: DatasetPaths,
    config: VqaConfig,
    release: VqaRelease,
    image_files: Mapping[str, str],
    source: str = "vqa_rad",
) -> dict[str, Any]:
    """Drop questions whose image the images stage rejected, write the files and stats.

    ``image_files`` maps image id → ``image_file`` from ``<interim>/images/records.parquet``;
    ``source`` is ``vqa_rad`` (a real release) or ``synthetic`` (a generated corpus's questions).
    """
    out_dir = paths.stage_dir(STAGE)
    run = StageRun(STAGE, paths.name, out_dir, n_in=release.n_in)
    run.reject_many(release.rejects)
    processed = processed_paths(image_files, paths.stage_dir("images"), config.image_root)
    kept: list[dict[str, Any]] = []
    for entry in release.entries:
        if image_id_of(entry["image_name"]) in processed:
            kept.append(entry)
            continue
        run.reject(
            str(entry["qid"]),
            "no_image",
            f"qid {entry['qid']}: image {entry['image_name']} was rejected by the images stage "
            f"(see {paths.stage_dir('images') / 'rejects.parquet'})",
        )
    by_name = {e["image_name"]: processed[image_id_of(e["image_name"])] for e in kept}
    run.extra.update(
        {
            "source": source,
            "synthetic": source != "vqa_rad",
            **write_vqa_files(out_dir, kept, by_name),
        }
    )
    return run.finish(records_frame(kept, by_name))


def image_files_of(paths: DatasetPaths) -> dict[str, str]:
    """image id → ``image_file`` as written by the images stage."""
    path = paths.stage_dir("images") / "records.parquet"
    images = read_parquet(path)
    require_columns(images, ("image_id", "image_file"), path)
    return dict(zip(images["image_id"].astype(str), images["image_file"].astype(str), strict=True))


def run_release(paths: DatasetPaths, params: dict[str, Any], workers: int) -> dict[str, Any]:
    """VQA-RAD: read the release, process its images with the images stage, write outputs."""
    config = VqaConfig.from_params(params)
    release = read_release(paths.raw, config)
    ingest = StageRun("ingest", paths.name, paths.stage_dir("ingest"))
    frame = ingest_frame(paths.name, release)
    ingest.n_in = len(frame)
    ingest.extra["source"] = "vqa_rad"
    ingest.finish(frame)
    importlib.import_module("pipeline.images").run_stage(paths, params, workers)
    return finish_release(paths, config, release, image_files_of(paths))


# --- the demo's synthetic questions --------------------------------------------------------


def _definite(value: Any) -> str | None:
    """ "yes"/"no" for a 1.0/0.0 label; ``None`` for uncertain (−1) or blank."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return {1.0: "yes", 0.0: "no"}.get(float(value))


def synthetic_entries(records: pd.DataFrame) -> list[dict[str, Any]]:
    """Closed finding questions and an open view question per image, marked synthetic.

    ``records`` are split records joined with the images stage (columns ``image_id``,
    ``image_file``, ``view``, ``split`` and the 14 labels). Findings labelled uncertain or
    blank get no question, because their answer is unknown. qids count up over images sorted
    by id, so reruns are identical.
    """
    entries: list[dict[str, Any]] = []
    for row in records.sort_values("image_id", kind="stable").to_dict("records"):
        phrase = "freeform" if DEMO_SPLIT[row["split"]] == "train" else "test_freeform"
        questions = [
            (FINDING_QUESTIONS[name][0], answer, "CLOSED", FINDING_QUESTIONS[name][1])
            for name in CHEXPERT_LABELS
            if (answer := _definite(row[name])) is not None
        ]
        view = str(row["view"] or "").strip().upper()
        if view:
            questions.append((VIEW_QUESTION, view, "OPEN", "PLANE"))
        for question, answer, answer_type, question_type in questions:
            entries.append(
                {
                    "qid": len(entries),
                    "image_name": PurePath(row["image_file"]).name,
                    "image_organ": "CHEST",
                    "question": question,
                    "answer": answer,
                    "answer_type": answer_type,
                    "question_type": question_type,
                    "phrase_type": phrase,
                    "synthetic": True,
                }
            )
    return entries


def run_demo(paths: DatasetPaths, params: dict[str, Any]) -> dict[str, Any]:
    """Synthetic VQA from ``<interim>/split`` + ``<interim>/images`` of a report dataset."""
    config = VqaConfig.from_params(params)
    split_path = paths.stage_dir("split") / "records.parquet"
    records = read_parquet(split_path)
    require_columns(
        records, ("image_id", "image_path", "view", "split", *CHEXPERT_LABELS), split_path
    )
    image_files = image_files_of(paths)
    run = StageRun(STAGE, paths.name, paths.stage_dir(STAGE), n_in=len(records))
    has_image = records["image_id"].astype(str).isin(image_files)
    for row in records[~has_image].itertuples(index=False):
        run.reject(
            str(row.image_id),
            "no_image",
            f"image {row.image_id} ({row.image_path}) was rejected by the images stage; "
            "no question generated",
        )
    usable = records[has_image & records["split"].isin(DEMO_SPLIT)].copy()
    for row in records[has_image & ~records["split"].isin(DEMO_SPLIT)].itertuples(index=False):
        run.reject(str(row.image_id), "bad_split", f"image {row.image_id}: split '{row.split}'")
    usable["image_file"] = [image_files[str(i)] for i in usable["image_id"]]
    entries = synthetic_entries(usable)
    processed = processed_paths(image_files, paths.stage_dir("images"), config.image_root)
    by_name = {PurePath(image_files[str(i)]).name: processed[str(i)] for i in usable["image_id"]}
    run.extra.update(
        {"source": "demo", "synthetic": True, **write_vqa_files(run.out_dir, entries, by_name)}
    )
    # Output rows are questions, not input images: counts are reported, not reconciled.
    return run.finish(records_frame(entries, by_name), reconcile=False, out_unit="questions")


# --- a generated corpus's questions ---------------------------------------------------------


def run_synthetic_corpus(paths: DatasetPaths, params: dict[str, Any]) -> dict[str, Any]:
    """A ``synthetic`` corpus ships release-format questions drawn from its findings
    (``vqa/questions.json``, images in ``images/``); its images were already processed by the
    report pipeline's images stage, so only the questions are read here."""
    from pipeline.synthetic.writer import VQA_FILE

    block = VqaConfig.from_params(params)
    config = VqaConfig(json=VQA_FILE, image_dir="images", image_root=block.image_root)
    release = read_release(paths.raw, config)
    for entry in release.entries:
        entry["synthetic"] = True
    return finish_release(paths, config, release, image_files_of(paths), source="synthetic")


def run_none(paths: DatasetPaths, params: dict[str, Any]) -> dict[str, Any]:
    """A report dataset without questions: empty VQA files (the declared outputs exist) and
    stats saying why. Nothing is read, so ``in`` is 0; ``report_records`` says how many split
    records the generator would have used."""
    config = VqaConfig.from_params(params)
    run = StageRun(STAGE, paths.name, paths.stage_dir(STAGE), n_in=0)
    split_path = paths.stage_dir("split") / "records.parquet"
    report_records = pq.ParquetFile(split_path).metadata.num_rows if split_path.is_file() else 0
    run.extra.update(
        {
            "source": "none",
            "synthetic": False,
            "skipped": f"{paths.name} is not in vqa.synthetic_for_reports "
            f"({config.synthetic_for_reports}): no synthetic questions for a report dataset",
            "report_records": report_records,
            **write_vqa_files(run.out_dir, [], {}),
        }
    )
    return run.finish(records_frame([], {}))


def run_stage(paths: DatasetPaths, params: dict[str, Any], workers: int) -> dict[str, Any]:
    """``medvill-prep vqa``: the VQA-RAD release for adapter ``vqa_rad``, the generated
    questions for adapter ``synthetic``, a demo set from the labels for the report datasets
    named in ``vqa.synthetic_for_reports``, else empty files."""
    if paths.adapter == "vqa_rad":
        return run_release(paths, params, workers)
    if paths.adapter == "synthetic":
        return run_synthetic_corpus(paths, params)
    if VqaConfig.from_params(params).synthetic_questions_for(paths.name):
        return run_demo(paths, params)
    return run_none(paths, params)
