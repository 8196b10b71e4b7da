"""How every pipeline stage scales with the number of images, on a MIMIC-CXR-JPG-layout tree.

For each size N (images = metadata rows; default 10k, 50k, 200k; ``--full`` adds 400k) it writes
a MIMIC-CXR-JPG-layout tree (``benchmarks/scale_tree.py``), then runs every stage as its own
``medvill-prep`` process (``python -m pipeline.cli <stage> …``, exactly as a user would) with
``--workers`` and measures per stage:

* wall time;
* peak memory: the largest proportional set size (PSS) of the stage's process tree, sampled
  every 0.2 s (PSS splits shared pages between forked workers, so the sum is what the
  machine really holds), and the largest single-process RSS the kernel recorded
  (``wait4``'s ``ru_maxrss``: the figure ``/usr/bin/time -v`` prints).

Then it fits time ∝ N^a and memory ∝ N^b per stage (least squares on log–log) and prints a
table. The last line is
``scale: N=<largest> max_time_exponent=… max_rss_gb=… worst_stage=…`` (the worst stage is the
one with the largest time exponent; ``max_rss_gb`` the largest peak of any stage at any N).

Params are the repository's ``params.yaml`` with the one dataset ``scale`` (adapter
``mimic_cxr``) and ``images.output_size`` set by ``--output-size`` (default 64, the smallest
allowed: the per-image pixel cost is what bench_images.py measures; here it would only hide the
rest). Targets (issue 17): time exponent ≤ 1.1 and peak ≤ 2 GB at 400k images on 2 workers.

    nice -n 10 python benchmarks/bench_scale.py --sizes 10000 50000 200000 --workers 2
    python benchmarks/bench_scale.py --sizes 2000 --keep   # a quick look, tree kept
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.scale_tree import TreeSummary
from pipeline.cli import STAGES

REPO = Path(__file__).resolve().parents[1]
DATASET = "scale"
TIME_EXPONENT_TARGET = 1.1
RSS_TARGET_GB = 2.0
GB = 1024**3


@dataclass(frozen=True)
class StageMeasure:
    stage: str
    n_images: int
    seconds: float
    peak_pss: int  # bytes, the stage's process tree
    max_rss: int  # bytes, the largest single process
    cpu_seconds: float = 0.0  # user + system, the stage and its workers


def scale_params(raw: Path, output_size: int) -> dict[str, Any]:
    """The repository's params with one dataset (the generated tree) and the output size."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["datasets"] = {DATASET: {"adapter": "mimic_cxr", "raw": str(raw)}}
    params["images"]["output_size"] = output_size
    return params


def _tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc (children lists of every thread)."""
    pids, queue = [], [root]
    while queue:
        pid = queue.pop()
        pids.append(pid)
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError):  # the process may have ended meanwhile
                queue.extend(int(c) for c in (task / "children").read_text().split())
    return pids


def _pss(pid: int) -> int:
    """Proportional set size in bytes (smaps_rollup), else RSS; 0 when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        key = "Pss:"
    except OSError:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
            key = "VmRSS:"
        except OSError:
            return 0
    for line in text.splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


def run_measured(command: list[str], env: dict[str, str]) -> tuple[float, int, int, str, float]:
    """Run ``command``; returns wall seconds, peak tree PSS, max single RSS, its output and
    its CPU seconds (user + system, its reaped workers included)."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, sum(_pss(p) for p in _tree_pids(process.pid)))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output = process.stdout.read().decode("utf-8", "replace") if process.stdout else ""
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{output[-4000:]}")
    return seconds, peak, usage.ru_maxrss * 1024, output, usage.ru_utime + usage.ru_stime


def measure_size(n_images: int, work: Path, workers: int, output_size: int, seed: int) -> list:
    """Generate a tree of ``n_images`` and run every stage on it; one measure per stage."""
    root = work / f"n{n_images}"
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    # in its own process: a child forked from a process holding the tree's 400k rows would
    # inherit that peak in wait4's ru_maxrss (the kernel keeps it across exec)
    script = str(REPO / "benchmarks/scale_tree.py")
    written = subprocess.run(
        [sys.executable, script, str(root / "raw"), str(n_images), str(seed)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    summary = TreeSummary(**json.loads(written.stdout))
    print(
        f"\nN={n_images:,}: tree written in {time.perf_counter() - start:.1f} s "
        f"({summary.studies:,} studies, {summary.patients:,} patients, "
        f"{summary.jpg_missing} JPGs and {summary.reports_missing} reports missing, "
        f"{summary.reports_empty} reports empty)",
        flush=True,
    )
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(scale_params(root / "raw", output_size)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    measures = []
    for stage in STAGES:
        command = [
            sys.executable,
            "-m",
            "pipeline.cli",
            "--quiet",
            stage,
            "--dataset",
            DATASET,
            "--out",
            str(root / "out"),
            "--workers",
            str(workers),
            "--params",
            str(params_file),
        ]
        seconds, pss, rss, _, cpu = run_measured(command, env)
        measures.append(StageMeasure(stage, n_images, seconds, pss, rss, cpu))
        print(
            f"  {stage:9s} {seconds:8.1f} s wall {cpu:8.1f} s CPU   peak PSS {pss / GB:6.3f} GB"
            f"   max RSS {rss / GB:6.3f} GB",
            flush=True,
        )
    return measures


def exponent(sizes: list[int], values: list[float]) -> float:
    """Least-squares slope of log(value) on log(size): value ∝ size^slope."""
    if len(sizes) < 2:
        return float("nan")
    slope, _ = np.polyfit(np.log(sizes), np.log(np.maximum(values, 1e-9)), 1)
    return float(slope)


def summarise(measures: list[StageMeasure]) -> tuple[list[str], str]:
    """Table lines per stage and the final ``scale:`` line.

    Exponents are fitted on wall time (the target) and on CPU time, which a machine shared
    with other jobs disturbs less; peak memory is the larger of tree PSS and max RSS.
    """
    sizes = sorted({m.n_images for m in measures})
    lines = [
        "stage     "
        + "".join(f"{f'{n:,} s':>11s}" for n in sizes)
        + "".join(f"{f'{n:,} GB':>12s}" for n in sizes)
        + "  time exp  CPU exp  mem exp"
    ]
    worst, worst_exponent, max_rss = "", -math.inf, 0
    for stage in STAGES:
        rows = sorted((m for m in measures if m.stage == stage), key=lambda m: m.n_images)
        if not rows:
            continue
        peaks = [max(m.peak_pss, m.max_rss) for m in rows]
        time_exp = exponent(sizes, [m.seconds for m in rows])
        cpu_exp = exponent(sizes, [m.cpu_seconds for m in rows])
        mem_exp = exponent(sizes, [float(p) for p in peaks])
        lines.append(
            f"{stage:10s}"
            + "".join(f"{m.seconds:11.1f}" for m in rows)
            + "".join(f"{p / GB:12.3f}" for p in peaks)
            + f"  {time_exp:8.2f}  {cpu_exp:7.2f}  {mem_exp:7.2f}"
        )
        if not math.isnan(time_exp) and time_exp > worst_exponent:
            worst, worst_exponent = stage, time_exp
        max_rss = max(max_rss, *peaks)
    total = [sum(m.seconds for m in measures if m.n_images == n) for n in sizes]
    lines.append(f"{'total':10s}" + "".join(f"{t:11.1f}" for t in total))
    final = (
        f"scale: N={sizes[-1]} max_time_exponent={worst_exponent:.2f} "
        f"max_rss_gb={max_rss / GB:.2f} worst_stage={worst or 'n/a'}"
    )
    return lines, final


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    parser.add_argument("--full", action="store_true", help="also run 400,000 images")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--output-size", type=int, default=64, help="images.output_size")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated tree")
    parser.add_argument("--work", type=Path, default=Path("/tmp/medvill-bench-scale"))
    parser.add_argument("--keep", action="store_true", help="keep each size's tree and outputs")
    args = parser.parse_args()
    sizes = sorted(set(args.sizes) | ({400_000} if args.full else set()))
    measures: list[StageMeasure] = []
    for n in sizes:
        measures += measure_size(n, args.work, args.workers, args.output_size, args.seed)
        if not args.keep:
            shutil.rmtree(args.work / f"n{n}", ignore_errors=True)
    lines, final = summarise(measures)
    print(f"\n{args.workers} workers, images.output_size {args.output_size}")
    print("\n".join(lines))
    verdict = [
        f"time exponent target ≤ {TIME_EXPONENT_TARGET}",
        f"peak memory target ≤ {RSS_TARGET_GB} GB at 400,000 images",
    ]
    print("targets: " + "; ".join(verdict))
    print(final)


if __name__ == "__main__":
    main()
