"""Open-I adapter on a miniature ecgen-radiology tree with real images and permissive texts.

Real Open-I report texts are CC BY-NC-ND, so the XMLs here carry the permissively licensed
sample texts (NegBio, CheXpert labeler) inside the real Open-I XML structure.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.datasets import LayoutError, read_adapter
from pipeline.datasets.openi import read_dataset
from tests.pipeline.datasets.trees import ingest, real_image, reject_map


def report_xml(uid: str, sections: dict[str, str], images: list[str], mesh: str) -> str:
    abstract = "".join(f'<AbstractText Label="{k}">{v}</AbstractText>' for k, v in sections.items())
    parents = "".join(
        f'<parentImage id="{i}"><figureId>F{n}</figureId>'
        f"<caption>Xray Chest PA and Lateral</caption>"
        f'<panel type="single"><url>/hadoop/storage/radiology/extract/{i}.jpg</url></panel>'
        f"</parentImage>"
        for n, i in enumerate(images, start=1)
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<eCitation><meta type="rr"/>'
        f'<uId id="{uid}"/><MedlineCitation><Article><Abstract>{abstract}</Abstract>'
        f"</Article></MedlineCitation><MeSH>{mesh}</MeSH>{parents}</eCitation>\n"
    )


def build_tree(raw: Path) -> Path:
    xml_dir = raw / "ecgen-radiology"
    xml_dir.mkdir(parents=True)
    (xml_dir / "1.xml").write_text(
        report_xml(
            "CXR1",
            {
                "COMPARISON": "None.",
                "INDICATION": "",
                "FINDINGS": "heart and mediastinum are stable. lungs are unchanged. "
                "no pneumothorax.",
                "IMPRESSION": "stable chest.",
            },
            ["CXR1_1_IM-0001-4001", "CXR1_1_IM-0001-3001"],
            "<major>Lung/hyperdistention/mild</major><minor>Scoliosis</minor>",
        ),
        encoding="utf-8",
    )
    real_image(
        "images/nih_chestxray14/00000001_000_xrv512.png",
        raw / "NLMCXR_png" / "CXR1_1_IM-0001-3001.png",
    )
    real_image(
        "images/nih_chestxray14/00027426_000_xrv512.png",
        raw / "NLMCXR_png" / "CXR1_1_IM-0001-4001.png",
    )
    # Windows-1252 bytes under a UTF-8 declaration; image stored beside the XML.
    (xml_dir / "2.xml").write_bytes(
        report_xml(
            "CXR2",
            {"FINDINGS": "3.1 × 2.4 cm mass.", "IMPRESSION": "Mass – CT recommended."},
            ["CXR2_1_IM-0652-1001"],
            "<major>normal</major>",
        ).encode("cp1252")
    )
    real_image("images/mhh_covid19_cc_by_3.0/0a7faa2a.png", xml_dir / "CXR2_1_IM-0652-1001.png")
    (xml_dir / "3.xml").write_text("<eCitation><uId id='CXR3'><MeSH></eCitation>")
    (xml_dir / "4.xml").write_text(
        report_xml("CXR4", {"IMPRESSION": "No acute disease."}, [], ""), encoding="utf-8"
    )
    (xml_dir / "5.xml").write_text(
        report_xml(
            "CXR5",
            {"IMPRESSION": "Heart size normal and lungs are clear. No edema or pneumonia."},
            ["CXR5_1_IM-2000-1001"],
            "<major>normal</major>",
        ),
        encoding="utf-8",
    )
    return raw


def test_adapter_rebuilds_sections_and_keeps_mesh(tmp_path: Path) -> None:
    raw = build_tree(tmp_path / "openi")
    result = read_dataset(raw, {})
    assert [
        (r["image_id"], r["study_id"], r["patient_id"], r["view"], r["image_path"])
        for r in result.records
    ] == [
        ("CXR1_1_IM-0001-3001", "1", "1", "", "NLMCXR_png/CXR1_1_IM-0001-3001.png"),
        ("CXR1_1_IM-0001-4001", "1", "1", "", "NLMCXR_png/CXR1_1_IM-0001-4001.png"),
        ("CXR2_1_IM-0652-1001", "2", "2", "", "ecgen-radiology/CXR2_1_IM-0652-1001.png"),
        ("CXR5_1_IM-2000-1001", "5", "5", "", "NLMCXR_png/CXR5_1_IM-2000-1001.png"),
    ]
    first = result.records[0]
    assert first["report_text"] == (
        "COMPARISON: None.\n\n"
        "FINDINGS: heart and mediastinum are stable. lungs are unchanged. no pneumothorax.\n\n"
        "IMPRESSION: stable chest."
    )
    assert json.loads(first["extra_json"]) == {
        "caption": "Xray Chest PA and Lateral",
        "mesh_major": ["Lung/hyperdistention/mild"],
        "mesh_minor": ["Scoliosis"],
        "report_file": "ecgen-radiology/1.xml",
        "report_sections": ["COMPARISON", "FINDINGS", "IMPRESSION"],
        "uid": "CXR1",
    }
    second = result.records[2]
    assert second["report_text"] == (
        "FINDINGS: 3.1 × 2.4 cm mass.\n\nIMPRESSION: Mass – CT recommended."
    )
    assert json.loads(second["extra_json"])["report_encoding"].endswith("decoded as Windows-1252")
    rejects = {r.id: (r.code, r.reason) for r in result.rejects}
    assert set(rejects) == {"3", "4"}
    assert rejects["3"][0] == "unparsable_xml"
    assert rejects["3"][1].startswith(f"{raw}/ecgen-radiology/3.xml: not valid XML (mismatched tag")
    assert rejects["4"] == (
        "no_images",
        f"{raw}/ecgen-radiology/4.xml: report has no parentImage element",
    )


def test_ingest_counts_reconcile_with_missing_image_and_view_filter(tmp_path: Path) -> None:
    raw = build_tree(tmp_path / "openi")
    stats, records, rejects = ingest(tmp_path, "openi", raw, [])
    assert (stats["in"], stats["out"], stats["rejected"]) == (6, 3, 3)
    assert stats["reject_reasons"] == {"image_missing": 1, "no_images": 1, "unparsable_xml": 1}
    assert records["image_id"].tolist() == [
        "CXR1_1_IM-0001-3001",
        "CXR1_1_IM-0001-4001",
        "CXR2_1_IM-0652-1001",
    ]
    assert reject_map(rejects)["CXR5_1_IM-2000-1001"] == (
        "image_missing",
        f"{raw}/NLMCXR_png/CXR5_1_IM-2000-1001.png: image file not found",
    )
    # Open-I gives no per-image view: a views list without "" rejects every image.
    stats, _, _ = ingest(tmp_path / "ap_pa", "openi", raw, ["AP", "PA"])
    assert (stats["out"], stats["reject_reasons"]["view_filtered"]) == (0, 3)


def test_missing_report_folder_is_a_layout_error(tmp_path: Path) -> None:
    raw = tmp_path / "openi"
    (raw / "NLMCXR_png").mkdir(parents=True)
    with pytest.raises(LayoutError) as error:
        read_adapter("openi", raw, {})
    assert str(error.value) == (
        f"required file not found: {raw}/ecgen-radiology/*.xml (no report XML files)\n"
        "expected layout: Open-I: <root>/ecgen-radiology/<report id>.xml and images "
        "<root>/NLMCXR_png/<parentImage id>.png (or beside the XML files)"
    )
