"""Stage output folders: who built them, with which params, and whether they are complete.

Why: a stage killed half way (Ctrl-C, OOM, a node reboot) and rerun with other params — say
``images.output_size`` 512 → 256 — must never leave a folder that a later stage packs as if
it were whole. Each stage folder therefore carries ``complete.json``:

* when a stage starts, it writes ``{"state": "running"}`` before touching anything else;
* when it finishes, it writes ``{"state": "complete", "params_sha256": …}``, a hash of the
  stage's own params block (for ``ingest`` also the adapter, raw root and views).

Before a stage reads an upstream folder it checks that folder's marker: ``running`` means a
run was interrupted, a different hash means it was built with other params; both stop with a
message naming the folder and the command that rebuilds it. A folder without a marker (written
by an older medvill, or restored by DVC, which tracks the declared outputs only) is accepted.
The shards, which leave the pipeline for training, are also written into a fresh folder and
swapped in whole (:func:`replace_dir`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipeline.params import DatasetPaths
from pipeline.records import FILE_MODE, write_json

MARKER = "complete.json"
#: Permissions of a folder built here: what ``mkdir`` gives under the usual umask (0755).
DIR_MODE = FILE_MODE | ((FILE_MODE & 0o444) >> 2)

#: The stages each stage reads (pipeline order). VQA-RAD's vqa stage builds its own inputs.
UPSTREAM: dict[str, tuple[str, ...]] = {
    "ingest": (),
    "images": ("ingest",),
    "sections": ("ingest",),
    "label": ("sections",),
    "split": ("label",),  # a localized dataset's: ingest (upstream_of)
    "pairs": ("split", "images"),
    "vqa": ("split", "images"),
    "shards": ("split", "images", "localized"),
    "localized": ("ingest", "images"),
}


class StageStateError(ValueError):
    """An upstream stage folder is incomplete or was built with other params."""


class OutputNotWritableError(ValueError):
    """The output root cannot be written (under a file, read-only, no permission)."""


def params_fingerprint(stage: str, paths: DatasetPaths, params: dict[str, Any]) -> str:
    """SHA-256 of the ``stage`` block of params.yaml, plus the dataset entry for ``ingest``.

    Only the stage's own block, as DVC tracks it (``params: [images]`` in dvc.yaml): a
    stage that DVC restores or skips then carries the hash its block gives today, and each
    stage checks its direct upstream folders when it runs, so a change further up is caught
    where it happens.
    """
    basis: dict[str, Any] = {"stage": stage, "block": params.get(stage)}
    if stage == "ingest":
        entry = (params.get("datasets") or {}).get(paths.name) or {}
        views = entry.get("views") if isinstance(entry, dict) else None
        basis["dataset"] = {"adapter": paths.adapter, "raw": str(paths.raw), "views": views}
    canonical = json.dumps(basis, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _marker(paths: DatasetPaths, stage: str) -> Path:
    return paths.stage_dir(stage) / MARKER


def upstream_of(stage: str, paths: DatasetPaths) -> tuple[str, ...]:
    """The folders ``stage`` reads for this dataset: :data:`UPSTREAM`, except the split of a
    localized dataset, which reads its ingest records (:func:`pipeline.splits.source_stage`)."""
    if stage == "split":
        from pipeline.splits import source_stage

        return (source_stage(paths),)
    return UPSTREAM.get(stage, ())


def check_upstream(stage: str, paths: DatasetPaths, params: dict[str, Any]) -> None:
    """Refuse to run ``stage`` on an interrupted or differently-configured upstream folder."""
    for upstream in upstream_of(stage, paths):
        marker = _marker(paths, upstream)
        if not marker.is_file():
            continue
        try:
            state = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise StageStateError(f"{marker}: unreadable stage marker ({error})") from error
        rerun = f"rerun `medvill-prep {upstream} --dataset {paths.name}` first"
        if state.get("state") != "complete":
            raise StageStateError(
                f"{paths.stage_dir(upstream)} is incomplete: the {upstream} stage was "
                f"interrupted; {stage} will not read a half-written folder — {rerun}."
            )
        if state.get("params_sha256") != params_fingerprint(upstream, paths, params):
            raise StageStateError(
                f"{paths.stage_dir(upstream)} was built with other `{upstream}` params than "
                f"the current {paths.name} settings; {stage} will not mix outputs — {rerun}."
            )


def mark_running(stage: str, paths: DatasetPaths) -> None:
    """Flag ``stage``'s folder as being rewritten, before any of its files change.

    A folder that does not exist yet needs no flag: until the stage finishes it holds no
    ``records.parquet``, and a downstream stage already stops on that with a clear message.
    """
    if not paths.stage_dir(stage).is_dir():
        return
    write_json({"stage": stage, "state": "running"}, _marker(paths, stage))


def mark_complete(stage: str, paths: DatasetPaths, params: dict[str, Any]) -> None:
    """Flag ``stage``'s folder as whole and record the params it was built with."""
    state = {
        "stage": stage,
        "state": "complete",
        "params_sha256": params_fingerprint(stage, paths, params),
    }
    write_json(state, _marker(paths, stage))


def check_writable(root: Path) -> None:
    """Create ``root`` and a probe file in it, or raise naming the path and the OS reason.

    Done before any work, so an unwritable ``--out`` is one message, not a traceback after
    an hour of decoding.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".medvill-write-test-", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise OutputNotWritableError(
            f"cannot write outputs under {root}: {error.strerror or error} "
            f"({error.filename or root}); choose another --out"
        ) from error


def staging_dir(final: Path) -> Path:
    """A fresh, empty folder beside ``final`` (same file system, so the swap is a rename).

    Leftovers of earlier builds that died before their swap are removed first.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    for leftover in final.parent.glob(f".{final.name}.building-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.building-", dir=final.parent))
    os.chmod(staging, DIR_MODE)  # mkdtemp's 0700 would hide the shards from a lab group
    return staging


def replace_dir(staging: Path, final: Path) -> None:
    """Swap ``staging`` in as ``final``; the old folder is removed only after the swap.

    Two renames: a crash between them leaves no ``final`` at all (a clear "run the stage
    first"), never a mix of old and new files.
    """
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_owned(
    stage: str,
    run_stage: Callable[[DatasetPaths, dict[str, Any], int], dict[str, Any]],
    paths: DatasetPaths,
    params: dict[str, Any],
    workers: int,
) -> dict[str, Any]:
    """Run one stage under the marker protocol of this module; returns its stats."""
    check_upstream(stage, paths, params)
    mark_running(stage, paths)
    stats = run_stage(paths, params, workers)
    mark_complete(stage, paths, params)
    return stats
