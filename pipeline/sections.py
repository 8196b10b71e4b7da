"""The sections stage: split each report into sections and pick the text to train on.

MedViLL trains on "the longer of Findings and Impression" of each report; MIMIC-CXR's official
CheXpert labels were computed on "impression, else findings, else last paragraph". Both need the
same thing first: a section splitter. This module reimplements, in the spirit of MIT-LCP's
MIMIC-CXR section parser (``txt/section_parser.py``, described in
``docs/sections.md``), a splitter that also reads the other corpora we ingest.

Header detection — what differs from the strict MIMIC regex and why:

* A header is a label at the **start of a line** (after optional spaces/tabs), optional spaces,
  a colon, then whitespace or the end of the text. Text after the colon on the same line is the
  start of the body. Because only line starts are searched, nothing in the middle of a line is
  ever a header ("... no change; comparison: none ..." stays body text), and nothing after a
  header on its own line either (``EXAMINATION:  CHEST (PA AND LAT)`` — the study title is body
  text, as in MIMIC, which starts the next search after the header line's newline).
* An **all-caps** label (letters, spaces and ``( ) / , - &``) is a header whatever it says, as in
  MIMIC (``REASON FOR EXAMINATION:``, ``CHEST (PA AND LAT):``). Unlike MIMIC, it may sit on the
  very first line, be indented by any amount, and have spaces before the colon
  (``FINDINGS :``).
* A label with **lower-case letters** (``findings:``, ``Impression:``) is a header only when it
  is a known section name: a key of MIMIC's exact lookup table, or at most three words that
  contain one of MIMIC's substring keywords (``final impression``). Free-text lines such as
  ``heart size: normal`` or NegBio's ``chest: four images:`` therefore stay body text. The
  study-description names (``chest``, ``two views``, rule (c)) count only in capitals: in
  lower-case text they are ordinary words far more often than titles. The strict MIMIC parser
  finds no header at all in the NegBio lower-case reports (it wants capitals after "\\n ");
  this one finds their findings and impression.
* Line endings are normalised first (``\\r\\n`` and lone ``\\r`` → ``\\n``), so Windows files
  behave like Unix ones; section offsets index the normalised text.

Then, as MIMIC: the text before the first header is ``preamble``; names are normalised with
MIMIC's tables (:func:`normalize_section_name`); empty findings/impression sections are dropped;
with no findings/impression, the last section's text after its first MIMIC paragraph break
(a line holding exactly one space) becomes ``last_paragraph``. A report without any header is
one ``full report`` section.

The chosen text is also split into sentences (:mod:`pipeline.sentences`; LoVT aligns image
regions with them): the ``sentences_json`` column, a JSON list that the shards stage puts in
each sample's ``json`` member as ``sentences``.

MIMIC's per-study manual tables (``custom_indices``, ``custom_section_names``) are not applied:
they only concern 54 MIMIC-CXR v2 studies and would have to be carried as data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections import Counter
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Literal

import pandas as pd

from pipeline.parallel import parallel_map
from pipeline.params import DatasetPaths
from pipeline.records import INGEST_COLUMNS, require_table
from pipeline.sentences import split_sentences
from pipeline.stage import StageRun
from pipeline.tables import FrameWriter, iter_frames, table_rows

__all__ = [
    "CHOSEN_SECTIONS",
    "POLICIES",
    "SECTION_COLUMNS",
    "ParsedReport",
    "Section",
    "choose_text",
    "full_report_text",
    "normalize_newlines",
    "normalize_section_name",
    "parse_report",
    "run_stage",
    "section_params",
    "split_sections",
]

STAGE = "sections"

Policy = Literal["longest", "findings", "impression", "both"]
#: Allowed values of ``sections.policy`` in params.yaml.
POLICIES: tuple[str, ...] = ("longest", "findings", "impression", "both")
#: Values of the ``chosen_section`` column, in the order stats.json lists them.
CHOSEN_SECTIONS: tuple[str, ...] = (
    "findings",
    "impression",
    "findings+impression",
    "last_paragraph",
    "full_report",
)
#: Columns this stage appends to the ingest columns.
SECTION_COLUMNS: tuple[str, ...] = (
    "findings",
    "impression",
    "chosen_text",
    "chosen_section",
    "sections_json",
    "sentences_json",
)

DEFAULT_POLICY: Policy = "longest"
DEFAULT_FALLBACK_FULL_REPORT = True

#: Separator joining findings and impression under policy ``both``: a blank line keeps the two
#: sections apart for a reader; tokenisers ignore it.
BOTH_SEPARATOR = "\n\n"

# --- section names (MIMIC-CXR section parser tables, as data) ---------------------------------

#: MIMIC's exact lookup table: lower-cased raw header → normalised name.
_EXACT_NAMES: dict[str, str] = {
    "preamble": "preamble",
    **dict.fromkeys(
        (
            "impression",
            "conclusion",
            "findings and impression",
            "findings/impression",
            "findings/ impression",
            # misspellings seen in MIMIC-CXR; "ndication" → impression is in the source as is
            "impresson",
            "imprression",
            "imoression",
            "impressoin",
            "imprssion",
            "impresion",
            "imperssion",
            "mpression",
            "impession",
            "ndication",
        ),
        "impression",
    ),
    **dict.fromkeys(
        (
            "findings",
            "finding",
            "findins",
            "findindgs",
            "findgings",
            "findngs",
            "findnings",
            "finidngs",
            "chest",
            "two views",
            "reference findings",
        ),
        "findings",
    ),
    **dict.fromkeys(
        (
            "comparison",
            "comparisons",
            "reference exam",
            "comparison exam",
            "comparison film",
            "comparision",
            "comparsion",
            "comparrison",
            "comparisions",
        ),
        "comparison",
    ),
    **dict.fromkeys(
        (
            "indication",
            "reason for examination",
            "reason for exam",
            "clinical indication",
            "idication",
        ),
        "indication",
    ),
    **dict.fromkeys(("examination", "exam", "type of examination"), "examination"),
    "technique": "technique",
    **dict.fromkeys(
        ("history", "clinical history", "clinical information", "patient history", "pfi"),
        "history",
    ),
    "notification": "notification",
    **dict.fromkeys(("recommendation(s)", "recommendations", "recommendation"), "recommendations"),
    "addendum": "addendum",
    "date": "date",
    "comment": "comment",
    **dict.fromkeys(("wet read", "wetread"), "wet read"),
}

#: MIMIC rule (b): a name containing one of these, checked in this order, becomes it.
_SUBSTRING_NAMES: tuple[str, ...] = ("impression", "findings", "history", "comparison", "addendum")

#: MIMIC rule (c): study-description fragments; a header naming the study heads the findings.
_STUDY_FRAGMENTS: tuple[str, ...] = (
    "chest",
    "portable",
    "pa and lateral",
    "lateral and pa",
    "ap and lateral",
    "lateral and ap",
    "frontal and",
    "two views",
    "frontal view",
    "pa view",
    "ap view",
    "one view",
    "lateral view",
    "bone window",
    "frontal upright",
    "frontal semi-upright",
    "ribs",
    "pa and lat",
)

#: Exact-table names that describe the study rather than name a section; accepted as headers
#: only in capitals (see the module docstring).
_STUDY_EXACT_NAMES: frozenset[str] = frozenset({"chest", "two views"})

#: Longest lower/mixed-case label accepted through the substring rule, in words. Longer labels
#: at a line start are usually a sentence that happens to contain a colon.
_MAX_MIXED_CASE_WORDS = 3

#: A candidate header: line start, optional indentation (and a stray BOM), a label starting with
#: a letter (trailing spaces allowed, stripped later), a colon, then whitespace or the end of
#: the text. Digits and "." are not label characters, so "1. Effusion:" or "7:34" never match.
_HEADER_RE = re.compile(
    r"^[ \t\ufeff]*(?P<label>[A-Za-z][A-Za-z \t()/,&-]*):(?=\s|\Z)", re.MULTILINE
)

#: MIMIC's paragraph break: a line holding exactly one space (MIMIC-CXR prefixes every line of
#: a report with a space). Plain blank lines are deliberately not used: in other corpora they
#: separate the numbered items of a single impression (CheXpert's sample report 2), and
#: "everything after the first break" would drop item 1.
_MIMIC_PARAGRAPH_BREAK = "\n \n"


@dataclass(frozen=True)
class Section:
    """One section of a report.

    ``name`` is the normalised name (``findings``, ``impression``, ``preamble``,
    ``full report``, ``last_paragraph``, …), ``raw_name`` the header as written (stripped; the
    same as ``name`` for sections without a header). ``start`` is the offset of the body in the
    newline-normalised report, and ``text`` the body unstripped, so that
    ``normalize_newlines(report)[start:start + len(text)] == text`` for every section
    (``last_paragraph`` included: unlike MIMIC's approximate offset, it counts the separator).
    Bodies keep their whitespace because the MIMIC paragraph break is whitespace; callers strip.
    """

    name: str
    raw_name: str
    start: int
    text: str


@dataclass(frozen=True)
class ParsedReport:
    """What the stage keeps from one report text (picklable, for worker processes)."""

    findings: str
    impression: str
    chosen_text: str
    chosen_section: str
    sections_json: str
    reject_code: str
    reject_cause: str
    #: the chosen text's sentences (pipeline/sentences.py), a JSON list of strings
    sentences_json: str = "[]"


def normalize_newlines(text: str) -> str:
    """``\\r\\n`` and lone ``\\r`` → ``\\n``: Windows/old-Mac files split like Unix ones."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def normalize_section_name(raw: str) -> str:
    """Map a raw header to MIMIC-CXR's normalised section name.

    Lower-cases and strips, then applies the first matching MIMIC rule: (a) exact table,
    (b) contains impression/findings/history/comparison/addendum (in that order), (c) contains a
    study-description fragment → ``findings``, (d) the lower-cased name itself. Runs of inner
    whitespace are collapsed first so that ``FINDINGS  AND IMPRESSION`` hits the table.
    """
    name = " ".join(raw.lower().split())
    if name in _EXACT_NAMES:
        return _EXACT_NAMES[name]
    for keyword in _SUBSTRING_NAMES:
        if keyword in name:
            return keyword
    if any(fragment in name for fragment in _STUDY_FRAGMENTS):
        return "findings"
    return name


def _is_header_label(label: str) -> bool:
    """Whether a line-initial ``label:`` is a section header (see the module docstring)."""
    if label == label.upper():
        return True
    name = " ".join(label.lower().split())
    if name in _EXACT_NAMES:
        return name not in _STUDY_EXACT_NAMES
    return len(name.split()) <= _MAX_MIXED_CASE_WORDS and any(
        keyword in name for keyword in _SUBSTRING_NAMES
    )


def _find_headers(text: str) -> list[tuple[str, int, int]]:
    """``(raw_name, header_start, body_start)`` of every header in newline-normalised text."""
    headers = []
    for match in _HEADER_RE.finditer(text):
        label = match.group("label").strip()
        if _is_header_label(label):
            body_start = match.end()
            # MIMIC skips the one whitespace character after the colon unless it ends the line.
            if body_start < len(text) and text[body_start] in " \t":
                body_start += 1
            headers.append((label, match.start(), body_start))
    return headers


def split_sections(text: str) -> list[Section]:
    """Split a report into sections, MIMIC-style (see the module docstring for the rules).

    Returns sections in report order. A report with no header is one ``full report`` section;
    otherwise the first is ``preamble`` (possibly empty). Empty findings/impression sections
    are dropped; with no findings/impression left, the last section's text after its first
    MIMIC paragraph break becomes a ``last_paragraph`` section.
    """
    text = normalize_newlines(text)
    headers = _find_headers(text)
    if not headers:
        sections = [Section("full report", "full report", 0, text)]
    else:
        sections = [Section("preamble", "preamble", 0, text[: headers[0][1]])]
        for index, (raw_name, _, body_start) in enumerate(headers):
            end = headers[index + 1][1] if index + 1 < len(headers) else len(text)
            sections.append(
                Section(
                    normalize_section_name(raw_name), raw_name, body_start, text[body_start:end]
                )
            )
    sections = [
        s for s in sections if s.name not in ("findings", "impression") or s.text.strip() != ""
    ]
    if not any(s.name in ("findings", "impression") for s in sections):
        last = sections[-1]
        first, sep, rest = last.text.partition(_MIMIC_PARAGRAPH_BREAK)
        if sep:
            sections[-1] = Section(last.name, last.raw_name, last.start, first)
            sections.append(
                Section(
                    "last_paragraph",
                    "last_paragraph",
                    last.start + len(first) + len(sep),
                    rest,
                )
            )
    return sections


def _last_text(sections: list[Section], name: str) -> str:
    """Stripped text of the last section called ``name`` ("" if none), as MIMIC's export."""
    for section in reversed(sections):
        if section.name == name:
            return section.text.strip()
    return ""


def choose_text(
    sections: list[Section], policy: str, fallback_full_report: bool
) -> tuple[str, str]:
    """Apply the section policy; returns ``(stripped text, chosen_section)``.

    Policies prefer a section but fall back to the other of findings/impression rather than
    lose the report, and ``chosen_section`` says what was actually used so it can be filtered:

    * ``longest`` — the longer (in characters) of findings and impression, MedViLL's choice.
      A tie goes to **impression**: it is the radiologist's conclusion and the text MIMIC-CXR's
      official CheXpert labels were computed from, so ties keep text and labels consistent.
    * ``findings`` — findings, else impression.
    * ``impression`` — impression, else findings (MIMIC's ``chosen_text`` priority).
    * ``both`` — findings, a blank line, impression (report order) → ``findings+impression``;
      only one of them when the other is missing.

    With neither: ``last_paragraph`` (MIMIC), then the whole stripped report (``full_report``)
    when ``fallback_full_report`` is true, else ``("", "")``. MIMIC's last resort
    ``comparison`` is not used: with the fallback on, the full report contains it anyway.
    Sections are taken from :func:`split_sections`; the last section of a name wins.
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown sections.policy '{policy}'; choose one of {', '.join(POLICIES)}")
    findings = _last_text(sections, "findings")
    impression = _last_text(sections, "impression")
    if findings and impression:
        if policy == "findings":
            return findings, "findings"
        if policy == "impression":
            return impression, "impression"
        if policy == "both":
            return findings + BOTH_SEPARATOR + impression, "findings+impression"
        if len(findings) > len(impression):
            return findings, "findings"
        return impression, "impression"
    if findings:
        return findings, "findings"
    if impression:
        return impression, "impression"
    last_paragraph = _last_text(sections, "last_paragraph")
    if last_paragraph:
        return last_paragraph, "last_paragraph"
    if fallback_full_report:
        full_report = full_report_text(sections)
        if full_report and has_report_prose(sections):
            return full_report, "full_report"
    return "", ""


#: Sections that name the examination rather than describe the patient.
_EXAM_ONLY_SECTIONS = frozenset({"examination", "technique", "comparison"})


def has_report_prose(sections: list[Section]) -> bool:
    """Whether any section says something about the patient.

    A report made of banner and exam lines only (``FINAL REPORT`` / ``EXAMINATION: CHEST
    (PA)``) has bodies, but training on "FINAL REPORT\n\nCHEST (PA)" would teach the model a
    normal study with no finding. Exam-only sections (examination, technique, comparison) and
    a preamble without lower-case letters (``FINAL REPORT``, ``WET READ``) do not count.
    """
    for section in sections:
        body = section.text.strip()
        if not body or section.name in _EXAM_ONLY_SECTIONS:
            continue
        if section.name == "preamble" and not any(ch.islower() for ch in body):
            continue
        return True
    return False


def full_report_text(sections: list[Section]) -> str:
    """The report without its header labels: non-empty bodies, stripped, joined by a blank line.

    This is the ``full_report`` fallback. It is built from the sections rather than the raw
    text so that :func:`choose_text` needs nothing else; for a report without headers it is
    simply the stripped report (newlines normalised). Header labels (``INDICATION:``) are left
    out because they are layout, not report prose; a report made only of headers gives "".
    """
    bodies = [s.text.strip() for s in sections]
    return BOTH_SEPARATOR.join(body for body in bodies if body)


# --- the stage --------------------------------------------------------------------------------

#: Below this many distinct reports, parsing in-process beats starting worker processes.
_PARALLEL_MIN_REPORTS = 5000


def section_params(params: dict[str, Any]) -> tuple[str, bool]:
    """``(policy, fallback_full_report)`` from the ``sections`` block, validated.

    A typo in params.yaml must stop the run with a message, not silently pick another section.
    """
    block = params.get("sections") or {}
    policy = block.get("policy", DEFAULT_POLICY)
    if policy not in POLICIES:
        raise ValueError(
            f"params.yaml sections.policy is '{policy}'; choose one of {', '.join(POLICIES)}"
        )
    fallback = block.get("fallback_full_report", DEFAULT_FALLBACK_FULL_REPORT)
    if not isinstance(fallback, bool):
        raise ValueError(
            f"params.yaml sections.fallback_full_report is {fallback!r}; use true or false"
        )
    return policy, fallback


def _sections_json(sections: list[Section]) -> str:
    """All sections as a JSON list (names can repeat, so not a mapping), stable key order."""
    return json.dumps([asdict(s) for s in sections], ensure_ascii=False, sort_keys=True)


def parse_report(text: str, policy: str, fallback_full_report: bool) -> ParsedReport:
    """Split one report and apply the policy; a non-empty ``reject_code`` means no text.

    Reject codes: ``empty_report`` (empty or whitespace only), ``headers_only`` (headers with
    nothing under any of them), ``no_findings_impression`` (no findings/impression/last
    paragraph and ``fallback_full_report`` is false). ``reject_cause`` is the sentence for the
    rejects table, without the image name (one text can belong to several images).
    """
    if text.strip() == "":
        cause = "report is empty" if text == "" else "report is whitespace only"
        return ParsedReport("", "", "", "", "[]", "empty_report", cause)
    sections = split_sections(text)
    sections_json = _sections_json(sections)
    findings = _last_text(sections, "findings")
    impression = _last_text(sections, "impression")
    if not full_report_text(sections):
        headers = ", ".join(raw for raw, _, _ in _find_headers(normalize_newlines(text)))
        cause = f"report has section headers ({headers}) but no text under any of them"
        return ParsedReport("", "", "", "", sections_json, "headers_only", cause)
    chosen, chosen_section = choose_text(sections, policy, fallback_full_report)
    if chosen == "" and fallback_full_report and not has_report_prose(sections):
        headers = ", ".join(raw for raw, _, _ in _find_headers(normalize_newlines(text)))
        cause = (
            f"report holds only banner and examination lines (headers: {headers}), "
            "no text about the patient"
        )
        return ParsedReport("", "", "", "", sections_json, "headers_only", cause)
    if chosen == "":
        if [s.name for s in sections] == ["full report"]:
            found = "report has no section header"
        else:
            names = ", ".join(dict.fromkeys(s.name for s in sections))
            found = f"no Findings/Impression section with text (sections: {names})"
        cause = (
            f"{found} and no MIMIC paragraph break for a last paragraph, and "
            "sections.fallback_full_report is false"
        )
        return ParsedReport(
            findings, impression, "", "", sections_json, "no_findings_impression", cause
        )
    sentences = json.dumps(split_sentences(chosen), ensure_ascii=False)
    return ParsedReport(findings, impression, chosen, chosen_section, sections_json, "", "",
                        sentences_json=sentences)  # fmt: skip


def _report_location(image_path: str, study_id: str, extra: Any) -> str:
    """How a reject names the report: its file (adapters record ``report_file`` in
    extra_json) with study and image, else the image and study. Paths stay relative to the raw
    root, like ``image_path``, so the rejects table is the same wherever the data lives."""
    values: Any = None
    if isinstance(extra, str) and extra:
        with contextlib.suppress(ValueError):
            values = json.loads(extra)
    report_file = values.get("report_file", "") if isinstance(values, dict) else ""
    if report_file:
        return f"{report_file} (study {study_id}, image {image_path})"
    return f"{image_path} (study {study_id})"


def run_stage(paths: DatasetPaths, params: dict[str, Any], workers: int) -> dict[str, Any]:
    """Read ``<interim>/ingest/records.parquet``, write ``<interim>/sections/``.

    Output rows are the input rows in input order with :data:`SECTION_COLUMNS` appended; rows
    whose report gives no text are rejected (id = image id, reason naming the image path and
    study). The table is read and written in batches (:mod:`pipeline.tables`); each distinct
    report text of a batch is parsed once, since the images of a study share it.
    stats.json adds the policy, the number of distinct reports and a count per
    ``chosen_section`` (every value listed, zeros included, so the metric's keys are stable).
    """
    policy, fallback = section_params(params)
    source = paths.stage_dir("ingest") / "records.parquet"
    require_table(source, INGEST_COLUMNS)
    run = StageRun(STAGE, paths.name, paths.stage_dir(STAGE))
    run.n_in = table_rows(source)
    parse = partial(parse_report, policy=policy, fallback_full_report=fallback)
    counts: Counter[str] = Counter()
    distinct: set[bytes] = set()
    with FrameWriter(paths.stage_dir(STAGE) / "records.parquet") as writer:
        for frame in iter_frames(source):
            texts = ["" if pd.isna(t) else str(t) for t in frame["report_text"].tolist()]
            distinct.update(text_digest(t) for t in texts)
            unique = sorted(set(texts))
            n_workers = workers if len(unique) >= _PARALLEL_MIN_REPORTS else 1
            results = parallel_map(parse, unique, n_workers, "sections", chunksize=256)
            parsed = dict(zip(unique, results, strict=True))
            writer.write(_section_rows(frame, texts, parsed, run, counts))
    run.extra["policy"] = policy
    run.extra["fallback_full_report"] = fallback
    run.extra["unique_reports"] = len(distinct)
    run.extra["chosen_section"] = {name: counts[name] for name in CHOSEN_SECTIONS}
    return run.finish_streamed(writer.rows)


def text_digest(text: str) -> bytes:
    """16 bytes standing for a report text, to count distinct texts without keeping them."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _section_rows(
    frame: pd.DataFrame,
    texts: list[str],
    parsed: dict[str, ParsedReport],
    run: StageRun,
    counts: Counter[str],
) -> pd.DataFrame:
    """One batch's kept rows with :data:`SECTION_COLUMNS` appended; rejects go to ``run``."""
    keep: list[bool] = []
    columns: dict[str, list[str]] = {name: [] for name in SECTION_COLUMNS}
    for image_id, image_path, study_id, extra, text in zip(
        frame["image_id"],
        frame["image_path"],
        frame["study_id"],
        frame["extra_json"],
        texts,
        strict=True,
    ):
        result = parsed[text]
        if result.reject_code:
            where = _report_location(str(image_path), str(study_id), extra)
            run.reject(image_id, result.reject_code, f"{where}: {result.reject_cause}")
            keep.append(False)
            continue
        keep.append(True)
        counts[result.chosen_section] += 1
        for name in SECTION_COLUMNS:
            columns[name].append(getattr(result, name))

    records = frame.loc[keep].reset_index(drop=True)
    for name in SECTION_COLUMNS:
        records[name] = pd.Series(columns[name], dtype="string")
    return records
