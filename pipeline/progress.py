"""Progress reporting: a rich progress bar in a terminal, plain log lines in CI and pipes."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
log = logging.getLogger("medvill")


def _interactive() -> bool:
    return sys.stderr.isatty()


def track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    """Yield ``items`` while showing progress.

    In a terminal this is a rich bar with ETA; otherwise (CI, DVC logs, pipes) one log line at
    every 10 % (only the last one for short runs) so logs stay readable.
    """
    if total <= 0:
        yield from items
        return
    if _interactive():
        columns = (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, transient=False) as progress:
            task = progress.add_task(description, total=total)
            for item in items:
                yield item
                progress.advance(task)
        return
    start = time.perf_counter()
    step = max(1, total // 10) if total >= 100 else total
    for done, item in enumerate(items, start=1):
        yield item
        if done % step == 0 or done == total:
            rate = done / max(time.perf_counter() - start, 1e-9)
            log.info("%s: %d/%d (%.1f/s)", description, done, total, rate)
