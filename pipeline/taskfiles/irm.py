"""IRM negatives (docs/formats.md §3): for each training record, K reports with another label set.

The original drew a random report up to 300 times until the fuzzy string ratio of the two
label strings was not 100. We precompute instead, per distinct label set, the pool of records
whose label set *differs as a set*, and draw from it with a seeded generator: no rejection
loop, so a split where every record shares one label set ends with "no negative" instead of
looping. Label sets are compared as sets, which differs from the original in one case on
purpose: its fuzzy ratio called two *empty* label strings different, so it used "no positive
finding" reports as negatives of each other; here they share a label set and are not negatives.
(Sets also make unsorted or differently quoted strings of the same names equal.)

Unlabelled records (all 14 values blank) are never negatives: with no label set, "different"
is undefined. Every training record still gets a row — its text and its label set (``labels``,
null when unlabelled) — because the pretraining loader re-draws a negative for every sample
each epoch from the whole pool of rows (``medvill.data.IrmNegatives``); ``negative_keys`` are
the K fixed draws for consumers that want a precomputed list.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.records import atomic_write_bytes
from pipeline.taskfiles.common import TaskRecord

#: The schema the pretraining loader reads (exactly these columns).
IRM_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("negative_keys", pa.list_(pa.string()), nullable=False),
        pa.field("labels", pa.list_(pa.string()), nullable=True),
    ]
)


@dataclass
class IrmResult:
    """Negatives per query key plus the counts that go into stats.json."""

    negatives: dict[str, list[str]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    labels: dict[str, list[str] | None] = field(default_factory=dict)
    queries: int = 0
    unlabelled_skipped: int = 0
    no_negative: list[str] = field(default_factory=list)
    small_pool: int = 0

    def stats(self, k: int) -> dict[str, int]:
        return {
            "k": k,
            "labelled_queries": self.queries,
            "with_negatives": len(self.negatives),
            "no_negative": len(self.no_negative),
            "small_pool_with_replacement": self.small_pool,
            "unlabelled_skipped": self.unlabelled_skipped,
        }


def sample_negatives(records: Sequence[TaskRecord], k: int, rng: np.random.Generator) -> IrmResult:
    """Draw ``k`` negative keys for every labelled record of ``records`` (one split).

    Records are sorted by key and label sets are visited in sorted order, so the draws depend
    only on the inputs and the generator's seed. Draws are without replacement when the pool
    holds at least ``k`` records and with replacement otherwise (every query still gets ``k``).
    """
    if k < 1:
        raise ValueError(f"pairs.irm_negatives_k must be >= 1, got {k}")
    result = IrmResult()
    for record in records:
        result.texts[record.key] = record.text
        result.labels[record.key] = None if record.labels is None else sorted(record.labels)
    labelled = sorted((r for r in records if r.labels is not None), key=lambda r: r.key)
    result.unlabelled_skipped = len(records) - len(labelled)
    result.queries = len(labelled)
    keys = np.array([r.key for r in labelled], dtype=object)
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, record in enumerate(labelled):
        groups.setdefault(tuple(sorted(record.labels or ())), []).append(index)
    for group in sorted(groups):
        members = np.asarray(groups[group])
        pool_size = len(labelled) - members.size
        if pool_size == 0:
            result.no_negative.extend(labelled[i].key for i in members)
            continue
        replace = pool_size < k
        if replace:
            result.small_pool += len(members)
        for index in members:
            picks = rng.choice(pool_size, size=k, replace=replace)
            record = labelled[index]
            result.negatives[record.key] = [str(key) for key in keys[outside_index(members, picks)]]
    return result


def outside_index(members: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The ``positions``-th indices (0-based) of ``range(n)`` once sorted ``members`` are
    taken out, without building that list.

    The pool of a label set is every other labelled record; listing it per label set cost
    O(label sets × records), quadratic at MIMIC scale (thousands of label sets). Position p
    lands on p + (number of members at or before it): ``members[j] - j`` counts the
    non-members before ``members[j]``, so a binary search finds how many members to skip.
    """
    gaps = members - np.arange(members.size)
    return positions + np.searchsorted(gaps, positions, side="right")


def irm_table(result: IrmResult) -> pa.Table:
    """Every record as an Arrow row sorted by key, typed by ``IRM_SCHEMA`` even when empty."""
    order = sorted(result.texts)
    return pa.table(
        {
            "key": order,
            "text": [result.texts[key] for key in order],
            "negative_keys": [result.negatives.get(key, []) for key in order],
            "labels": [result.labels.get(key) for key in order],
        },
        schema=IRM_SCHEMA,
    )


def write_irm(path: Path, result: IrmResult) -> None:
    """Write ``irm_negatives.parquet`` atomically (serialised in memory, then renamed)."""
    buffer = io.BytesIO()
    pq.write_table(irm_table(result), buffer, compression="zstd")
    atomic_write_bytes(path, buffer.getvalue())


def read_irm(path: Path) -> dict[str, list[str]]:
    """Negatives per query key, as the pretraining loader sees them."""
    table = pq.read_table(path)
    return dict(
        zip(table.column("key").to_pylist(), table.column("negative_keys").to_pylist(), strict=True)
    )
