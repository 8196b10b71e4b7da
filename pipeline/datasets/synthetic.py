"""Adapter for a synthetic corpus written by ``medvill-prep synthesize`` (pipeline/synthetic).

The tree uses the ``sample`` adapter's manifest layout (explicit patient, study, view and
split per image), so the records are read by the same code; this adapter first checks that the
tree really is a generated corpus (``corpus.json``, ``labels.csv`` and the VQA file present)
and names what is missing, and records the generator version with every image. The manifest's
``split`` column is the generator's patient-level split; the split stage uses it while
``split.use_official`` is true, which keeps the corpus's VQA questions (split by the same
patients) aligned with the report splits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.datasets import sample
from pipeline.datasets.common import AdapterResult, LayoutError, extra_json
from pipeline.synthetic.writer import VQA_FILE

DATASET = "synthetic"
LAYOUT = (
    "<root>/corpus.json, manifest.csv, labels.csv, findings.jsonl, images/<image_id>.jpg, "
    f"reports/<study_id>.txt, {VQA_FILE} (generate one with `medvill-prep synthesize --out "
    "<root>`)"
)
REQUIRED_FILES: tuple[str, ...] = ("corpus.json", "manifest.csv", "labels.csv", VQA_FILE)


def corpus_info(raw: Path) -> dict[str, Any]:
    """The generator's ``corpus.json``; a tree without the generator's files is a layout error."""
    missing = [name for name in REQUIRED_FILES if not (raw / name).is_file()]
    if missing:
        raise LayoutError(
            f"{raw} is not a synthetic corpus: missing {', '.join(missing)}\n"
            f"expected layout: {LAYOUT}"
        )
    try:
        info = json.loads((raw / "corpus.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise LayoutError(f"{raw / 'corpus.json'}: not valid JSON ({error})") from error
    if not isinstance(info, dict) or "generator_version" not in info:
        raise LayoutError(f"{raw / 'corpus.json'}: no generator_version; expected layout: {LAYOUT}")
    return info


def read_dataset(raw: Path, params: dict[str, Any]) -> AdapterResult:
    """The manifest's records (as the sample adapter reads them), tagged with the generator."""
    info = corpus_info(raw)
    result = sample.read_dataset(raw, params)
    for record in result.records:
        extra = json.loads(record["extra_json"]) if record["extra_json"] else {}
        extra["generator_version"] = str(info["generator_version"])
        extra["generator_seed"] = info.get("seed")
        record["dataset"] = DATASET
        record["extra_json"] = extra_json(extra)
    return result
