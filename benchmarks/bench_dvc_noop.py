"""Time a no-op `dvc repro` after a full run of the demo pipeline (target < 3 s).

Clones the committed repository into a temporary folder (a fresh clone, as a new user gets it),
runs `dvc repro` once to build everything, then times repeated no-op `dvc repro` calls.

    python benchmarks/bench_dvc_noop.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 3.0


def dvc(cwd: Path, *args: str) -> float:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"dvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="no-op runs to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medvill-dvc-") as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        full = dvc(clone, "repro")
        print(f"full dvc repro on the demo dataset: {full:.1f} s")
        times = [dvc(clone, "repro") for _ in range(args.repeats)]
        median = statistics.median(times)
        print(
            f"no-op dvc repro: median {median:.2f} s over {args.repeats} runs "
            f"(min {min(times):.2f}, max {max(times):.2f}); target < {TARGET_SECONDS:.0f} s: "
            f"{'met' if median < TARGET_SECONDS else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
