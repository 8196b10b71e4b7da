"""The whole pipeline on the embedded demo dataset: outputs, reproducibility, DVC behaviour."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.cli import STAGES, run_stages

REPO = Path(__file__).resolve().parents[2]
#: Wall-clock throughput; the only stage output that legitimately differs between runs.
NONDETERMINISTIC = {"timing.json"}

pytestmark = pytest.mark.slow


def _outputs(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name not in NONDETERMINISTIC
    }


def _run_in_checkout(checkout: Path, workers: int) -> Path:
    """Run every stage in a copy of the project at ``checkout``, as a second clone would.

    Task files name images by their path from the project root (``data/interim/...``), so
    the comparison is between two checkouts, each with its own ``data/``.
    """
    shutil.copytree(REPO / "data/sample", checkout / "data/sample")
    shutil.copy2(REPO / "params.yaml", checkout / "params.yaml")
    previous = Path.cwd()
    os.chdir(checkout)
    try:
        run_stages(list(STAGES), "sample", workers=workers)
    finally:
        os.chdir(previous)
    return checkout / "data"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _run_in_checkout(tmp_path_factory.mktemp("checkout_a"), workers=2)


def test_every_stage_reconciles_and_shards_hold_the_survivors(demo_run: Path) -> None:
    interim = demo_run / "interim" / "sample"
    previous_out = None
    for stage in STAGES:
        stats = json.loads((interim / stage / "stats.json").read_text())
        if stage == "localized":  # counts annotations (the demo has none), not records
            assert stats["in"] == stats["out"] == 0 and stats["reconciled"]
            continue
        if stage == "vqa":  # synthetic questions: several per image, counted not reconciled
            assert stats["out_unit"] == "questions" and stats["out"] > stats["in"]
            continue
        assert stats["reconciled"] and stats["in"] == stats["out"] + stats["rejected"], stage
        if stage in {"sections", "images"}:
            assert stats["in"] == json.loads((interim / "ingest/stats.json").read_text())["out"]
        elif previous_out is not None and stage != "images":
            assert stats["in"] == previous_out, stage
        if stage != "images":
            previous_out = stats["out"]
    index = json.loads((demo_run / "shards/sample/index.json").read_text())
    shards_stats = json.loads((interim / "shards/stats.json").read_text())
    assert index["total"] == shards_stats["out"] > 20
    assert {name for name, s in index["splits"].items() if s["total"] > 0} == {
        "train",
        "valid",
        "test",
    }
    for plot in ("images/crop_montage.png", "label/label_prevalence.png"):
        assert (interim / plot).read_bytes()[:4] == b"\x89PNG"


def test_second_run_elsewhere_is_byte_identical(demo_run: Path, tmp_path: Path) -> None:
    second_run = _run_in_checkout(tmp_path, workers=1)
    first, second = _outputs(demo_run), _outputs(second_run)
    assert sorted(first) == sorted(second) and len(first) > 100
    different = [name for name in first if first[name] != second[name]]
    assert different == []


def _dvc(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


#: The data-preparation stages (the model stages after them are exercised in tests/medvill).
DATA_TARGETS = ("shards@sample", "pairs@sample", "vqa@sample")


def test_dvc_repro_fresh_clone_then_noop_then_partial_rerun(tmp_path: Path) -> None:
    project = tmp_path / "clone"
    project.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy2(REPO / name, project / name)
    shutil.copytree(REPO / ".dvc", project / ".dvc", ignore=shutil.ignore_patterns("tmp", "cache"))
    shutil.copytree(REPO / "data/sample", project / "data/sample")
    shutil.copytree(
        REPO / "pipeline", project / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)

    first = _dvc(project, "repro", *DATA_TARGETS)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (project / "data/shards/sample/index.json").is_file()

    start = time.perf_counter()
    noop = _dvc(project, "repro", *DATA_TARGETS)
    assert noop.returncode == 0, noop.stderr
    assert "Running stage" not in noop.stdout
    assert time.perf_counter() - start < 30  # the < 3 s target is measured in benchmarks/

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["images"]["output_size"] = 256
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    partial = _dvc(project, "repro", *DATA_TARGETS)
    assert partial.returncode == 0, partial.stderr
    ran = {line.split("'")[1] for line in partial.stdout.splitlines() if "Running stage" in line}
    assert {"images@sample", "shards@sample"} <= ran
    assert not ran & {"ingest@sample", "sections@sample", "label@sample", "split@sample"}
