"""The shards' member index: where every member of every tar is, written once by the shards stage.

Without it, every loader stream reads every tar header of its split every epoch (to rebuild
the global sample order, see ``medvill/shardreader.py``): 3 headers per sample × 16 workers ×
ranks, each a seek and a 512-byte read. With it, a stream reads one small parquet file and
seeks straight to the members it decodes.

``members.parquet`` (beside ``index.json``): one row per regular tar member, in tar order —
``shard`` (path relative to the index), ``shard_bytes`` (the tar's size, so a rewritten shard
is detected and scanned instead), ``name``, ``offset`` (of the data), ``size``. It is a table
of contents only: the reader applies webdataset's grouping rules to it exactly as it does to
tar headers, so both routes give the same samples.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

MEMBERS_FILE = "members.parquet"
SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("shard_bytes", pa.int64()),
        ("name", pa.string()),
        ("offset", pa.int64()),
        ("size", pa.int64()),
    ]
)


@dataclass(frozen=True)
class ShardContents:
    """One tar's size and its regular members as (name, data offset, size), in tar order."""

    size: int
    members: tuple[tuple[str, int, int], ...]


def scan_shard(path: Path | str) -> ShardContents:
    """Read one tar's headers (the only time they are read, at write time)."""
    members = []
    with tarfile.open(path, mode="r:") as tar:
        for info in tar:
            tar.members = []
            if info.isreg():
                members.append((info.name, info.offset_data, info.size))
    return ShardContents(Path(path).stat().st_size, tuple(members))


def write_member_index(root: Path, shards: Iterable[str]) -> Path:
    """Scan the shards (paths relative to ``root``) and write ``root/members.parquet``."""
    columns: dict[str, list] = {name: [] for name in SCHEMA.names}
    for relative in shards:
        contents = scan_shard(root / relative)
        for name, offset, size in contents.members:
            columns["shard"].append(relative)
            columns["shard_bytes"].append(contents.size)
            columns["name"].append(name)
            columns["offset"].append(offset)
            columns["size"].append(size)
    path = root / MEMBERS_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.table(columns, schema=SCHEMA), tmp)
    tmp.replace(path)
    return path


def read_member_index(path: Path | str, shards: Iterable[str]) -> dict[str, ShardContents]:
    """Contents of the listed shards (absolute paths) that the index at ``path`` covers."""
    path = Path(path)
    wanted = {str((path.parent / s).resolve()) if not Path(s).is_absolute() else s for s in shards}
    table = pq.read_table(path).to_pydict()
    urls: dict[str, str] = {}  # relative → absolute, resolved once per shard
    grouped: dict[str, tuple[int, list[tuple[str, int, int]]]] = {}
    for shard, shard_bytes, name, offset, size in zip(
        table["shard"], table["shard_bytes"], table["name"], table["offset"], table["size"],
        strict=True,
    ):  # fmt: skip
        url = urls.get(shard)
        if url is None:
            url = urls[shard] = str((path.parent / shard).resolve())
        if url not in wanted:
            continue
        entry = grouped.setdefault(url, (int(shard_bytes), []))
        entry[1].append((name, int(offset), int(size)))
    return {url: ShardContents(size, tuple(members)) for url, (size, members) in grouped.items()}
