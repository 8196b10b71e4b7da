"""The stage contract: every stage ends by writing records, rejects, stats and timing.

``stats.json`` holds only deterministic counts (a DVC metric that is byte-identical on rerun);
wall-clock numbers go to ``timing.json`` so that they never make a rerun look different.
Counts must reconcile — every input row is either in the output or in the rejects table —
and a stage that loses rows fails loudly instead of writing a misleading table.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.records import Reject, rejects_frame, write_json, write_parquet


class CountMismatchError(RuntimeError):
    """A stage's output + rejects do not add up to its input."""


@dataclass
class StageRun:
    """Collects a stage's outcome while it runs; ``finish`` writes it out."""

    stage: str
    dataset: str
    out_dir: Path
    n_in: int = 0
    rejects: list[Reject] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def reject(self, record_id: str, code: str, reason: str) -> None:
        self.rejects.append(Reject(id=str(record_id), stage=self.stage, code=code, reason=reason))

    def reject_many(self, rejects: Iterable[Reject]) -> None:
        self.rejects.extend(rejects)

    def finish(
        self, records: pd.DataFrame, reconcile: bool = True, out_unit: str = "records"
    ) -> dict[str, Any]:
        """Write ``records.parquet``, ``rejects.parquet``, ``stats.json`` and ``timing.json``.

        ``reconcile=False`` is for stages whose output rows are not input rows (e.g. the demo
        VQA set writes several questions per image); ``out_unit`` then names what ``out``
        counts, and stats.json carries no ``reconciled`` claim.
        """
        return self._finish(len(records), records, reconcile, out_unit)

    def finish_streamed(self, n_out: int) -> dict[str, Any]:
        """As :meth:`finish` for a stage that wrote ``records.parquet`` itself, batch by batch
        (:class:`pipeline.tables.FrameWriter`); ``n_out`` is the rows it wrote."""
        return self._finish(n_out, None, True, "records")

    def _finish(
        self, n_out: int, records: pd.DataFrame | None, reconcile: bool, out_unit: str
    ) -> dict[str, Any]:
        n_rej = len(self.rejects)
        if reconcile and n_out + n_rej != self.n_in:
            raise CountMismatchError(
                f"{self.stage} ({self.dataset}): {self.n_in} in, but {n_out} out + "
                f"{n_rej} rejected = {n_out + n_rej}; rows were lost or duplicated."
            )
        seconds = time.perf_counter() - self.started
        if records is not None:
            write_parquet(records, self.out_dir / "records.parquet")
        write_parquet(rejects_frame(self.rejects), self.out_dir / "rejects.parquet")
        reasons: dict[str, int] = {}
        for item in self.rejects:
            reasons[item.code] = reasons.get(item.code, 0) + 1
        stats = {
            "stage": self.stage,
            "dataset": self.dataset,
            "in": self.n_in,
            "out": n_out,
            "rejected": n_rej,
            **({"reconciled": n_out + n_rej == self.n_in} if reconcile else {"out_unit": out_unit}),
            "reject_reasons": dict(sorted(reasons.items())),
            **self.extra,
        }
        write_json(stats, self.out_dir / "stats.json")
        timing = {
            "stage": self.stage,
            "seconds": round(seconds, 3),
            "records_per_second": round(self.n_in / seconds, 2) if seconds > 0 else None,
        }
        write_json(timing, self.out_dir / "timing.json")
        return stats
