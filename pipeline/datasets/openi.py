"""Adapter for Open-I / Indiana University chest X-rays (``ecgen-radiology`` XML reports).

Expected layout under the raw root (the two NLM downloads, unpacked side by side)::

    ecgen-radiology/<report id>.xml     required: at least one report XML
    NLMCXR_png/<image id>.png           images named by the XML's parentImage id

Images beside the XMLs (``ecgen-radiology/<image id>.png``) are accepted too; for each image
the adapter uses ``NLMCXR_png/`` when the file is there, else the XML folder, else it records
the ``NLMCXR_png`` path (or the XML folder when there is no ``NLMCXR_png/``) and the ingest
stage rejects it as ``image_missing``.

Per report XML (one study): ``study_id`` = the file stem (the numeric id MedViLL's Open-I files
use, e.g. ``"1420"``; the XML's ``uId`` goes to extra_json). Open-I has no patient ids, so
``patient_id`` = ``study_id``: each report counts as its own patient for the split. Each
``parentImage id="CXR1_1_IM-0001-3001"`` becomes one record. The XML gives no per-image view
(its caption describes the whole study, e.g. "PA and Lateral"), so ``view`` is "" and the
caption is kept in extra_json. ``report_text`` is rebuilt from the ``AbstractText`` sections
as ``"COMPARISON: …\\n\\nINDICATION: …\\n\\nFINDINGS: …\\n\\nIMPRESSION: …"`` (document order,
empty sections left out) so the sections stage finds the headers. MeSH ``major``/``minor``
terms go to extra_json (MedViLL's Open-I labels come from them).

XML is parsed with ``xml.etree.ElementTree``, which does not fetch external entities. A file
that does not parse, or has no images, is one reject naming the file. Files that are not valid
UTF-8 (legacy Windows-1252 exports without an encoding declaration) are decoded with the shared
fallback and parsed again, with a note in extra_json.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from pipeline.datasets.common import AdapterResult, LayoutError, decode_report, extra_json
from pipeline.rawfiles import (
    RawInputError,
    check_id_component,
    read_regular_file,
    resolve_under,
)
from pipeline.records import Reject

DATASET = "openi"
REPORTS_DIR = "ecgen-radiology"
IMAGES_DIR = "NLMCXR_png"
LAYOUT = (
    f"Open-I: <root>/{REPORTS_DIR}/<report id>.xml and images "
    f"<root>/{IMAGES_DIR}/<parentImage id>.png (or beside the XML files)"
)
#: The encoding an XML declaration names, if any.
DECLARED_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*encoding=["']([A-Za-z0-9._-]+)["']""")


def parse_xml(data: bytes) -> tuple[ET.Element, str | None]:
    """Parse report bytes, retrying invalid UTF-8 with the shared Windows-1252 fallback.

    The retry applies to files that declare UTF-8 or nothing (legacy exports often claim
    UTF-8 while holding Windows-1252 bytes). A file that declares another encoding was already
    decoded as declared, so a parse error there is a real error.
    """
    try:
        return ET.fromstring(data), None
    except ET.ParseError:
        declared = DECLARED_ENCODING.match(data)
        if declared and declared.group(1).lower().replace(b"_", b"-") not in (b"utf-8", b"utf8"):
            raise
        try:
            text, note = decode_report(data)
        except RawInputError:
            note = None
        if note is None:
            raise
        return ET.fromstring(text), note


def element_text(element: ET.Element) -> str:
    """All text inside ``element`` (tags removed), whitespace-stripped."""
    return "".join(element.itertext()).strip()


def report_text(root: ET.Element) -> tuple[str, list[str]]:
    """``LABEL: text`` blocks joined by blank lines, and the labels in document order."""
    blocks, labels = [], []
    for node in root.iter("AbstractText"):
        label = (node.get("Label") or "").strip().upper()
        text = element_text(node)
        if label and text:
            blocks.append(f"{label}: {text}")
            labels.append(label)
    return "\n\n".join(blocks), labels


def image_path(raw: Path, xml_dir: Path, image_id: str) -> str:
    """Where image ``image_id`` is, relative to ``raw`` (see the module docstring)."""
    name = f"{image_id}.png"
    flat = raw / IMAGES_DIR
    for folder in (flat, xml_dir):
        if (folder / name).is_file():
            return (folder / name).relative_to(raw).as_posix()
    folder = flat if flat.is_dir() else xml_dir
    return (folder / name).relative_to(raw).as_posix()


def read_report(raw: Path, xml_dir: Path, path: Path) -> tuple[list[dict[str, Any]], Reject | None]:
    """The records of one report XML, or a reject naming the file."""
    study_id = path.stem
    try:
        resolve_under(raw, path.relative_to(raw).as_posix())
        root, encoding_note = parse_xml(read_regular_file(path))
    except RawInputError as error:
        return [], Reject(study_id, "ingest", error.code, f"{path}: {error.message}")
    except ET.ParseError as error:
        return [], Reject(study_id, "ingest", "unparsable_xml", f"{path}: not valid XML ({error})")
    images = [
        (node.get("id", "").strip(), node) for node in root.iter("parentImage") if node.get("id")
    ]
    for image_id, _ in images:
        try:
            check_id_component(image_id, "parentImage id")
        except RawInputError as error:
            return [], Reject(study_id, "ingest", error.code, f"{path}: {error.message}")
    if not images:
        return [], Reject(
            study_id, "ingest", "no_images", f"{path}: report has no parentImage element"
        )
    text, sections = report_text(root)
    mesh = root.find("MeSH")
    uid = root.find("uId")
    base: dict[str, Any] = {
        "mesh_major": [element_text(n) for n in mesh.iter("major")] if mesh is not None else [],
        "mesh_minor": [element_text(n) for n in mesh.iter("minor")] if mesh is not None else [],
        "report_file": path.relative_to(raw).as_posix(),
        "report_sections": sections,
        "uid": uid.get("id", "") if uid is not None else "",
    }
    if encoding_note:
        base["report_encoding"] = encoding_note
    records = []
    for image_id, node in sorted(images, key=lambda item: item[0]):
        caption = node.find("caption")
        extra = {**base, "caption": element_text(caption) if caption is not None else ""}
        records.append(
            {
                "dataset": DATASET,
                "image_id": image_id,
                "patient_id": study_id,
                "study_id": study_id,
                "view": "",
                "image_path": image_path(raw, xml_dir, image_id),
                "report_text": text,
                "official_split": "",
                "synthetic_report": False,
                "extra_json": extra_json(extra),
            }
        )
    return records, None


def read_dataset(raw: Path, params: dict[str, Any]) -> AdapterResult:
    """Records for every parentImage of every report XML, in sorted file order."""
    xml_dir = raw / REPORTS_DIR
    files = sorted(xml_dir.glob("*.xml")) if xml_dir.is_dir() else []
    if not files:
        raise LayoutError(
            f"required file not found: {xml_dir}/*.xml (no report XML files)\n"
            f"expected layout: {LAYOUT}"
        )
    result = AdapterResult()
    for path in files:
        records, reject = read_report(raw, xml_dir, path)
        result.records.extend(records)
        if reject is not None:
            result.rejects.append(reject)
    return result
