"""Read raw dataset files safely: confined to the raw root, regular files only, OS reasons kept.

Why a module of its own: every path an adapter builds comes from data that other people sent —
a manifest column, an XML attribute, an id in a CSV. A crafted value (``../../etc/passwd``, an
absolute path, a symlink to ``/home``) must never make the pipeline copy a file from outside
the dataset into a training shard. And a path that is a folder, a FIFO or a file the process
may not read must become a reject that says why, not a crash or a read that blocks forever.

Symlinks are followed only when their target is inside the raw root (a dataset assembled with
links between its own folders keeps working); a link whose target resolves outside the root is
rejected like ``../``. The root itself may be a symlink (``data/raw -> /mnt/big``): the check
compares fully resolved paths.
"""

from __future__ import annotations

import errno
import gzip
import os
import stat
import zlib
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pandas as pd

#: Reject code of a data-derived path that leaves the raw root.
OUTSIDE_ROOT = "path_outside_root"
#: Reject code of a path that exists but cannot be read (folder, FIFO, permission, I/O error).
UNREADABLE = "unreadable_path"


class RawInputError(Exception):
    """One raw input that cannot be used; ``code`` is the reject kind, ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_id_component(value: str, what: str) -> None:
    """An id that becomes one file-name component must not hold a separator or be ``..``.

    ``what`` names the field (``dicom_id``, ``parentImage id``) for the reject reason.
    """
    if "/" in value or "\\" in value or value in (".", "..") or "\x00" in value:
        raise RawInputError(
            OUTSIDE_ROOT,
            f"{what} {value!r} holds a path separator or is '.'/'..': an id names one file, "
            "so it could point outside its folder",
        )


def resolve_under(root: Path, relative: str) -> Path:
    """``root / relative`` after checking that it resolves inside ``root``.

    Raises RawInputError(``path_outside_root``) naming the value for an absolute path (POSIX
    or Windows style), a ``..`` escape, or a symlink whose target lies outside the root.
    The returned path is the unresolved ``root / relative`` so reject reasons and tables keep
    the name the data used.
    """
    if (
        PurePosixPath(relative).is_absolute()
        or PureWindowsPath(relative).is_absolute()
        or PureWindowsPath(relative).drive
    ):
        raise RawInputError(
            OUTSIDE_ROOT, f"path {relative!r} is absolute; it must be relative to {root}"
        )
    if "\x00" in relative:
        raise RawInputError(OUTSIDE_ROOT, f"path {relative!r} holds a NUL byte")
    real_root = root.resolve()
    target = (real_root / relative).resolve()
    if not target.is_relative_to(real_root):
        raise RawInputError(
            OUTSIDE_ROOT,
            f"path {relative!r} resolves to {target}, outside the raw root {real_root} "
            "('..' or a symlink leaving the root)",
        )
    return root / relative


def os_reason(error: OSError) -> str:
    """The operating system's sentence for ``error`` (``Permission denied``, …)."""
    return error.strerror or str(error)


def read_regular_file(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file (symlinks followed).

    Raises FileNotFoundError when nothing is there, and RawInputError(``unreadable_path``) with
    the OS reason for a folder, a FIFO/socket/device (opening a FIFO would block the run until
    some writer appears) or a file that cannot be opened or read.
    """
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise OSError(errno.EINVAL, "not a regular file (FIFO, socket or device)", str(path))
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise
    except OSError as error:
        raise RawInputError(UNREADABLE, f"cannot read: {os_reason(error)}") from error


def read_csv_table(path: Path, **options: Any) -> pd.DataFrame:
    """A metadata CSV (plain or ``.gz``) read whole, or ValueError naming the file and problem.

    A truncated or fake gzip, an empty file, binary junk or a malformed row would otherwise
    surface as a bare zlib/pandas traceback — or, worse, as half a table.
    """
    try:
        return pd.read_csv(path, **options)
    except pd.errors.EmptyDataError as error:
        raise ValueError(f"{path}: the table is empty (no header row)") from error
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        reason = str(error) or type(error).__name__
        raise ValueError(f"{path}: corrupt or truncated gzip data ({reason})") from error
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}: not a UTF-8 CSV (undecodable byte at offset {error.start})"
        ) from error
    except pd.errors.ParserError as error:
        raise ValueError(f"{path}: malformed CSV ({error})") from error
    except OSError as error:
        raise ValueError(f"{path}: cannot read: {os_reason(error)}") from error
