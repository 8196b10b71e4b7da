"""Adapter for a synthetic corpus written by ``medvill-prep synthesize`` (pipeline/synthetic).

The tree uses the ``sample`` adapter's manifest layout (explicit patient, study, view and
split per image), so the records are read by the same code; this adapter first checks that the
tree really is a generated corpus (``corpus.json``, ``labels.csv`` and the VQA file present)
and names what is missing, and records the generator version with every image. The manifest's
``split`` column is the generator's patient-level split; the split stage uses it while
``split.use_official`` is true, which keeps the corpus's VQA questions (split by the same
patients) aligned with the report splits. The drawn findings' masks (``regions.jsonl``, when
the corpus has one) become annotations for the localized stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.datasets import sample
from pipeline.datasets.common import AdapterResult, LayoutError, extra_json
from pipeline.datasets.localized_common import BAD_ANNOTATION
from pipeline.localized.annotations import annotation, unusable
from pipeline.synthetic.regions import REGIONS_FILE
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
    result.annotations = read_regions(raw)
    return result


def read_regions(raw: Path) -> list[dict[str, Any]]:
    """The corpus's ``regions.jsonl`` as annotations (masks on the source image, one per
    drawn finding). Corpora written before the file existed have none; a line that does not
    parse becomes one unusable annotation naming the line."""
    path = raw / REGIONS_FILE
    if not path.is_file():
        return []
    annotations: list[dict[str, Any]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        source = f"{REGIONS_FILE}:{number}"
        try:
            entry = json.loads(line)
            image_id, size = str(entry["image_id"]), (int(entry["width"]), int(entry["height"]))
            regions = list(entry["regions"])
        except (ValueError, KeyError, TypeError) as error:
            annotations.append(
                unusable(
                    f"{REGIONS_FILE}:{number}",
                    0,
                    "",
                    source,
                    BAD_ANNOTATION,
                    f"not a regions line ({error})",
                )
            )
            continue
        for n, region in enumerate(regions):
            annotations.append(
                annotation(
                    image_id,
                    n,
                    str(region.get("finding", "")),
                    "mask_counts",
                    source,
                    rle=str(region.get("counts", "")),
                    rle_size=size,
                )
            )
    return annotations
