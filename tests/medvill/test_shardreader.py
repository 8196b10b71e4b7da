"""Lazy shard reader: same samples as webdataset, headers only until asked, bad shards logged."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from medvill.shardreader import MemberReader, SampleRef, sample_refs

SAMPLE_IMAGES = Path(__file__).resolve().parents[2] / "data/sample/images/nih_chestxray14"


def _add(tar: tarfile.TarFile, name: str, data: bytes | None = None) -> None:
    info = tarfile.TarInfo(name)
    if data is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        return
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture
def shards(tmp_path: Path) -> list[str]:
    """Two shards with real X-ray bytes and every member-name rule webdataset applies."""
    images = [p.read_bytes() for p in sorted(SAMPLE_IMAGES.glob("*.png"))[:3]]
    first, second = tmp_path / "shard-000000.tar", tmp_path / "shard-000001.tar"
    with tarfile.open(first, "w") as tar:
        _add(tar, "__index__", b"not a sample")  # webdataset metadata member
        _add(tar, "a.png", images[0])
        _add(tar, "a.txt", b"No acute findings.")
        _add(tar, "a.JSON", b'{"view": "PA"}')  # extension lower-cased
        _add(tar, "dir")  # a directory entry
        _add(tar, "dir/b.seg.png", images[1])  # key up to the first dot of the file name
        _add(tar, "dir/b.txt", "Mild cardiomegaly — stable.".encode())
        _add(tar, "README", b"no extension: not part of any sample")
        _add(tar, "c.txt", b"Small left effusion.")  # sample c continues in the next shard
    with tarfile.open(second, "w") as tar:
        _add(tar, "c.png", images[2])
        _add(tar, "d.txt", b"Clear lungs.")
    return [str(first), str(second)]


def _read_all(refs: list[SampleRef], wanted: tuple[str, ...]) -> list[dict]:
    with MemberReader(wanted) as reader:
        return [reader.read(ref) for ref in refs]


def test_samples_equal_webdatasets_tarfile_to_samples(shards: list[str]) -> None:
    theirs = list(wds.DataPipeline(wds.SimpleShardList(shards), wds.tarfile_to_samples()))
    refs = list(sample_refs(shards, lambda error: False))
    ours = _read_all(refs, ("png", "txt", "json", "seg.png"))
    assert [r.key for r in refs] == ["a", "dir/b", "c", "c", "d"]  # a shard ends a sample
    assert refs[1].extensions() == ("seg.png", "txt")
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine == {k: v for k, v in reference.items() if k != "__local_path__"}


def test_only_wanted_members_are_read(shards: list[str]) -> None:
    refs = list(sample_refs(shards, lambda error: False))
    (sample,) = _read_all(refs[:1], ("txt",))
    assert sample == {"__key__": "a", "__url__": shards[0], "txt": b"No acute findings."}


def test_listing_a_shard_reads_headers_not_member_data(tmp_path: Path) -> None:
    """A stream must be able to skip other streams' samples without reading their bytes."""
    io_stats = Path("/proc/self/io")
    if not io_stats.is_file():
        pytest.skip("needs Linux /proc/self/io to count bytes read")
    shard = tmp_path / "big.tar"
    payload = sorted(SAMPLE_IMAGES.glob("*.png"))[0].read_bytes()
    with tarfile.open(shard, "w") as tar:
        for i in range(40):
            _add(tar, f"s{i:03d}.png", payload)
            _add(tar, f"s{i:03d}.txt", b"text")

    def bytes_read() -> int:
        fields = dict(line.split(": ") for line in io_stats.read_text().splitlines())
        return int(fields["rchar"])

    before = bytes_read()
    refs = list(sample_refs([str(shard)], lambda error: False))
    listed = bytes_read() - before
    assert len(refs) == 40
    assert shard.stat().st_size > 40 * len(payload)
    assert listed < 4 * len(payload)  # ~2 KB of headers per sample, not 40 images


def test_truncated_shard_keeps_earlier_samples_and_goes_on(
    shards: list[str], tmp_path: Path
) -> None:
    data = Path(shards[0]).read_bytes()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) // 2])  # ends inside dir/b.seg.png's data
    errors: list[Exception] = []
    refs = list(sample_refs([str(cut), shards[1]], lambda error: errors.append(error) or True))
    keys = [r.key for r in refs]
    assert keys[:1] == ["a"] and keys[-2:] == ["c", "d"]
    with MemberReader(("png", "seg.png", "txt")) as reader:
        assert reader.read(refs[0])["txt"] == b"No acute findings."
        if "dir/b" in keys:  # listed before the cut was noticed: reading it fails clearly
            with pytest.raises((EOFError, tarfile.ReadError), match=r"truncated|unexpected"):
                reader.read(refs[keys.index("dir/b")])
    assert all("cut.tar" in " ".join(map(str, e.args)) for e in errors)


def test_duplicate_member_goes_to_the_handler(tmp_path: Path) -> None:
    shard = tmp_path / "dup.tar"
    with tarfile.open(shard, "w") as tar:
        _add(tar, "k.txt", b"first")
        _add(tar, "k.txt", b"second")
        _add(tar, "m.txt", b"next sample")
    errors: list[Exception] = []
    refs = list(sample_refs([str(shard)], lambda error: errors.append(error) or True))
    assert [r.key for r in refs] == ["k", "m"]
    assert _read_all(refs[:1], ("txt",))[0]["txt"] == b"first"
    assert len(errors) == 1 and "duplicate file name" in str(errors[0])
    assert [r.key for r in sample_refs([str(shard)], lambda error: False)] == []  # stop

    def reraise(error: Exception) -> bool:
        raise error

    with pytest.raises(ValueError, match="duplicate file name"):
        list(sample_refs([str(shard)], reraise))


def test_member_index_gives_the_same_samples_without_reading_headers(
    shards: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shards stage's members.parquet stands in for the header scan (same keys, members,
    offsets and duplicate handling); a tar rewritten after the index is scanned instead."""
    from pipeline.members import read_member_index, write_member_index

    scanned = list(sample_refs(shards, lambda error: False))
    index = write_member_index(tmp_path, [Path(s).name for s in shards])
    contents = read_member_index(index, shards)
    assert set(contents) == set(shards)

    def no_headers(*args, **kwargs):
        raise AssertionError("a tar header was read although the member index covers it")

    with monkeypatch.context() as patch:
        patch.setattr(tarfile, "open", no_headers)
        indexed = list(sample_refs(shards, lambda error: False, contents))
    assert indexed == scanned
    assert _read_all(indexed, ("png", "txt")) == _read_all(scanned, ("png", "txt"))

    with tarfile.open(shards[1], "a") as tar:  # the shard changes after the index
        _add(tar, "e.txt", b"New sample.")
    rescanned = list(sample_refs(shards, lambda error: False, contents))
    assert [r.key for r in rescanned] == ["a", "dir/b", "c", "c", "d", "e"]
