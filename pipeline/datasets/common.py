"""Helpers shared by the dataset adapters: the adapter result type, layout errors, report text."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.records import Reject


class LayoutError(FileNotFoundError):
    """A required file of a dataset's raw layout is missing; the message names it."""


@dataclass
class AdapterResult:
    """What an adapter found under a raw root.

    ``records`` holds one dict per image with the keys of ``INGEST_COLUMNS``; ``rejects`` holds
    the candidates it could not turn into a record (unparsable XML, report file missing, …).
    Every candidate the adapter saw is in exactly one of the two.
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def require_file(path: Path, layout_hint: str) -> Path:
    """Return ``path`` or raise LayoutError naming it and the expected layout."""
    if not path.is_file():
        raise LayoutError(f"required file not found: {path}\nexpected layout: {layout_hint}")
    return path


def decode_report(raw: bytes) -> tuple[str, str | None]:
    """Decode report bytes as UTF-8, falling back to Windows-1252 for legacy exports.

    Returns the text and a note when the fallback was used, so the record keeps a trace of it.
    Windows-1252 is tried before Latin-1 because it maps the curly quotes and dashes that
    dictation systems emit; undefined bytes become U+FFFD rather than failing the record.
    """
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as error:
        note = f"not valid UTF-8 at byte {error.start}; decoded as Windows-1252"
        return raw.decode("cp1252", errors="replace"), note


def extra_json(values: dict[str, Any]) -> str:
    """Dataset-specific metadata as canonical JSON (stable bytes across runs)."""
    return json.dumps(values, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
