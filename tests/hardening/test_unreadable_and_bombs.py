"""Permission errors in every adapter (report, XML, image) and the bomb guard's memory.

The tests run as root, for whom chmod does not block a read, so a permission error is made
in-process: ``open`` inside :mod:`pipeline.rawfiles` raises the PermissionError the OS would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import pipeline.rawfiles
from pipeline.datasets.openi import read_dataset as read_openi
from pipeline.datasets.sample import read_dataset as read_sample
from pipeline.images import read_source
from pipeline.imaging.decode import ImageError, decode_image
from pipeline.rawfiles import RawInputError, resolve_under
from tests.hardening.hostile import IMAGES, REPO, copy_image, write_bomb_png, write_manifest

PNG = (REPO / "data" / "sample" / IMAGES[0]).read_bytes()


def _deny(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """``open`` of any path ending in ``name`` fails as for a file the user may not read."""

    def guarded_open(path: object, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if str(path).endswith(name):
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(pipeline.rawfiles, "open", guarded_open, raising=False)


def test_unreadable_report_is_a_reject_with_the_os_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/locked.txt").write_text("FINDINGS: clear.")
    (tmp_path / "reports/open.txt").write_text("FINDINGS: clear.")
    image = copy_image(tmp_path, "images/a.png")
    write_manifest(
        tmp_path,
        [
            {"image_id": "x1", "patient_id": "P1", "study_id": "S1", "image": image,
             "report": "reports/locked.txt"},
            {"image_id": "x2", "patient_id": "P2", "study_id": "S2", "image": image,
             "report": "reports/open.txt"},
        ],
    )  # fmt: skip
    _deny(monkeypatch, "locked.txt")
    result = read_sample(tmp_path, {})
    assert [r["image_id"] for r in result.records] == ["x2"]
    (reject,) = result.rejects
    assert (reject.id, reject.code) == ("x1", "unreadable_path")
    assert f"{tmp_path / 'reports/locked.txt'}: cannot read: Permission denied" in reject.reason


def test_unreadable_xml_is_a_reject_with_the_os_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "ecgen-radiology"
    folder.mkdir()
    (folder / "7.xml").write_text("<eCitation><parentImage id='CXR7'/></eCitation>")
    _deny(monkeypatch, "7.xml")
    result = read_openi(tmp_path, {})
    (reject,) = result.rejects
    assert (reject.id, reject.code) == ("7", "unreadable_path")
    assert reject.reason == f"{folder / '7.xml'}: cannot read: Permission denied"


def test_unreadable_image_is_an_error_with_the_os_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(PNG)
    _deny(monkeypatch, "a.png")
    with pytest.raises(ImageError) as caught:
        read_source(path)
    assert (caught.value.code, caught.value.message) == (
        "unreadable_path",
        "cannot read: Permission denied",
    )


def test_bomb_writer_makes_real_pngs(tmp_path: Path) -> None:
    write_bomb_png(tmp_path / "small.png", 300, 200, pixel_data=True)
    with Image.open(tmp_path / "small.png") as image:
        pixels = np.asarray(image)
    assert pixels.shape == (200, 300) and int(pixels.max()) == 0


def test_max_pixels_is_the_limit_and_names_the_size() -> None:
    with pytest.raises(ImageError) as caught:
        decode_image(PNG, 512, fast=True, max_pixels=512 * 512 - 1)
    assert caught.value.code == "image_too_large"
    assert "512×512 = 262,144 pixels, over images.max_pixels=262,143" in caught.value.message
    assert decode_image(PNG, 512, fast=True, max_pixels=512 * 512).width == 512


def test_bomb_is_rejected_before_any_large_allocation(tmp_path: Path) -> None:
    """Decoding 20,000² would need 400 MB; the guard must stop at the header (peak < 250 MB).

    The peak is the process's own high-water mark (VmHWM), which starts afresh at exec,
    unlike ru_maxrss, which keeps the forking pytest process's size.
    """
    bomb = tmp_path / "bomb.png"
    write_bomb_png(bomb, 20000, 20000, pixel_data=True)
    script = (
        "import json, re\n"
        "from pipeline.imaging.decode import ImageError, decode_image\n"
        "try:\n"
        f"    decode_image(open({str(bomb)!r}, 'rb').read(), 512, True)\n"
        "    code = 'decoded'\n"
        "except ImageError as error:\n"
        "    code = error.code\n"
        "status = open('/proc/self/status').read()\n"
        "peak_kb = int(re.search(r'VmHWM:\\s+(\\d+)', status).group(1))\n"
        "print(json.dumps({'code': code, 'peak_mb': peak_kb / 1024}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout)
    assert outcome["code"] == "image_too_large"
    assert outcome["peak_mb"] < 250


def test_dicom_header_size_is_checked_against_max_pixels() -> None:
    data = (REPO / "data/sample/images/dicom/siim_nih_cr_pa_monochrome2.dcm").read_bytes()
    decoded = decode_image(data, 512, True)
    with pytest.raises(ImageError) as caught:
        decode_image(data, 512, True, max_pixels=decoded.width * decoded.height - 1)
    assert caught.value.code == "image_too_large"
    assert f"{decoded.width}×{decoded.height}" in caught.value.message


def test_a_symlinked_raw_root_and_links_inside_it_are_followed(tmp_path: Path) -> None:
    """``data/raw -> /mnt/big`` is a common setup: only targets outside the real root fail."""
    real = tmp_path / "big"
    copy_image(real, "images/a.png")
    (real / "images/alias.png").symlink_to("a.png")
    (tmp_path / "outside.png").write_bytes(PNG)
    (real / "images/escape.png").symlink_to(tmp_path / "outside.png")
    root = tmp_path / "raw"
    root.symlink_to(real)
    assert resolve_under(root, "images/a.png") == root / "images/a.png"
    assert resolve_under(root, "images/../images/alias.png").is_file()
    for hostile in ("images/escape.png", "../big/../outside.png", "C:\\data\\a.png", "/etc/passwd"):
        with pytest.raises(RawInputError) as caught:
            resolve_under(root, hostile)
        assert caught.value.code == "path_outside_root" and repr(hostile) in caught.value.message
