"""Read WebDataset tar shards lazily: samples from the tar headers, bytes only when needed.

Why not webdataset's own reader: the loaders give sample *i* of one global, seeded order to
stream ``i mod (ranks × workers)`` (so a global batch is the same set of samples whatever the
world size, and a resume can skip exactly what was consumed). Every stream therefore walks the
whole order, but needs the bytes of only its own ``1/streams`` of the samples. webdataset reads
shards as streams, so every worker would read every byte of every shard — with 8 ranks × 8
workers on MIMIC-CXR, 64 full reads of the data per epoch. Here a stream builds the order from
the shards' member index (``members.parquet``, written once by the shards stage; see
``pipeline/members.py``) — or, for shards it does not cover or that changed since, from the
512-byte tar headers — and seeks to the data of its own samples only.

Grouping follows webdataset's ``tarfile_to_samples``: the key is the member path up to the first
dot of the file name, extensions are lower-cased, ``__meta__`` members and non-files are
skipped, and a shard boundary always ends a sample; the tests compare both readers on the same
shards. Shards are written by ``pipeline.shards`` with webdataset's ``TarWriter``.
"""

from __future__ import annotations

import logging
import os
import re
import tarfile
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from pipeline.members import ShardContents

log = logging.getLogger(__name__)

#: webdataset's ``base_plus_ext``: (key, extensions) of a member path.
MEMBER_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")
#: webdataset's ``skip_meta``: members such as ``__index__`` are not sample data.
META_MEMBER = re.compile(r"__[^/]*__($|/)")
#: tar's block size: headers and padded member data.
BLOCK = 512
#: Open shard files kept per reader (the shuffle buffer mixes neighbouring shards).
OPEN_SHARDS = 8


@dataclass(frozen=True)
class SampleRef:
    """Where one sample's members are: (extension, byte offset, size) in tar order."""

    key: str
    url: str
    members: tuple[tuple[str, int, int], ...]

    def extensions(self) -> tuple[str, ...]:
        return tuple(ext for ext, _, _ in self.members)


def sample_refs(
    urls: Iterable[str],
    handler: Callable[[Exception], bool],
    contents: dict[str, ShardContents] | None = None,
) -> Iterator[SampleRef]:
    """Every sample of ``urls`` in order; a broken shard goes to ``handler`` (True = go on).

    ``contents`` (from the member index) replaces the header scan of each shard it covers
    whose size still matches; other shards are scanned.
    """
    for url in urls:
        try:
            known = contents.get(url) if contents else None
            if known is not None and index_matches(url, known):
                yield from _group(url, iter(known.members), handler)
            else:
                if known is not None:
                    log.warning("%s changed since the member index was written: scanning it", url)
                yield from _shard_refs(url, handler)
        except Exception as error:
            error.args = (*error.args, f"@ {url}")
            if not handler(error):
                return


def index_matches(url: str, known: ShardContents) -> bool:
    """Whether the tar is still the one indexed: same size, its last indexed member's header
    where the index says, and the end-of-archive block right after that member's data (tar
    pads to 10 KiB records, so a small appended member does not change the size)."""
    if os.path.getsize(url) != known.size or not known.members:
        return False
    name, offset, size = known.members[-1]
    end = offset + -(-size // BLOCK) * BLOCK
    with open(url, "rb") as handle:
        handle.seek(offset - BLOCK)
        header = handle.read(BLOCK)
        handle.seek(end)
        trailer = handle.read(BLOCK)
    try:
        info = tarfile.TarInfo.frombuf(header, tarfile.ENCODING, "surrogateescape")
    except tarfile.HeaderError:
        return False
    # a long name's header holds a truncated name (the full one is in a preceding record)
    return info.size == size and name.startswith(info.name) and trailer == bytes(BLOCK)


def _shard_refs(url: str, handler: Callable[[Exception], bool]) -> Iterator[SampleRef]:
    """Samples of one shard, from its headers only (``r:`` seeks over member data)."""
    with tarfile.open(url, mode="r:") as tar:

        def regular() -> Iterator[tuple[str, int, int]]:
            for info in tar:
                tar.members = []  # keep memory flat on large shards, as webdataset does
                if info.isreg():
                    yield info.name, info.offset_data, info.size

        yield from _group(url, regular(), handler)


def _group(
    url: str, entries: Iterator[tuple[str, int, int]], handler: Callable[[Exception], bool]
) -> Iterator[SampleRef]:
    """Samples from a shard's regular members (name, data offset, size) by webdataset's rules."""
    key: str | None = None
    members: list[tuple[str, int, int]] = []
    for name, offset, size in entries:
        match = MEMBER_NAME.match(name)
        if META_MEMBER.match(name) or match is None:
            continue
        prefix, ext = match.group(1), match.group(2).lower()
        if prefix != key:
            if members:
                yield SampleRef(str(key), url, tuple(members))
            key, members = prefix, []
        if any(ext == seen for seen, _, _ in members):
            if handler(ValueError(f"{name}: duplicate file name in tar file {url}")):
                continue
            return
        members.append((ext, offset, size))
    if members:
        yield SampleRef(str(key), url, tuple(members))


class MemberReader:
    """Reads the bytes of chosen members of :class:`SampleRef` s, keeping a few shards open.

    Use as a context manager. Only members whose extension is in ``wanted`` are read, so a
    shard member nobody asked for (e.g. a pickle someone slipped in) is never even loaded.
    """

    def __init__(self, wanted: Iterable[str]) -> None:
        self.wanted = frozenset(wanted)
        self._files: OrderedDict[str, IO[bytes]] = OrderedDict()

    def read(self, ref: SampleRef) -> dict[str, Any]:
        """``{"__key__", "__url__", ext: bytes}`` like a webdataset sample, wanted members only."""
        handle = self._open(ref.url)
        sample: dict[str, Any] = {"__key__": ref.key, "__url__": ref.url}
        for ext, offset, size in ref.members:
            if ext not in self.wanted:
                continue
            handle.seek(offset)
            data = handle.read(size)
            if len(data) != size:
                raise EOFError(f"{ref.url}: member {ref.key}.{ext} is truncated")
            sample[ext] = data
        return sample

    def _open(self, url: str) -> IO[bytes]:
        if url in self._files:
            self._files.move_to_end(url)
            return self._files[url]
        if len(self._files) >= OPEN_SHARDS:
            _, oldest = self._files.popitem(last=False)
            oldest.close()
        handle = open(url, "rb")  # noqa: SIM115 - closed by close() / LRU eviction
        self._files[url] = handle
        return handle

    def close(self) -> None:
        while self._files:
            _, handle = self._files.popitem()
            handle.close()

    def __enter__(self) -> MemberReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
