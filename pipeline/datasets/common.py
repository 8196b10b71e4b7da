"""Helpers shared by the dataset adapters: the adapter result type, layout errors, report text."""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.rawfiles import RawInputError, read_regular_file, resolve_under
from pipeline.records import Reject

#: Reject code of report bytes that do not decode to text.
UNDECODABLE_TEXT = "undecodable_text"


class LayoutError(FileNotFoundError):
    """A required file of a dataset's raw layout is missing; the message names it."""


@dataclass
class AdapterResult:
    """What an adapter found under a raw root.

    ``records`` holds one dict per image with the keys of ``INGEST_COLUMNS``; ``rejects`` holds
    the candidates it could not turn into a record (unparsable XML, report file missing, …).
    Every candidate the adapter saw is in exactly one of the two. ``listed_paths`` holds the
    image paths (relative to the root) of rejected candidates, so the ingest stage does not
    count those images as files the metadata never mentions. ``annotations`` holds the
    localized annotations (boxes, masks) of detection/segmentation datasets as rows of
    ``pipeline.localized.annotations.ANNOTATION_COLUMNS``, in source pixels.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    listed_paths: set[str] = field(default_factory=set)
    annotations: list[dict[str, Any]] = field(default_factory=list)


def require_file(path: Path, layout_hint: str) -> Path:
    """Return ``path`` or raise LayoutError naming it and the expected layout."""
    if not path.is_file():
        raise LayoutError(f"required file not found: {path}\nexpected layout: {layout_hint}")
    return path


#: Byte-order marks and the codec each one announces (UTF-32 marks are not expected in
#: report exports and would read as UTF-16 with NULs, which the control check rejects).
_BOMS: tuple[tuple[bytes, str, str], ...] = (
    (codecs.BOM_UTF8, "utf-8", ""),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE (byte-order mark)"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE (byte-order mark)"),
)
#: Control characters a report may hold: tab, line feed, vertical tab, form feed, return.
_ALLOWED_CONTROLS = frozenset("\t\n\x0b\x0c\r")


def decode_report(raw: bytes) -> tuple[str, str | None]:
    """Decode report bytes: by byte-order mark, else UTF-8, else Windows-1252.

    Returns the text and a note when it was not plain UTF-8, so the record keeps a trace.
    Windows-1252 is tried before Latin-1 because it maps the curly quotes and dashes that
    dictation systems emit; undefined bytes become U+FFFD rather than failing the record.
    Text holding NULs or other control characters is binary data or a wrong guess (UTF-16
    without a byte-order mark reads as UTF-8 with a NUL every other byte): it raises
    RawInputError(``undecodable_text``) instead of becoming training text.
    """
    text: str | None = None
    note: str | None = None
    for bom, codec, label in _BOMS:
        if raw.startswith(bom):
            try:
                text = raw[len(bom) :].decode(codec)
            except UnicodeDecodeError as error:
                raise RawInputError(
                    UNDECODABLE_TEXT,
                    f"starts with a {codec} byte-order mark but is not valid {codec} at byte "
                    f"{error.start + len(bom)}",
                ) from error
            note = f"decoded as {label}" if label else None
            break
    if text is None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            note = f"not valid UTF-8 at byte {error.start}; decoded as Windows-1252"
            text = raw.decode("cp1252", errors="replace")
    check_controls(text)
    return text, note


def check_controls(text: str) -> None:
    """Raise RawInputError(``undecodable_text``) when ``text`` holds control characters."""
    bad = [
        (i, ch)
        for i, ch in enumerate(text)
        if (ch < " " or "\x7f" <= ch <= "\x9f") and ch not in _ALLOWED_CONTROLS
    ]
    if bad:
        offset, first = bad[0]
        raise RawInputError(
            UNDECODABLE_TEXT,
            f"text holds {len(bad)} control character(s) (first U+{ord(first):04X} at "
            f"character {offset}): binary data or an undetected encoding such as UTF-16 "
            "without a byte-order mark",
        )


def extra_json(values: dict[str, Any]) -> str:
    """Dataset-specific metadata as canonical JSON (stable bytes across runs)."""
    return json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def read_report(raw: Path, relative: str) -> tuple[str, str | None]:
    """The decoded report at ``relative`` under the raw root, and its encoding note.

    Raises FileNotFoundError when no file is there, and RawInputError naming the file for a
    path outside the root, an unreadable path or undecodable text.
    """
    path = resolve_under(raw, relative)
    try:
        return decode_report(read_regular_file(path))
    except RawInputError as error:
        raise RawInputError(error.code, f"{path}: {error.message}") from error


def load_report(raw: Path, relative: str) -> tuple[str, str | None] | RawInputError | None:
    """:func:`read_report` for adapters that read many reports in one pass: the text and its
    encoding note, None when no file is there (the adapter decides whether that is a reject),
    or the error that rejects it, returned rather than raised so one bad file never stops
    the others."""
    try:
        return read_report(raw, relative)
    except FileNotFoundError:
        return None
    except RawInputError as error:
        return error
