"""How much memory the labeler's sentence cache holds on real reports, and its bound at MIMIC scale.

    python benchmarks/bench_label_memory.py --dev-set /tmp/openi-dev   # real reports, built outside
    python benchmarks/bench_label_memory.py                             # the repo's sample reports

Why: the label stage streams its table in batches, so the only thing that grows with the corpus
is the labeler's per-process sentence cache (``Labeler.cache``, first-in-first-out, at most
``cache_size`` entries). ``bench_scale.py``'s generated reports repeat sentences, so there the
cache stays small; real reports are far more varied. This labels real reports (the labeler
dev set, read from a directory outside the repo: ``DIR/reports.csv``, one report per row) with
a fresh labeler and measures:

* distinct cleaned sentences per report (how fast the cache fills),
* the cache's own size in bytes (keys, result tuples, their strings), per entry,
* the process's current RSS and the spaCy vocabulary's string count after each quarter of the
  reports (the parser's own state must stop growing once warm; the cache is the only growth),
* the process's peak RSS before and after labelling,

then projects the cache at ``cache_size`` entries per process and for the label stage's
processes (parent + ``--workers``). Last line: ``label_memory: reports=…
sentences_per_report=… bytes_per_entry=… cache_bound_gb=… stage_bound_gb=…``.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.labeler import read_reports_csv
from pipeline.labeler.api import default_labeler

REPO = Path(__file__).resolve().parents[1]
SAMPLE_REPORTS = REPO / "data" / "sample" / "reports"
GB = 1024**3


def deep_size(objects: Iterable[object]) -> int:
    """Bytes of the given objects and of every tuple/str they contain, each object counted once."""
    seen: set[int] = set()
    total = 0
    stack = list(objects)
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, tuple):
            stack.extend(obj)
    return total


def cache_bytes(cache: dict[str, tuple]) -> int:
    """The cache dict itself plus its keys and values (shared strings counted once)."""
    return sys.getsizeof(cache) + deep_size([*cache.keys(), *cache.values()])


def peak_rss_gb() -> float:
    """This process's peak resident set size (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def current_rss_gb() -> float:
    """This process's resident set size now (``/proc/self/statm``, in pages)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / GB


def load_reports(dev_set: Path | None) -> tuple[list[str], str]:
    """The dev set's reports when given, else the demo's sample report texts."""
    if dev_set is not None:
        return list(read_reports_csv(dev_set / "reports.csv")), f"dev set {dev_set}"
    texts = [
        p.read_text(encoding="utf-8", errors="replace")
        for p in sorted(SAMPLE_REPORTS.glob("*.txt"))
    ]
    return texts, f"sample reports {SAMPLE_REPORTS}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dev-set", type=Path, default=None, help="directory with reports.csv")
    parser.add_argument("--backend", default="chexpert", help="chexpert or chexpert_plus")
    parser.add_argument("--workers", type=int, default=2, help="label stage worker processes")
    args = parser.parse_args(argv)

    reports, source = load_reports(args.dev_set)
    if not reports:
        raise SystemExit(f"no reports found in {source}")
    labeler = default_labeler(args.backend)
    labeler.warm_up()
    rss_before = peak_rss_gb()
    strings = labeler._source().nlp.vocab.strings
    print(f"before: RSS {current_rss_gb():.3f} GB, vocabulary strings {len(strings):,}")
    start = time.perf_counter()
    quarter = math.ceil(len(reports) / 4)
    for part in range(4):
        labeler.label(reports[part * quarter : (part + 1) * quarter])
        print(
            f"after {min((part + 1) * quarter, len(reports)):>7,} reports: RSS "
            f"{current_rss_gb():.3f} GB, vocabulary strings {len(strings):,}, "
            f"cache entries {len(labeler.cache):,}"
        )
    seconds = time.perf_counter() - start
    entries = len(labeler.cache)
    size = cache_bytes(labeler.cache)
    per_entry = size / max(entries, 1)
    bound_gb = per_entry * labeler.cache_size / GB
    processes = args.workers + 1
    print(f"source: {source}")
    print(f"reports: {len(reports):,} labelled in {seconds:.1f} s (cold cache)")
    print(f"distinct sentences cached: {entries:,} ({entries / len(reports):.2f} per report)")
    print(f"cache size: {size / 1024**2:.2f} MB, {per_entry:.0f} bytes per entry")
    print(f"peak RSS: {rss_before:.3f} GB after loading the parser, {peak_rss_gb():.3f} GB after")
    print(
        f"bound: {labeler.cache_size:,} entries × {per_entry:.0f} B = {bound_gb:.3f} GB per "
        f"process; {processes} processes (parent + {args.workers} workers) ≤ "
        f"{bound_gb * processes:.3f} GB of cache; the cache fills after about "
        f"{labeler.cache_size / max(entries / len(reports), 1e-9):,.0f} reports this varied"
    )
    print(
        f"label_memory: reports={len(reports)} sentences_per_report={entries / len(reports):.2f} "
        f"bytes_per_entry={per_entry:.0f} cache_bound_gb={bound_gb:.3f} "
        f"stage_bound_gb={bound_gb * processes:.3f}"
    )


if __name__ == "__main__":
    main()
