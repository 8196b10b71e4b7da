"""Stage tables read and written in row batches, so memory does not grow with the dataset.

A stage table carries every upstream column (raw report, its sections as JSON, metadata) for
each image: ≈ 4 kB a row, 1.6 GB of Python strings for MIMIC-CXR's 377k images if a stage
held it whole as a pandas frame. The pass-through stages (images, sections, label, split)
instead read the upstream table ``BATCH_ROWS`` rows at a time, add their columns and append
each batch to the output as one Parquet row group; only the columns a stage needs globally
(ids, a text's index) are held for the whole table.

Bytes stay reproducible: the same input gives the same batches, and the output schema is
fixed by the first batch (later batches are cast to it), so a column that happens to be all
null in one batch does not change type.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.records import _atomic_target

#: Rows per batch and per output row group (≈ 80 MB of a MIMIC stage table in pandas).
BATCH_ROWS = 20_000


def table_rows(path: Path) -> int:
    """Row count from the Parquet footer, without reading any column."""
    return pq.ParquetFile(path).metadata.num_rows


def iter_frames(
    path: Path, columns: Sequence[str] | None = None, batch_rows: int | None = None
) -> Iterator[pd.DataFrame]:
    """The table at ``path`` as consecutive pandas frames of at most ``batch_rows`` rows
    (default :data:`BATCH_ROWS`).

    Each frame converts with the file's pandas metadata, so dtypes are those a whole-table
    ``read_parquet`` gives. An empty table yields one empty frame (the columns still exist).
    """
    source = pq.ParquetFile(path)
    schema = source.schema_arrow
    names = list(columns) if columns is not None else schema.names
    empty = True
    for batch in source.iter_batches(batch_size=batch_rows or BATCH_ROWS, columns=names):
        empty = False
        table = pa.Table.from_batches([batch])
        yield table.replace_schema_metadata(schema.metadata).to_pandas()
    if empty:
        yield schema.empty_table().select(names).to_pandas()


class FrameWriter:
    """Append pandas frames to one Parquet file, atomically (a temporary file renamed at the
    end, removed on error), with the compression of :func:`pipeline.records.write_parquet`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._empty: pa.Table | None = None  # an empty first frame: written only if alone
        fd, self._tmp = _atomic_target(path)
        os.close(fd)

    def write(self, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        if table.num_rows == 0:
            # an empty slice may type a column as null: let a non-empty frame fix the schema
            self._empty = self._empty if self._empty is not None else table
            return
        if self._writer is None:
            self._schema = table.schema
            self._writer = pq.ParquetWriter(self._tmp, self._schema, compression="zstd")
        elif table.schema != self._schema:
            table = table.cast(self._schema)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None and self._writer is None:
            if self._empty is None:
                self._tmp.unlink(missing_ok=True)
                raise ValueError(f"{self.path}: no frame was written")
            pq.write_table(self._empty, self._tmp, compression="zstd")
        if self._writer is not None:
            self._writer.close()
        if kind is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)
