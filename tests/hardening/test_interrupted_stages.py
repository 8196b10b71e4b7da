"""A stage killed half way and rerun with changed params never leaves shards that mix sizes.

The kill is simulated in-process: the images stage's file writer (or the shards' tar writer)
raises after the first file, as a SIGKILL would stop it. The commands go through the typer
app, so exit codes and messages are the CLI's.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image
from typer.testing import CliRunner

import pipeline.images
import pipeline.shards
from pipeline.cli import app
from tests.hardening.hostile import IMAGES, copy_image, write_manifest, write_params

REPORT = "FINDINGS: Heart size is normal. Lungs are clear.\nIMPRESSION: No acute process.\n"


def invoke(stage: str, raw: Path, out: Path, params: Path) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(
        app,
        [stage, "--dataset", "tiny", "--adapter", "sample", "--raw", str(raw), "--out", str(out),
         "--params", str(params), "--workers", "1"],
    )  # fmt: skip
    error = None if isinstance(result.exception, SystemExit) else result.exception
    return result.exit_code, "".join(result.output.split()), error  # rich wraps long lines


def shard_sizes(out: Path) -> list[tuple[int, int]]:
    """The size of every image in every shard listed by index.json (count checked too)."""
    shards = out / "shards" / "tiny"
    index = json.loads((shards / "index.json").read_text())
    sizes = []
    for split in index["splits"].values():
        for shard in split["shards"]:
            samples = list(wds.WebDataset(str(shards / shard["file"]), shardshuffle=False))
            assert len(samples) == shard["samples"]
            for sample in samples:
                sizes.append(Image.open(io.BytesIO(sample["png"])).size)
    assert len(sizes) == index["total"]
    assert sorted(p.name for p in shards.rglob("*.tar")) == sorted(
        Path(s["file"]).name for split in index["splits"].values() for s in split["shards"]
    )
    return sizes


def _fail_after(monkeypatch: pytest.MonkeyPatch, module: object, name: str, calls: int) -> None:
    original = getattr(module, name)
    count = {"n": 0}

    def failing(*args: object, **kwargs: object) -> object:
        count["n"] += 1
        if count["n"] > calls:
            raise KeyboardInterrupt(f"simulated kill after {calls} file(s)")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


def test_interrupted_images_rerun_at_another_size_never_mixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = tmp_path / "raw"
    (raw / "reports").mkdir(parents=True)
    (raw / "reports/r.txt").write_text(REPORT)
    rows = []
    for n in range(4):
        image = copy_image(raw, f"images/{n}.png", IMAGES[n % 2])
        rows.append(
            {"image_id": f"i{n}", "patient_id": f"P{n}", "study_id": f"S{n}", "image": image,
             "report": "reports/r.txt"}
        )  # fmt: skip
    write_manifest(raw, rows)
    out = tmp_path / "out"
    common = {"shards": {"samples_per_shard": 1}}
    p512 = write_params(
        tmp_path / "p512.yaml", {**common, "images": {"output_size": 512, "format": "png"}}
    )
    p256 = write_params(
        tmp_path / "p256.yaml", {**common, "images": {"output_size": 256, "format": "png"}}
    )

    assert invoke("all", raw, out, p512)[0] == 0
    assert set(shard_sizes(out)) == {(512, 512)}

    # images at 256, killed after one file: its folder now holds one 256 and three 512 files
    _fail_after(monkeypatch, pipeline.images, "atomic_write_bytes", 1)
    assert invoke("images", raw, out, p256)[0] == 130  # click's exit code for Ctrl-C
    monkeypatch.undo()
    code, message, _ = invoke("shards", raw, out, p256)
    assert code == 2 and "imagesisincomplete" in message and "rerun`medvill-prepimages" in message
    assert set(shard_sizes(out)) == {(512, 512)}  # the old shards are untouched

    assert invoke("images", raw, out, p256)[0] == 0
    code, message, _ = invoke("shards", raw, out, p512)  # images now differ from these params
    assert code == 2 and "wasbuiltwithother`images`params" in message
    assert set(shard_sizes(out)) == {(512, 512)}

    # the shards stage itself killed after one tar: the previous shards stay whole
    _fail_after(monkeypatch, pipeline.shards, "write_shard", 1)
    assert invoke("shards", raw, out, p256)[0] == 130
    monkeypatch.undo()
    assert set(shard_sizes(out)) == {(512, 512)}

    assert invoke("shards", raw, out, p256)[0] == 0
    assert shard_sizes(out) == [(256, 256)] * 4
    assert not list((out / "shards").glob(".tiny.*"))  # no staging folder left behind
