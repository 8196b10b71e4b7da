"""Order-preserving parallel map over processes, for CPU-bound per-record work."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

from pipeline.progress import track

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """All cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    workers: int,
    description: str,
    chunksize: int = 4,
) -> Iterator[R]:
    """Apply ``fn`` to ``items`` on ``workers`` processes, yielding results in input order.

    Results come back in input order so outputs do not depend on scheduling (determinism).
    ``fn`` must be a module-level function; with ``workers <= 1`` it runs in-process, which
    keeps tracebacks simple when debugging.
    """
    if workers <= 1 or len(items) <= 1:
        yield from track(map(fn, items), len(items), description)
        return
    context = multiprocessing.get_context("fork")
    with context.Pool(processes=min(workers, len(items))) as pool:
        yield from track(pool.imap(fn, items, chunksize=chunksize), len(items), description)
