"""Tests of the sections stage: header splitting, name normalisation, section policy, stage I/O.

Real report texts are verbatim copies in tests/fixtures/reports (see its README.md): the
MIMIC-CXR website example, two NegBio examples with lower-case headers and CRLF line endings, and
the CheXpert labeler's headerless sample impressions; the other tests use inline texts.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pandas as pd
import pytest

import pipeline.sections as sections_module
from pipeline.params import DatasetPaths
from pipeline.records import INGEST_COLUMNS, read_parquet, write_parquet
from pipeline.sections import (
    SECTION_COLUMNS,
    Section,
    choose_text,
    full_report_text,
    normalize_newlines,
    normalize_section_name,
    parse_report,
    run_stage,
    section_params,
    split_sections,
)

REPORTS = Path(__file__).resolve().parents[1] / "fixtures" / "reports"

MIMIC_FINDINGS = (
    "Cardiac size cannot be evaluated.  Large left pleural effusion is new.  Small\n"
    " right effusion is new.  The upper lungs are clear.  Right lower lobe opacities\n"
    " are better seen in prior CT.  There is no pneumothorax.  There are mild\n"
    " degenerative changes in the thoracic spine"
)
NEGBIO_86_FINDINGS = (
    "pa and lat cxr at 7:34 p.m.. heart and mediastinum are\n"
    "stable. lungs are unchanged. air- filled cystic changes. no\n"
    "pneumothorax. osseous structures unchanged scoliosis"
)
NEGBIO_19248_FINDINGS = (
    "chest: four images:\n"
    "right picc with tip within the upper svc.\n"
    "probable enlargement of the main pulmonary artery.\n"
    "mild cardiomegaly.\n"
    "no evidence of focal infiltrate, effusion or pneumothorax.\n"
    "dictating"
)
CHEXPERT_REPORTS = [
    "Heart size normal and lungs are clear. No edema or pneumonia. No effusion",
    "1. Left pleural effusion with adjacent atelectasis. Right effusion is also present.\n\n"
    "2. Cardiomegaly without overt edema.",
    "Minimal patchy airspace disease within the lingula, may reflect atelectasis or consolidation.",
    "1. Stable mild cardiomegaly. 2. Hyperexpanded but clear lungs.",
]


def read_report(name: str) -> str:
    """A sample report exactly as stored: newline="" keeps the CRLF of the NegBio files."""
    with (REPORTS / name).open(encoding="utf-8", newline="") as handle:
        return handle.read()


def names(sections: list[Section]) -> list[str]:
    return [s.name for s in sections]


def assert_offsets(report: str, sections: list[Section]) -> None:
    """Every section body is the slice of the normalised report its offset says."""
    normalised = normalize_newlines(report)
    for section in sections:
        assert normalised[section.start : section.start + len(section.text)] == section.text


# --- normalize_section_name -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("FINDINGS", "findings"),
        ("  Findings ", "findings"),
        ("FINDINS", "findings"),  # misspelling table
        ("IMPRESSOIN", "impression"),
        ("FINDINGS/IMPRESSION", "impression"),
        ("FINDINGS/ IMPRESSION", "impression"),
        ("FINDINGS  AND IMPRESSION", "impression"),  # inner whitespace collapsed
        ("CONCLUSION", "impression"),
        ("NDICATION", "impression"),  # MIMIC's odd entry, kept for compatibility
        ("REASON FOR EXAMINATION", "indication"),
        ("COMPARISION", "comparison"),
        ("PFI", "history"),
        ("RECOMMENDATION(S)", "recommendations"),
        ("WETREAD", "wet read"),
        ("TWO VIEWS", "findings"),
        ("FINAL IMPRESSION", "impression"),  # substring rule
        ("FINDINGS AND RECOMMENDATIONS", "findings"),  # substring order: findings first here
        ("IMPRESSION AND FINDINGS", "impression"),  # ... impression is checked before findings
        ("PRIOR HISTORY AND COMPARISON", "history"),
        ("CHEST (PA AND LAT)", "findings"),  # study-description rule
        ("PORTABLE AP", "findings"),
        ("RIBS, LEFT", "findings"),
        ("NOTE", "note"),  # unknown names are kept, lower-cased
        ("CLINICAL QUESTION", "clinical question"),
    ],
)
def test_normalize_section_name(raw: str, expected: str) -> None:
    assert normalize_section_name(raw) == expected


# --- split_sections on the real sample reports ------------------------------------------------


def test_mimic_website_example_sections_and_texts() -> None:
    report = read_report("mimic_cxr_website_example.txt")
    sections = split_sections(report)
    assert names(sections) == [
        "preamble",
        "examination",
        "indication",
        "technique",
        "comparison",
        "findings",
        "impression",
    ]
    assert [s.raw_name for s in sections[1:]] == [
        "EXAMINATION",
        "INDICATION",
        "TECHNIQUE",
        "COMPARISON",
        "FINDINGS",
        "IMPRESSION",
    ]
    stripped = {s.name: s.text.strip() for s in sections}
    assert stripped["preamble"] == "FINAL REPORT"
    # The study title after EXAMINATION: is body text, not a second (study-description) header.
    assert stripped["examination"] == "CHEST (PA AND LAT)"
    assert (
        stripped["indication"] == "___ year old woman with ?pleural effusion  // ?pleural effusion"
    )
    assert stripped["comparison"] == "___"
    assert stripped["findings"] == MIMIC_FINDINGS
    assert stripped["impression"] == "Large left pleural effusion"
    assert_offsets(report, sections)
    # MedViLL's "longer of the two" is the findings here; MIMIC's priority gives the impression.
    assert choose_text(sections, "longest", True) == (MIMIC_FINDINGS, "findings")
    assert choose_text(sections, "impression", True) == (
        "Large left pleural effusion",
        "impression",
    )


def test_negbio_lowercase_crlf_report_gives_findings_and_impression() -> None:
    """The strict MIMIC regex (newline, one space, capitals) finds no header in this file.

    So MIMIC's parser returns one 'full report' section and, without a "\\n \\n" break, an
    empty pick. This parser accepts the known lower-case names and CRLF line endings.
    """
    report = read_report("negbio_00000086.txt")
    assert "\r\n" in report
    assert re.search(r"\n [A-Z ()/,-]+:\s", report) is None  # what the strict parser would see
    sections = split_sections(report)
    assert names(sections) == ["preamble", "findings", "impression"]
    assert sections[0].text == ""
    assert sections[1].text.strip() == NEGBIO_86_FINDINGS
    # The dictation trailer belongs to the last section; it is not recognised as boilerplate.
    assert sections[2].text.strip() == "stable chest.\ndictating"
    assert_offsets(report, sections)
    assert choose_text(sections, "longest", False) == (NEGBIO_86_FINDINGS, "findings")


def test_negbio_lowercase_study_title_inside_findings_is_not_a_header() -> None:
    report = read_report("negbio_00019248.txt")
    sections = split_sections(report)
    # "chest:" is a header only in capitals (MIMIC's CHEST (PA AND LAT):), not in lower case.
    assert names(sections) == ["preamble", "findings"]
    assert sections[1].text.strip() == NEGBIO_19248_FINDINGS
    assert choose_text(sections, "longest", False) == (NEGBIO_19248_FINDINGS, "findings")
    assert choose_text(sections, "impression", False) == (NEGBIO_19248_FINDINGS, "findings")


def test_chexpert_headerless_impressions_fall_back_to_full_report() -> None:
    with (REPORTS / "chexpert_labeler_sample_reports.csv").open(encoding="utf-8", newline="") as f:
        reports = [row[0] for row in csv.reader(f)]
    assert reports == CHEXPERT_REPORTS
    for report in reports:
        sections = split_sections(report)
        # No header and no MIMIC "\n \n" break: one section, no last_paragraph. Report 2's
        # plain blank line between its numbered items is not a paragraph break.
        assert sections == [Section("full report", "full report", 0, report)]
        assert choose_text(sections, "longest", True) == (report, "full_report")
        assert choose_text(sections, "longest", False) == ("", "")


# --- header detection -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "report",
    [
        "findings: Lungs are clear.\nimpression: No acute process.",
        "Findings: Lungs are clear.\nImpression: No acute process.",
        "FINDINGS : Lungs are clear.\nIMPRESSION : No acute process.",
        "FINDINGS:\nLungs are clear.\n\nIMPRESSION:\nNo acute process.\n",
        "    FINDINGS:   Lungs are clear.\n\tIMPRESSION:\tNo acute process.",
        "FINDINGS:\r\nLungs are clear.\r\nIMPRESSION:\r\nNo acute process.\r\n",
        "FINDINGS:\rLungs are clear.\rIMPRESSION:\rNo acute process.",
        "\ufeffFINDINGS: Lungs are clear.\nIMPRESSION: No acute process.",
    ],
)
def test_header_case_spacing_and_line_ending_variants(report: str) -> None:
    sections = split_sections(report)
    assert names(sections) == ["preamble", "findings", "impression"]
    assert [s.text.strip() for s in sections] == ["", "Lungs are clear.", "No acute process."]
    assert_offsets(report, sections)


def test_header_on_first_line_and_text_on_header_line() -> None:
    report = "IMPRESSION: No acute cardiopulmonary process."
    sections = split_sections(report)
    assert sections == [
        Section("preamble", "preamble", 0, ""),
        Section("impression", "IMPRESSION", 12, "No acute cardiopulmonary process."),
    ]


def test_no_false_headers_mid_line_or_in_lowercase_prose() -> None:
    report = (
        "FINDINGS: The heart is normal; comparison: none available.\n"
        "Heart size: normal.\n"
        "No change in findings: lungs remain clear.\n"
        "chest: single view.\n"
        "Measured at 7:34 p.m.\n"
        "1. Effusion: small.\n"
        "IMPRESSION: Normal."
    )
    sections = split_sections(report)
    assert names(sections) == ["preamble", "findings", "impression"]
    assert sections[1].text.strip() == (
        "The heart is normal; comparison: none available.\n"
        "Heart size: normal.\n"
        "No change in findings: lungs remain clear.\n"
        "chest: single view.\n"
        "Measured at 7:34 p.m.\n"
        "1. Effusion: small."
    )


def test_line_initial_known_name_is_a_header_even_in_lowercase() -> None:
    """The judgement call: a known name at a line start is taken as a header, whatever case."""
    report = "Findings: Lungs are clear, unchanged from the prior\ncomparison: 2019 film.\n"
    sections = split_sections(report)
    assert [(s.name, s.raw_name, s.text.strip()) for s in sections] == [
        ("preamble", "preamble", ""),
        ("findings", "Findings", "Lungs are clear, unchanged from the prior"),
        ("comparison", "comparison", "2019 film."),
    ]


def test_all_caps_labels_are_headers_as_in_mimic() -> None:
    report = (
        " CHEST (PA AND LAT):\n"
        " HEART SIZE: Normal.\n"
        " FINAL IMPRESSION: Normal chest.\n"
        " RECOMMENDATION(S): None."
    )
    sections = split_sections(report)
    assert [(s.name, s.raw_name, s.text.strip()) for s in sections] == [
        ("preamble", "preamble", ""),
        # the empty study-title "findings" section is dropped, as in MIMIC
        ("heart size", "HEART SIZE", "Normal."),
        ("impression", "FINAL IMPRESSION", "Normal chest."),
        ("recommendations", "RECOMMENDATION(S)", "None."),
    ]


def test_empty_findings_dropped_and_last_section_of_a_name_wins() -> None:
    report = (
        "FINDINGS:\n\n"
        "IMPRESSION: First read: effusion.\n"
        "ADDENDUM: Reviewed.\n"
        "IMPRESSION: Final read: no effusion.\n"
    )
    sections = split_sections(report)
    assert names(sections) == ["preamble", "impression", "addendum", "impression"]
    assert choose_text(sections, "longest", True) == ("Final read: no effusion.", "impression")
    assert choose_text(sections, "both", True) == ("Final read: no effusion.", "impression")


def test_odd_characters_survive() -> None:
    report = "FINDINGS: Épanchement ≥ 2 cm, signal \ufffd perdu.\nIMPRESSION: Große Effusion ✓."
    sections = split_sections(report)
    assert [s.text.strip() for s in sections] == [
        "",
        "Épanchement ≥ 2 cm, signal \ufffd perdu.",
        "Große Effusion ✓.",
    ]
    assert choose_text(sections, "both", True) == (
        "Épanchement ≥ 2 cm, signal \ufffd perdu.\n\nGroße Effusion ✓.",
        "findings+impression",
    )


# --- last_paragraph ---------------------------------------------------------------------------


def test_last_paragraph_of_headerless_mimic_report() -> None:
    report = (
        "                                 FINAL REPORT\n"
        " PA AND LATERAL VIEWS OF THE CHEST\n"
        " \n"
        " Lungs are clear.\n"
        " \n"
        " No pneumothorax.\n"
    )
    sections = split_sections(report)
    assert names(sections) == ["full report", "last_paragraph"]
    # MIMIC semantics: everything after the FIRST "\n \n" break, not literally the last one.
    assert sections[1].text == " Lungs are clear.\n \n No pneumothorax.\n"
    assert_offsets(report, sections)
    assert choose_text(sections, "longest", False) == (
        "Lungs are clear.\n \n No pneumothorax.",
        "last_paragraph",
    )


def test_last_paragraph_after_other_headers() -> None:
    report = " INDICATION: Cough.\n \n Lungs are clear.\n"
    sections = split_sections(report)
    assert [(s.name, s.text) for s in sections] == [
        ("preamble", ""),
        ("indication", "Cough."),
        ("last_paragraph", " Lungs are clear.\n"),
    ]
    assert_offsets(report, sections)
    assert choose_text(sections, "findings", False) == ("Lungs are clear.", "last_paragraph")


def test_no_last_paragraph_when_findings_exist() -> None:
    report = " FINDINGS: Clear.\n \n Really clear.\n"
    sections = split_sections(report)
    assert names(sections) == ["preamble", "findings"]
    assert sections[1].text.strip() == "Clear.\n \n Really clear."


# --- choose_text ------------------------------------------------------------------------------


def make(findings: str | None, impression: str | None) -> list[Section]:
    sections = [Section("preamble", "preamble", 0, "")]
    if findings is not None:
        sections.append(Section("findings", "FINDINGS", 10, f" {findings}\n"))
    if impression is not None:
        sections.append(Section("impression", "IMPRESSION", 100, f" {impression}\n"))
    return sections


@pytest.mark.parametrize(
    ("policy", "findings", "impression", "expected"),
    [
        ("longest", "Long findings text.", "Short.", ("Long findings text.", "findings")),
        ("longest", "Short.", "Long impression text.", ("Long impression text.", "impression")),
        # tie (same number of characters) → impression, MIMIC's label source
        ("longest", "abcde", "vwxyz", ("vwxyz", "impression")),
        ("findings", "Short.", "Long impression text.", ("Short.", "findings")),
        ("impression", "Long findings text.", "Short.", ("Short.", "impression")),
        ("both", "F text.", "I text.", ("F text.\n\nI text.", "findings+impression")),
        # the preferred section is missing → the other one, and chosen_section says so
        ("findings", None, "Only impression.", ("Only impression.", "impression")),
        ("impression", "Only findings.", None, ("Only findings.", "findings")),
        ("both", "Only findings.", None, ("Only findings.", "findings")),
        ("longest", None, "Only impression.", ("Only impression.", "impression")),
    ],
)
def test_policies(
    policy: str, findings: str | None, impression: str | None, expected: tuple[str, str]
) -> None:
    assert choose_text(make(findings, impression), policy, False) == expected


def test_full_report_fallback_and_its_param() -> None:
    report = "EXAM: Chest.\nINDICATION: Cough.\nCOMPARISON: None."
    sections = split_sections(report)
    assert names(sections) == ["preamble", "examination", "indication", "comparison"]
    assert full_report_text(sections) == "Chest.\n\nCough.\n\nNone."
    assert choose_text(sections, "longest", True) == ("Chest.\n\nCough.\n\nNone.", "full_report")
    assert choose_text(sections, "longest", False) == ("", "")


def test_unknown_policy_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown sections.policy 'shortest'; choose one of "):
        choose_text(make("a", "b"), "shortest", True)


# --- parse_report and params ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("report", "fallback", "code", "cause"),
    [
        ("", True, "empty_report", "report is empty"),
        (" \r\n\t \n", True, "empty_report", "report is whitespace only"),
        (
            "FINDINGS:\r\n\r\nIMPRESSION: \r\n",
            True,
            "headers_only",
            "report has section headers (FINDINGS, IMPRESSION) but no text under any of them",
        ),
        (
            "Lungs are clear.",
            False,
            "no_findings_impression",
            "report has no section header and no MIMIC paragraph break for a last paragraph, "
            "and sections.fallback_full_report is false",
        ),
        (
            "INDICATION: Cough.\nFINDINGS:\n",
            False,
            "no_findings_impression",
            "no Findings/Impression section with text (sections: preamble, indication) and no "
            "MIMIC paragraph break for a last paragraph, and sections.fallback_full_report is "
            "false",
        ),
    ],
)
def test_parse_report_rejects(report: str, fallback: bool, code: str, cause: str) -> None:
    result = parse_report(report, "longest", fallback)
    assert (result.reject_code, result.reject_cause) == (code, cause)
    assert (result.chosen_text, result.chosen_section) == ("", "")


def test_parse_report_keeps_all_sections_as_json() -> None:
    result = parse_report("INDICATION: Cough.\nFINDINGS: Clear.", "longest", True)
    assert (result.findings, result.impression) == ("Clear.", "")
    assert (result.chosen_text, result.chosen_section, result.reject_code) == (
        "Clear.",
        "findings",
        "",
    )
    assert json.loads(result.sections_json) == [
        {"name": "preamble", "raw_name": "preamble", "start": 0, "text": ""},
        {"name": "indication", "raw_name": "INDICATION", "start": 12, "text": "Cough.\n"},
        {"name": "findings", "raw_name": "FINDINGS", "start": 29, "text": "Clear."},
    ]


def test_section_params() -> None:
    assert section_params({}) == ("longest", True)
    assert section_params({"sections": {"policy": "both", "fallback_full_report": False}}) == (
        "both",
        False,
    )
    with pytest.raises(ValueError, match="sections.policy is 'Longest'; choose one of longest"):
        section_params({"sections": {"policy": "Longest"}})
    with pytest.raises(ValueError, match="fallback_full_report is 'yes'; use true or false"):
        section_params({"sections": {"fallback_full_report": "yes"}})


def test_project_params_block_is_valid() -> None:
    import yaml

    params = yaml.safe_load(Path(__file__).parents[2].joinpath("params.yaml").read_text("utf-8"))
    assert section_params(params) == ("longest", True)


# --- the stage --------------------------------------------------------------------------------

MIMIC_STYLE = (
    " EXAMINATION:  CHEST (PA AND LAT)\n \n FINDINGS: \n \n Small left effusion.  No"
    " pneumothorax.\n \n IMPRESSION: \n \n Small left effusion.\n"
)
INGEST_ROWS = [
    # (image_id, study_id, report_text)
    ("i1", "s1", MIMIC_STYLE),
    ("i2", "s1", MIMIC_STYLE),  # same study, same report: parsed once
    ("i3", "s2", "findings: Clear \ufffd lungs.\r\nimpression: Normal, é.\r\n"),
    ("i4", "s3", "Heart size normal and lungs are clear."),  # headerless → full_report
    ("i5", "s4", ""),
    ("i6", "s5", "  \n "),
    ("i7", "s6", "FINDINGS:\nIMPRESSION:\n"),
    ("i8", "s7", " FINAL REPORT\n \n Lungs are clear.\n"),  # → last_paragraph
]


def write_ingest(root: Path) -> DatasetPaths:
    paths = DatasetPaths("demo", "sample", root / "raw", root / "interim", root / "shards")
    rows = [
        {
            "dataset": "demo",
            "image_id": image_id,
            "patient_id": f"p{study_id}",
            "study_id": study_id,
            "view": "PA",
            "image_path": f"files/{study_id}/{image_id}.jpg",
            "report_text": text,
            "official_split": "",
            "synthetic_report": False,
            # adapters name the report file; i6 has one, the others show the fallback
            "extra_json": '{"report_file":"reports/s5.txt"}' if image_id == "i6" else "{}",
        }
        for image_id, study_id, text in INGEST_ROWS
    ]
    frame = pd.DataFrame(rows, columns=list(INGEST_COLUMNS))
    frame = frame.astype({c: "string" for c in INGEST_COLUMNS if c != "synthetic_report"})
    write_parquet(frame, paths.stage_dir("ingest") / "records.parquet")
    return paths


def output_bytes(paths: DatasetPaths) -> dict[str, bytes]:
    out = paths.stage_dir("sections")
    return {name: (out / name).read_bytes() for name in ("records.parquet", "rejects.parquet")} | {
        "stats.json": (out / "stats.json").read_bytes()
    }


def test_run_stage_outputs_rejects_stats_and_rerun(tmp_path: Path) -> None:
    paths = write_ingest(tmp_path)
    params = {"sections": {"policy": "longest", "fallback_full_report": True}}
    stats = run_stage(paths, params, workers=1)
    out = paths.stage_dir("sections")

    records = read_parquet(out / "records.parquet")
    assert list(records.columns) == [*INGEST_COLUMNS, *SECTION_COLUMNS]
    assert records["image_id"].tolist() == ["i1", "i2", "i3", "i4", "i8"]
    assert records["findings"].tolist() == [
        "Small left effusion.  No pneumothorax.",
        "Small left effusion.  No pneumothorax.",
        "Clear \ufffd lungs.",
        "",
        "",
    ]
    assert records["impression"].tolist() == [
        "Small left effusion.",
        "Small left effusion.",
        "Normal, é.",
        "",
        "",
    ]
    assert records["chosen_text"].tolist() == [
        "Small left effusion.  No pneumothorax.",
        "Small left effusion.  No pneumothorax.",
        "Clear \ufffd lungs.",
        "Heart size normal and lungs are clear.",
        "Lungs are clear.",
    ]
    assert records["chosen_section"].tolist() == [
        "findings",
        "findings",
        "findings",
        "full_report",
        "last_paragraph",
    ]
    assert records["report_text"].tolist()[2] == INGEST_ROWS[2][2]  # carried forward unchanged
    assert [s["name"] for s in json.loads(records["sections_json"][0])] == [
        "preamble",
        "examination",
        "findings",
        "impression",
    ]

    rejects = read_parquet(out / "rejects.parquet")
    assert rejects.to_dict("records") == [
        {
            "id": "i5",
            "stage": "sections",
            "code": "empty_report",
            "reason": "files/s4/i5.jpg (study s4): report is empty",
        },
        {
            "id": "i6",
            "stage": "sections",
            "code": "empty_report",
            "reason": "reports/s5.txt (study s5, image files/s5/i6.jpg): report is whitespace only",
        },
        {
            "id": "i7",
            "stage": "sections",
            "code": "headers_only",
            "reason": "files/s6/i7.jpg (study s6): report has section headers (FINDINGS, "
            "IMPRESSION) but no text under any of them",
        },
    ]

    expected_stats = {
        "stage": "sections",
        "dataset": "demo",
        "in": 8,
        "out": 5,
        "rejected": 3,
        "reconciled": True,
        "reject_reasons": {"empty_report": 2, "headers_only": 1},
        "policy": "longest",
        "fallback_full_report": True,
        "unique_reports": 7,
        "chosen_section": {
            "findings": 3,
            "impression": 0,
            "findings+impression": 0,
            "last_paragraph": 1,
            "full_report": 1,
        },
    }
    assert stats == expected_stats
    assert json.loads((out / "stats.json").read_text("utf-8")) == expected_stats

    first = output_bytes(paths)
    run_stage(paths, params, workers=1)
    assert output_bytes(paths) == first


def test_run_stage_parallel_path_is_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = {"sections": {"policy": "both", "fallback_full_report": False}}
    serial = write_ingest(tmp_path / "serial")
    stats = run_stage(serial, params, workers=1)
    assert (stats["out"], stats["rejected"]) == (4, 4)
    assert stats["reject_reasons"] == {
        "empty_report": 2,
        "headers_only": 1,
        "no_findings_impression": 1,
    }
    assert stats["chosen_section"]["findings+impression"] == 3
    rejects = read_parquet(serial.stage_dir("sections") / "rejects.parquet")
    assert rejects["reason"].tolist()[0] == (
        "files/s3/i4.jpg (study s3): report has no section header and no MIMIC paragraph break "
        "for a last paragraph, and sections.fallback_full_report is false"
    )

    monkeypatch.setattr(sections_module, "_PARALLEL_MIN_REPORTS", 1)
    parallel = write_ingest(tmp_path / "parallel")
    run_stage(parallel, params, workers=2)
    assert output_bytes(parallel) == output_bytes(serial)


def test_run_stage_rejects_bad_params_before_reading(tmp_path: Path) -> None:
    paths = write_ingest(tmp_path)
    with pytest.raises(ValueError, match="sections.policy is 'all'"):
        run_stage(paths, {"sections": {"policy": "all"}}, workers=1)
    assert not paths.stage_dir("sections").exists()
