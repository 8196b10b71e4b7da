"""One hostile demo-layout tree through ``medvill-prep all``: every bad row is a reject with a
code and a reason, nothing from outside the raw root reaches an output, shards read cleanly.

The tree (built once per module from real demo files) holds, besides good rows: paths that
leave the root (``..``, absolute, symlinks out) for images and reports, a folder and a FIFO
where a file is expected, two decompression bombs, reports in five encodings plus two that
decode to control characters, a header-only report, ids that collide after sanitising, and an
image no manifest row lists.
"""

from __future__ import annotations

import codecs
import json
import os
from pathlib import Path
from typing import Any

import pytest
import webdataset as wds

from tests.hardening.hostile import (
    IMAGES,
    MARKER,
    SAMPLE,
    copy_image,
    output_texts,
    plant_marker,
    read_table,
    rejects_by_id,
    run_cli,
    write_bomb_png,
    write_manifest,
    write_params,
)

REPORT = (SAMPLE / "reports" / "S023.txt").read_text(encoding="utf-8")
#: Non-ASCII text every encoding below can hold (Windows-1252 included).
ACCENTED = "\nIMPRESSION: Patient’s café visit – “no change” since 2019.\n"
HEADERS_ONLY = "FINAL REPORT\nEXAMINATION: CHEST (PA)\n"

#: id → (expected stage, expected code, a phrase the reason must contain)
EXPECTED_REJECTS: dict[str, tuple[str, str, str]] = {
    "rep_dotdot": ("ingest", "path_outside_root", "'../outside/secret.txt'"),
    "rep_abs": ("ingest", "path_outside_root", "is absolute"),
    "rep_link_out": ("ingest", "path_outside_root", "'reports/link_out.txt'"),
    "rep_dir": ("ingest", "unreadable_path", "reports/dir.txt: cannot read: Is a directory"),
    "rep_fifo": ("ingest", "unreadable_path", "reports/fifo.txt: cannot read: not a regular"),
    "rep_nul": ("ingest", "undecodable_text", "reports/nul.txt: text holds 1 control"),
    "rep_utf16_nobom": ("ingest", "undecodable_text", "U+0000"),
    "img_dotdot": ("ingest", "path_outside_root", "'../outside/secret.png'"),
    "img_abs": ("ingest", "path_outside_root", "is absolute"),
    "img_link_out": ("ingest", "path_outside_root", "'images/link_out.png'"),
    "img_dir": ("ingest", "unreadable_path", "images/dir.png: cannot read: a folder"),
    "img_fifo": ("ingest", "unreadable_path", "images/fifo.png: cannot read: not a regular"),
    "bomb_header": ("images", "image_too_large", "bomb_header.png: header claims 30000×30000"),
    "bomb_pixels": ("images", "image_too_large", "bomb_pixels.png: header claims 20000×20000"),
    "hdr_only": ("sections", "headers_only", "reports/headers.txt"),
}
#: id → the exact report text ingest must decode.
EXPECTED_TEXTS = {
    "ok_utf8": REPORT,
    "enc_utf8_bom": REPORT + ACCENTED,
    "enc_utf16le": REPORT + ACCENTED,
    "enc_utf16be": REPORT + ACCENTED,
    "enc_cp1252": REPORT + ACCENTED,
    "rep_link_in": REPORT,
}
COLLIDING_IDS = ("c.1", "c-1", "Case1", "case1")
KEPT = {*EXPECTED_TEXTS, "img_link_in", *COLLIDING_IDS}


def build_tree(base: Path) -> tuple[Path, Path]:
    root, outside = base / "raw", base / "outside"
    secret_report, secret_png = plant_marker(outside)
    reports = root / "reports"
    reports.mkdir(parents=True)
    (reports / "utf8.txt").write_text(REPORT, encoding="utf-8")
    text = REPORT + ACCENTED
    (reports / "utf8_bom.txt").write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
    (reports / "utf16le.txt").write_bytes(codecs.BOM_UTF16_LE + text.encode("utf-16-le"))
    (reports / "utf16be.txt").write_bytes(codecs.BOM_UTF16_BE + text.encode("utf-16-be"))
    (reports / "cp1252.txt").write_bytes(text.encode("cp1252"))
    (reports / "nul.txt").write_bytes(REPORT.encode("utf-8").replace(b"FINDINGS", b"FIND\x00INGS"))
    (reports / "utf16_nobom.txt").write_bytes(REPORT.encode("utf-16-le"))
    (reports / "headers.txt").write_text(HEADERS_ONLY, encoding="utf-8")
    (reports / "dir.txt").mkdir()
    os.mkfifo(reports / "fifo.txt")
    (reports / "link_out.txt").symlink_to(secret_report)
    (reports / "link_in.txt").symlink_to("utf8.txt")

    good = copy_image(root, "images/a.png", IMAGES[0])
    copy_image(root, "images/b.png", IMAGES[1])
    copy_image(root, "images/unlisted/never.png", IMAGES[1])
    (root / "images/link_out.png").symlink_to(secret_png)
    (root / "images/link_in.png").symlink_to("b.png")
    (root / "images/dir.png").mkdir()
    os.mkfifo(root / "images/fifo.png")
    write_bomb_png(root / "images/bomb_header.png", 30000, 30000, pixel_data=False)
    write_bomb_png(root / "images/bomb_pixels.png", 20000, 20000, pixel_data=True)

    rows = [
        ("ok_utf8", good, "reports/utf8.txt"),
        ("enc_utf8_bom", good, "reports/utf8_bom.txt"),
        ("enc_utf16le", good, "reports/utf16le.txt"),
        ("enc_utf16be", good, "reports/utf16be.txt"),
        ("enc_cp1252", good, "reports/cp1252.txt"),
        ("rep_nul", good, "reports/nul.txt"),
        ("rep_utf16_nobom", good, "reports/utf16_nobom.txt"),
        ("hdr_only", good, "reports/headers.txt"),
        ("rep_dotdot", good, "../outside/secret.txt"),
        ("rep_abs", good, str(secret_report)),
        ("rep_link_out", good, "reports/link_out.txt"),
        ("rep_link_in", good, "reports/link_in.txt"),
        ("rep_dir", good, "reports/dir.txt"),
        ("rep_fifo", good, "reports/fifo.txt"),
        ("img_dotdot", "../outside/secret.png", "reports/utf8.txt"),
        ("img_abs", str(secret_png), "reports/utf8.txt"),
        ("img_link_out", "images/link_out.png", "reports/utf8.txt"),
        ("img_link_in", "images/link_in.png", "reports/utf8.txt"),
        ("img_dir", "images/dir.png", "reports/utf8.txt"),
        ("img_fifo", "images/fifo.png", "reports/utf8.txt"),
        ("bomb_header", "images/bomb_header.png", "reports/utf8.txt"),
        ("bomb_pixels", "images/bomb_pixels.png", "reports/utf8.txt"),
        *((image_id, good, "reports/utf8.txt") for image_id in COLLIDING_IDS),
    ]
    write_manifest(
        root,
        [
            {
                "image_id": i,
                "patient_id": f"P{n:02d}",
                "study_id": f"S{n:02d}",
                "image": im,
                "report": r,
            }
            for n, (i, im, r) in enumerate(rows)
        ],
    )
    return root, outside


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("hostile")
    root, _ = build_tree(base)
    params = write_params(base / "params.yaml")
    out = base / "out"
    result = run_cli(
        "all", "--dataset", "hostile", "--adapter", "sample", "--raw", str(root),
        "--out", str(out), "--workers", "2", "--params", str(params), cwd=base,
    )  # fmt: skip
    return {"result": result, "out": out, "interim": out / "interim" / "hostile", "root": root}


def test_run_finishes_and_every_stage_reconciles(hostile_run: dict[str, Any]) -> None:
    result = hostile_run["result"]
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    for stage in ("ingest", "images", "sections", "label", "split", "pairs", "shards"):
        stats = json.loads((hostile_run["interim"] / stage / "stats.json").read_text())
        assert stats["in"] == stats["out"] + stats["rejected"], stage


@pytest.mark.parametrize("image_id", sorted(EXPECTED_REJECTS))
def test_each_hostile_row_is_a_reject_with_code_and_reason(
    hostile_run: dict[str, Any], image_id: str
) -> None:
    stage, code, phrase = EXPECTED_REJECTS[image_id]
    rejects = rejects_by_id(hostile_run["interim"] / stage)
    assert image_id in rejects, f"{image_id} not rejected by {stage}"
    assert rejects[image_id][0] == code, rejects[image_id]
    assert phrase in rejects[image_id][1], rejects[image_id]


def test_reports_in_every_encoding_decode_exactly(hostile_run: dict[str, Any]) -> None:
    records = read_table(hostile_run["interim"] / "ingest" / "records.parquet")
    texts = dict(zip(records["image_id"], records["report_text"], strict=True))
    for image_id, expected in EXPECTED_TEXTS.items():
        assert texts[image_id] == expected, image_id
    notes = {
        i: json.loads(e).get("report_encoding", "")
        for i, e in zip(records["image_id"], records["extra_json"], strict=True)
    }
    assert notes["enc_utf16le"] == "decoded as UTF-16 LE (byte-order mark)"
    assert notes["enc_utf16be"] == "decoded as UTF-16 BE (byte-order mark)"
    assert notes["enc_cp1252"].endswith("decoded as Windows-1252")
    assert notes["ok_utf8"] == notes["enc_utf8_bom"] == ""


def test_only_the_good_rows_reach_the_shards(hostile_run: dict[str, Any]) -> None:
    manifest = read_table(hostile_run["interim"] / "shards" / "records.parquet")
    assert set(manifest["image_id"]) == KEPT


def test_no_output_holds_a_byte_from_outside_the_root(hostile_run: dict[str, Any]) -> None:
    leaks = [str(path) for path, data in output_texts(hostile_run["out"]) if MARKER in data]
    assert leaks == []


def test_shards_read_with_webdataset_and_match_the_index(hostile_run: dict[str, Any]) -> None:
    shards = hostile_run["out"] / "shards" / "hostile"
    index = json.loads((shards / "index.json").read_text())
    keys: list[str] = []
    for split in index["splits"].values():
        for shard in split["shards"]:
            samples = list(wds.WebDataset(str(shards / shard["file"]), shardshuffle=False))
            assert len(samples) == shard["samples"]
            for sample in samples:
                assert {"png", "jpg"} & set(sample) and "txt" in sample and "json" in sample
            keys += [sample["__key__"] for sample in samples]
    assert len(keys) == len(set(keys)) == index["total"] == len(KEPT)
    ids = {json.loads(s)["image_id"] for s in _members(shards, "json")}
    assert set(COLLIDING_IDS) <= ids


def _members(shards: Path, extension: str) -> list[bytes]:
    found = []
    for tar in sorted(shards.rglob("*.tar")):
        found += [s[extension] for s in wds.WebDataset(str(tar), shardshuffle=False)]
    return found


def test_image_files_stay_distinct_for_case_only_ids(hostile_run: dict[str, Any]) -> None:
    records = read_table(hostile_run["interim"] / "images" / "records.parquet")
    files = dict(zip(records["image_id"], records["image_file"], strict=True))
    assert len({files[i].casefold() for i in COLLIDING_IDS}) == len(COLLIDING_IDS)


def test_unlisted_images_are_counted(hostile_run: dict[str, Any]) -> None:
    stats = json.loads((hostile_run["interim"] / "ingest" / "stats.json").read_text())
    assert stats["unlisted_files"] == 1
    assert stats["unlisted_examples"] == ["images/unlisted/never.png"]
