"""Build the embedded demo dataset ``data/sample/`` from a folder of licensed source files.

The demo is the one dataset every stage can run on without credentials, so this script is its
single source of truth: which real image goes into which demo study and patient, which report
text each study gets, and the synthetic reports written for the NIH images from their labels.
Running it again gives byte-identical files (sorted iteration, fixed texts, no timestamps).

    python scripts/build_sample.py --sources DIR          # (re)write data/sample/{images,…}
    python scripts/build_sample.py --sources DIR --check  # exit 1 if data/sample differs

``DIR`` holds the original downloads (``SOURCES.md`` plus ``images/…`` and ``reports/…`` at the
paths given below); ``$MEDVILL_SAMPLE_SOURCES`` may name it instead of ``--sources``. It is not
part of the repository: the demo's committed files are the result, and ``data/sample/SOURCES.md``
records where each one came from.

``README.md``, ``SOURCES.md`` and ``LICENSES/`` in ``data/sample`` are written by hand (they
carry the attributions) and are not touched here.

Why the demo looks the way it does (details in data/sample/README.md):

* Images are copied byte for byte; file names keep their source folder so the origin is obvious.
* No permissively licensed source pairs real reports with these images, so every pairing is
  made here. Real report texts (CheXpert labeler samples, NegBio examples, the MIMIC-CXR website
  example) go with the Hannover (MHH) images and two DICOMs; that pairing is arbitrary.
  Each NIH image gets a report written from its own NIH labels, marked ``synthetic``.
* Demo patients group images of different real people (each source image here comes from a
  different source patient) so that two-study patients and multi-image studies exist and the
  patient-level split has something to keep together. ``source_patient_id`` keeps the real id.
* DICOM image ids are the SOPInstanceUID (dots → ``-``). ``xrv_fake_monochrome1.dcm`` is the
  SIIM file with only PhotometricInterpretation edited, so it shares the SOPInstanceUID and the
  ingest duplicate check rejects it: the demo's one deliberate ingest reject (its header would
  otherwise make the image stage invert a MONOCHROME2 image).
* DICOM rows leave ``view`` empty: the sample adapter reads ViewPosition from the header.
* Study S014's report is stored in Windows-1252 (it contains "×"), so ingest's decoding fallback
  runs on real demo input.
"""

from __future__ import annotations

import argparse
import csv
import filecmp
import io
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Environment variable naming the source folder when ``--sources`` is not given.
SOURCES_ENV = "MEDVILL_SAMPLE_SOURCES"
DEFAULT_OUT = ROOT / "data" / "sample"

MANIFEST_COLUMNS = (
    "image_id",
    "patient_id",
    "study_id",
    "study_date",
    "view",
    "image",
    "report",
    "synthetic",
    "source",
    "source_patient_id",
    "source_labels",
    "report_source",
)


@dataclass(frozen=True)
class Image:
    """One demo image: where it comes from and which demo study it belongs to."""

    study_id: str
    source_path: str  # relative to the sources folder; copied to data/sample/<same path>
    view: str  # "" for DICOM: the adapter reads ViewPosition from the header
    source: str
    source_patient_id: str
    source_labels: str = ""


@dataclass(frozen=True)
class Study:
    """One demo study: its patient, date and report (real file or synthetic text)."""

    patient_id: str
    date: str
    report_source: str  # "synthetic" or a description of the real text's origin
    text: str = ""  # synthetic report text (or "" when the report comes from a file)
    source_file: str = ""  # real report file, relative to the sources folder
    chexpert_row: int = -1  # row of chexpert_labeler_sample_reports.csv (0-based)
    encoding: str = "utf-8"


NIH = "images/nih_chestxray14/"
NIH_JPEG = "images/derived_jpeg/"
MHH = "images/mhh_covid19_cc_by_3.0/"
DICOM = "images/dicom/"

# Synthetic reports, written for this demo from each NIH image's own labels (in brackets).
# Styles vary on purpose: MIMIC-like layout, upper/lower/title-case headers, with and without
# colons, impression only, findings only, no headers at all, negations and hedges.
STUDIES: dict[str, Study] = {
    # P001: 00027426_000 [No Finding] then 00000001_000 [Cardiomegaly]
    "S001": Study(
        "P001",
        "2015-04-02",
        "synthetic",
        text=(
            "                                 FINAL REPORT\n"
            " EXAMINATION:  CHEST (PA)\n"
            " \n"
            " INDICATION:  ___ year old man with cough, evaluate for pneumonia.\n"
            " \n"
            " COMPARISON:  None.\n"
            " \n"
            " FINDINGS: \n"
            " \n"
            " The lungs are clear without focal consolidation.  No pleural effusion or\n"
            " pneumothorax.  The cardiomediastinal silhouette is within normal limits.\n"
            " \n"
            " IMPRESSION: \n"
            " \n"
            " No acute cardiopulmonary process.\n"
        ),
    ),
    "S002": Study(
        "P001",
        "2019-06-18",
        "synthetic",
        text=(
            "FINDINGS:\n"
            "The heart is moderately enlarged, increased since the prior study. The mediastinal "
            "contours are otherwise unremarkable. No pulmonary vascular congestion. No pleural "
            "effusion or pneumothorax.\n"
            "\n"
            "IMPRESSION:\n"
            "Cardiomegaly without pulmonary edema.\n"
        ),
    ),
    # P002: 00005425_000 [Cardiomegaly] then 00000100_000 [Atelectasis|Effusion|Infiltration]
    "S003": Study(
        "P002",
        "2010-10-09",
        "synthetic",
        text="IMPRESSION: Mild cardiomegaly. The lungs are clear. No effusion.\n",
    ),
    "S004": Study(
        "P002",
        "2022-01-12",
        "synthetic",
        text=(
            "Findings: Small left pleural effusion with adjacent basilar atelectasis. Patchy "
            "opacity in the right lower lobe, cannot exclude early pneumonia. Heart size is "
            "unchanged. No pneumothorax.\n"
            "\n"
            "Impression: 1. Small left pleural effusion with left basilar atelectasis.\n"
            "2. Right lower lobe infiltrate; infection cannot be excluded.\n"
        ),
    ),
    # P003: 00002778_000 (+ its derived JPEG) [No Finding] then 00006067_000 [Effusion|Emphysema]
    "S005": Study(
        "P003",
        "2012-03-05",
        "synthetic",
        text=(
            "PA view of the chest. The lungs are clear. Heart size is normal. No pleural "
            "effusion or pneumothorax. No acute cardiopulmonary abnormality.\n"
        ),
    ),
    "S006": Study(
        "P003",
        "2022-01-20",
        "synthetic",
        text=(
            "FINDINGS - The lungs are hyperinflated with flattened hemidiaphragms and "
            "attenuated upper lobe vasculature, compatible with emphysema. Moderate right "
            "pleural effusion. No focal consolidation. No pneumothorax.\n"
            "\n"
            "IMPRESSION - Emphysema. Moderate right pleural effusion, new.\n"
        ),
    ),
    # P004: 00026355_000 [Consolidation] then 00028405_000 [Consolidation|Infiltration]
    "S007": Study(
        "P004",
        "2016-07-11",
        "synthetic",
        text=(
            "FINDINGS:  Portable AP view. Dense consolidation in the right upper lobe. "
            "No pleural effusion. The cardiothymic silhouette is normal. No pneumothorax.\n"
        ),
    ),
    "S008": Study(
        "P004",
        "2018-02-26",
        "synthetic",
        text=(
            "Findings\n"
            "Consolidation in the left lower lobe with patchy opacity extending into the "
            "lingula. Right lung clear. No pleural effusion.\n"
            "\n"
            "Impression\n"
            "Left lower lobe consolidation, likely pneumonia.\n"
        ),
    ),
    # P005: 00019534_000 [Infiltration|Nodule] then 00005618_000 (+ JPEG) [Atelectasis|Pneumonia]
    "S009": Study(
        "P005",
        "2017-11-30",
        "synthetic",
        text=(
            "FINDINGS: Bilateral perihilar streaky opacities. A possible 6 mm nodular opacity "
            "projects over the right mid lung. No pleural effusion. Heart size normal.\n"
            "\n"
            "IMPRESSION: Perihilar infiltrates, possibly viral. Possible right lung nodule; "
            "follow-up radiograph recommended.\n"
        ),
    ),
    "S010": Study(
        "P005",
        "2018-12-04",
        "synthetic",
        text=(
            "IMPRESSION:\n"
            "Right middle lobe opacity, atelectasis versus pneumonia. No pleural effusion.\n"
        ),
    ),
    # single-study NIH patients
    "S011": Study(  # 00000924_000 [Fibrosis]
        "P006",
        "2013-08-19",
        "synthetic",
        text=(
            "FINDINGS: Coarse reticular opacities at both lung bases, compatible with pulmonary "
            "fibrosis. No focal consolidation. No pleural effusion. Heart size is normal.\n"
            "IMPRESSION: Basilar predominant fibrotic changes. No acute process.\n"
        ),
    ),
    "S012": Study(  # 00001369_000 [Cardiomegaly]
        "P007",
        "2011-05-23",
        "synthetic",
        text=(
            "Findings: The cardiac silhouette is enlarged. Pulmonary vascularity is normal. "
            "No consolidation, effusion or pneumothorax.\n"
            "\n"
            "Conclusion: Cardiomegaly.\n"
        ),
    ),
    "S013": Study(  # 00017625_000 [Edema]
        "P008",
        "2016-02-08",
        "synthetic",
        text=(
            "FINDINGS: Portable AP view. Diffuse interstitial opacities with perihilar haziness "
            "and Kerley B lines, consistent with pulmonary edema. Possible small bilateral "
            "pleural effusions. Heart size within normal limits for technique.\n"
        ),
    ),
    "S014": Study(  # 00017999_000 [Atelectasis|Cardiomegaly|Effusion|Mass]; stored as cp1252
        "P009",
        "2016-09-27",
        "synthetic",
        text=(
            "FINDINGS: The heart is enlarged. Bilateral pleural effusions, left greater than "
            "right, with adjacent compressive atelectasis. There is a 3.1 × 2.4 cm rounded mass "
            "in the right upper lobe. No pneumothorax.\n"
            "\n"
            "IMPRESSION: 1. Right upper lobe mass; CT of the chest is recommended.\n"
            "2. Cardiomegaly with bilateral pleural effusions and bibasilar atelectasis.\n"
        ),
        encoding="cp1252",
    ),
    "S015": Study(  # 00024291_000 [Pneumothorax]
        "P010",
        "2017-03-14",
        "synthetic",
        text=(
            "FINDINGS: There is a moderate right apical pneumothorax without mediastinal shift. "
            "The lungs are otherwise clear. No pleural effusion.\n"
            "\n"
            "IMPRESSION: Moderate right pneumothorax. Findings discussed with Dr. ___ at the "
            "time of dictation.\n"
        ),
    ),
    "S016": Study(  # 00026402_000 (+ its derived RGB JPEG) [Infiltration]
        "P011",
        "2018-05-02",
        "synthetic",
        text=(
            "findings: patchy opacity in the left lower lobe. no pleural effusion. heart size "
            "normal.\n"
            "impression: left lower lobe infiltrate, cannot exclude early pneumonia.\n"
        ),
    ),
    "S017": Study(  # 00029142_000 [No Finding]
        "P012",
        "2018-10-15",
        "synthetic",
        text=(
            "FINDINGS/IMPRESSION: Single portable AP view of the chest. No focal "
            "consolidation, pleural effusion or pneumothorax. Normal cardiomediastinal "
            "silhouette. No acute cardiopulmonary process.\n"
        ),
    ),
    "S018": Study(  # 00030102_000 [Consolidation]
        "P013",
        "2018-12-21",
        "synthetic",
        text=(
            "IMPRESSION: Right lower lobe consolidation concerning for pneumonia. Possible "
            "small right pleural effusion. No pneumothorax.\n"
        ),
    ),
    # Real report texts, arbitrarily paired with MHH images and two DICOMs (demo only). The
    # order within a patient follows the texts: "mild cardiomegaly" → "stable mild cardiomegaly",
    # "lungs are clear" → "stable chest", "effusion is new" → "effusions, cardiomegaly".
    "S019": Study(
        "P014",
        "2021-03-02",
        "NegBio examples/00019248.txt (public domain)",
        source_file="reports/negbio_00019248.txt",
    ),
    "S020": Study(
        "P014",
        "2021-09-14",
        "chexpert-labeler sample_reports.csv row 4 (MIT)",
        chexpert_row=3,
    ),
    "S021": Study(
        "P015",
        "2020-05-11",
        "chexpert-labeler sample_reports.csv row 1 (MIT)",
        chexpert_row=0,
    ),
    "S022": Study(
        "P015",
        "2020-11-23",
        "NegBio examples/00000086.txt (public domain)",
        source_file="reports/negbio_00000086.txt",
    ),
    "S023": Study(
        "P016",
        "2019-01-07",
        "MIMIC-CXR website example report (MIT-LCP/mimic-cxr website, MIT)",
        source_file="reports/mimic_cxr_website_example.txt",
    ),
    "S024": Study(
        "P016",
        "2019-01-09",
        "chexpert-labeler sample_reports.csv row 2 (MIT)",
        chexpert_row=1,
    ),
    "S025": Study(
        "P017",
        "2022-02-17",
        "chexpert-labeler sample_reports.csv row 3 (MIT)",
        chexpert_row=2,
    ),
}

# NIH: patient id = the file name's first 8 digits; labels, view, age and sex from SOURCES.md.
# MHH: patient ids from the repository's data.csv (the four images it does not list: "").
# DICOM: PatientID from the header.
SIIM_PATIENT = "16d7f894-55d7-4d95-8957-d18987f0e981"
IMAGES: tuple[Image, ...] = (
    Image(
        "S001", NIH + "00027426_000_xrv512.png", "PA", "nih_chestxray14", "00027426", "No Finding"
    ),
    Image(
        "S002", NIH + "00000001_000_xrv512.png", "PA", "nih_chestxray14", "00000001", "Cardiomegaly"
    ),
    Image("S003", NIH + "00005425_000.png", "PA", "nih_chestxray14", "00005425", "Cardiomegaly"),
    Image(
        "S004",
        NIH + "00000100_000.png",
        "PA",
        "nih_chestxray14",
        "00000100",
        "Atelectasis|Effusion|Infiltration",
    ),
    Image("S005", NIH + "00002778_000.png", "PA", "nih_chestxray14", "00002778", "No Finding"),
    Image(
        "S005",
        NIH_JPEG + "00002778_000_gray_q90.jpg",
        "PA",
        "nih_chestxray14_derived_jpeg",
        "00002778",
        "No Finding",
    ),
    Image(
        "S006", NIH + "00006067_000.png", "PA", "nih_chestxray14", "00006067", "Effusion|Emphysema"
    ),
    Image("S007", NIH + "00026355_000.png", "AP", "nih_chestxray14", "00026355", "Consolidation"),
    Image(
        "S008",
        NIH + "00028405_000.png",
        "PA",
        "nih_chestxray14",
        "00028405",
        "Consolidation|Infiltration",
    ),
    Image(
        "S009", NIH + "00019534_000.png", "AP", "nih_chestxray14", "00019534", "Infiltration|Nodule"
    ),
    Image(
        "S010",
        NIH + "00005618_000.png",
        "AP",
        "nih_chestxray14",
        "00005618",
        "Atelectasis|Pneumonia",
    ),
    Image(
        "S010",
        NIH_JPEG + "00005618_000_gray_q95.jpg",
        "AP",
        "nih_chestxray14_derived_jpeg",
        "00005618",
        "Atelectasis|Pneumonia",
    ),
    Image("S011", NIH + "00000924_000.png", "PA", "nih_chestxray14", "00000924", "Fibrosis"),
    Image("S012", NIH + "00001369_000.png", "PA", "nih_chestxray14", "00001369", "Cardiomegaly"),
    Image("S013", NIH + "00017625_000.png", "AP", "nih_chestxray14", "00017625", "Edema"),
    Image(
        "S014",
        NIH + "00017999_000.png",
        "AP",
        "nih_chestxray14",
        "00017999",
        "Atelectasis|Cardiomegaly|Effusion|Mass",
    ),
    Image("S015", NIH + "00024291_000.png", "PA", "nih_chestxray14", "00024291", "Pneumothorax"),
    Image("S016", NIH + "00026402_000.png", "PA", "nih_chestxray14", "00026402", "Infiltration"),
    Image(
        "S016",
        NIH_JPEG + "00026402_000_rgb_q85.jpg",
        "PA",
        "nih_chestxray14_derived_jpeg",
        "00026402",
        "Infiltration",
    ),
    Image("S017", NIH + "00029142_000.png", "AP", "nih_chestxray14", "00029142", "No Finding"),
    Image("S018", NIH + "00030102_000.png", "AP", "nih_chestxray14", "00030102", "Consolidation"),
    Image("S019", MHH + "436a6348.png", "AP", "mhh_covid19", "d039b079"),
    Image("S019", MHH + "81089cb4.png", "AP", "mhh_covid19", "bd2a3dba"),
    Image("S019", MHH + "a4318ac9.png", "AP", "mhh_covid19", "09ec853d"),
    Image("S020", MHH + "0957ce54.png", "PA", "mhh_covid19", ""),
    Image("S020", DICOM + "siim_nih_cr_pa_monochrome2.dcm", "", "siim_acr_nih_dicom", SIIM_PATIENT),
    Image("S020", DICOM + "xrv_fake_monochrome1.dcm", "", "torchxrayvision_dicom", SIIM_PATIENT),
    Image("S021", MHH + "006f3a8a.png", "PA", "mhh_covid19", ""),
    Image("S021", MHH + "0a7faa2a.png", "PA", "mhh_covid19", "c62c878a"),
    Image("S021", MHH + "1d6c4b7c.png", "PA", "mhh_covid19", ""),
    Image("S022", MHH + "90986ce4.png", "PA", "mhh_covid19", "ff488d3e"),
    Image("S022", MHH + "e1446fe8.png", "PA", "mhh_covid19", "7a7f0216"),
    Image("S023", MHH + "d009d61f.png", "PA", "mhh_covid19", "88b33741"),
    Image(
        "S023", DICOM + "nema_wg04_RG1_J2KI_cr_chest_monochrome1.dcm", "", "nema_wg04_dicom", "9RG1"
    ),
    Image("S024", MHH + "19073f37.png", "AP", "mhh_covid19", "9fcd89ef"),
    Image("S024", MHH + "1ae7877e.png", "AP", "mhh_covid19", ""),
    Image("S024", MHH + "21982772.png", "AP", "mhh_covid19", "9e37879b"),
    Image("S024", MHH + "cb706009.png", "AP", "mhh_covid19", "85901531"),
    Image("S025", MHH + "00870a9c.png", "AP", "mhh_covid19", "189daebe"),
    Image("S025", MHH + "86d19bba.png", "AP", "mhh_covid19", "a695ef27"),
)

IMAGE_ID_PREFIX = {
    "nih_chestxray14": "nih",
    "nih_chestxray14_derived_jpeg": "nihjpeg",
    "mhh_covid19": "mhh",
}


def image_id(image: Image, sources: Path) -> str:
    """The demo image id: ``<source prefix>_<file stem>``; DICOMs use their SOPInstanceUID."""
    path = sources / image.source_path
    if path.suffix == ".dcm":
        import pydicom  # the "dicom" extra; only the builder needs it for ids

        uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        return "dicom_" + uid.replace(".", "-")
    return f"{IMAGE_ID_PREFIX[image.source]}_{path.stem}"


def report_bytes(study: Study, sources: Path) -> bytes:
    """The report file's bytes: real files copied unchanged, CSV cells as-is, synthetic texts."""
    if study.source_file:
        return (sources / study.source_file).read_bytes()
    if study.chexpert_row >= 0:
        csv_path = sources / "reports" / "chexpert_labeler_sample_reports.csv"
        with csv_path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.reader(handle))
        return rows[study.chexpert_row][0].encode("utf-8")
    return study.text.encode(study.encoding)


def build(sources: Path, out: Path) -> None:
    """Write images/, reports/ and manifest.csv of the demo under ``out``."""
    for sub in ("images", "reports"):
        shutil.rmtree(out / sub, ignore_errors=True)
    rows = []
    for image in IMAGES:
        study = STUDIES[image.study_id]
        target = out / image.source_path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(sources / image.source_path, target)
        rows.append(
            {
                "image_id": image_id(image, sources),
                "patient_id": study.patient_id,
                "study_id": image.study_id,
                "study_date": study.date,
                "view": image.view,
                "image": image.source_path,
                "report": f"reports/{image.study_id}.txt",
                "synthetic": "true" if study.report_source == "synthetic" else "false",
                "source": image.source,
                "source_patient_id": image.source_patient_id,
                "source_labels": image.source_labels,
                "report_source": study.report_source,
            }
        )
    (out / "reports").mkdir(parents=True, exist_ok=True)
    for study_id in sorted(STUDIES):
        (out / "reports" / f"{study_id}.txt").write_bytes(report_bytes(STUDIES[study_id], sources))
    rows.sort(key=lambda row: (row["patient_id"], row["study_id"], row["image_id"]))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (out / "manifest.csv").write_bytes(buffer.getvalue().encode("utf-8"))


def differences(left: Path, right: Path) -> list[str]:
    """Relative paths under images/, reports/ and manifest.csv that differ between two trees."""
    names: set[str] = {"manifest.csv"}
    for root in (left, right):
        for sub in ("images", "reports"):
            names.update(
                p.relative_to(root).as_posix() for p in (root / sub).rglob("*") if p.is_file()
            )
    return sorted(
        name
        for name in names
        if not (left / name).is_file()
        or not (right / name).is_file()
        or not filecmp.cmp(left / name, right / name, shallow=False)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sources",
        type=Path,
        default=None,
        help=f"folder of original source files (default: ${SOURCES_ENV})",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="demo dataset folder")
    parser.add_argument(
        "--check", action="store_true", help="compare a fresh build with --out; write nothing"
    )
    args = parser.parse_args(argv)
    if args.sources is None:
        if not os.environ.get(SOURCES_ENV):
            parser.error(f"--sources is required (or set {SOURCES_ENV})")
        args.sources = Path(os.environ[SOURCES_ENV])
    if not (args.sources / "SOURCES.md").is_file():
        print(f"error: {args.sources}/SOURCES.md not found; pass --sources", file=sys.stderr)
        return 2
    if not args.check:
        build(args.sources, args.out)
        print(f"wrote {len(IMAGES)} images, {len(STUDIES)} reports to {args.out}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        build(args.sources, Path(tmp))
        diff = differences(Path(tmp), args.out)
    for name in diff:
        print(f"differs: {name}", file=sys.stderr)
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
