"""Report/image JSONL (``Train.jsonl``, ``Valid.jsonl``, ``Test.jsonl``), docs/formats.md §1.

The original loaders unpack ``dict.keys()`` by position, so lines are written with
``json.dumps`` *without* ``sort_keys`` and with the keys in the fixed order below; the
object separators are json's defaults (``", "``/``": "``) as in the original files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline.records import atomic_writer
from pipeline.taskfiles.common import (
    FILE_SPLIT,
    SPLITS,
    LabelSet,
    TaskRecord,
    format_label,
    parse_label,
)

#: Keys of one line, in the order the original loaders expect.
JSONL_KEYS: dict[str, tuple[str, ...]] = {
    "mimic": ("id", "split", "label", "text", "img"),
    "openi": ("id", "label", "text", "img"),
}


def jsonl_line(record: TaskRecord, style: str) -> dict[str, str]:
    """One JSONL object for ``record``; an unlabelled record gets the empty label string."""
    values = {
        "id": record.task_id,
        "split": record.split,
        "label": format_label(record.labels or frozenset(), style),
        "text": record.text,
        "img": record.img,
    }
    return {key: values[key] for key in JSONL_KEYS[style]}


def dumps_lines(lines: Iterable[dict[str, Any]]) -> bytes:
    """JSON Lines bytes: UTF-8, insertion-ordered keys, one object per line."""
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")


def write_jsonl(path: Path, lines: Iterable[dict[str, Any]]) -> int:
    """Write ``lines`` as :func:`dumps_lines` would, one line at a time; returns the count.

    Streaming keeps memory flat for MIMIC-CXR's task files (a retrieval file is 100 lines
    per query), instead of building the whole file as one string first.
    """
    count = 0
    with atomic_writer(path) as handle:
        for line in lines:
            handle.write((json.dumps(line, ensure_ascii=False) + "\n").encode("utf-8"))
            count += 1
    return count


def write_split_files(out_dir: Path, records: Sequence[TaskRecord], style: str) -> dict[str, int]:
    """Write one JSONL per split, lines sorted by id; returns the line count per split.

    Every split file is written, empty if need be, so the stage's declared outputs exist.
    """
    counts: dict[str, int] = {}
    for split in SPLITS:
        rows = sorted((r for r in records if r.split == split), key=lambda r: r.task_id)
        write_jsonl(out_dir / f"{FILE_SPLIT[split]}.jsonl", (jsonl_line(r, style) for r in rows))
        counts[split] = len(rows)
    return counts


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a JSON Lines file, keeping each object's key order; blank lines are skipped."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_task_file(path: Path) -> list[dict[str, Any]]:
    """Read a report/image or retrieval JSONL with ``label`` parsed into a frozenset.

    This is how our own training (and the tests) read the files: label sets are compared as
    sets, never as strings.
    """
    rows = read_jsonl(path)
    for row in rows:
        label: LabelSet = parse_label(row["label"])
        row["label"] = label
    return rows
