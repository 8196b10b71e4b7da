"""The synthetic corpus generator: determinism, the tree it writes, what its images show, and
that its reports, labels and questions agree with the findings that were drawn."""

from __future__ import annotations

import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.datasets import LayoutError, read_adapter
from pipeline.records import CHEXPERT_LABELS
from pipeline.synthetic import CorpusConfig, plan_corpus, read_ground_truth, write_corpus
from pipeline.synthetic.drawing import CARDIOMEGALY_CTR, NORMAL_CTR, Anatomy, render
from pipeline.synthetic.findings import Finding, StudyFindings, sample_study

SIZE = 256
ANATOMY = Anatomy(
    body_half_width=0.44,
    lung_half_width=0.16,
    lung_gap=0.2,
    lung_top=0.15,
    lung_bottom=0.76,
    exposure=0.0,
    contrast=1.0,
)


def _tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "corpus"
    write_corpus(out, CorpusConfig(n_images=120, seed=7, image_size=128), workers=1)
    return out


def _image(findings: tuple[Finding, ...], seed: int = 0, view: str = "PA") -> np.ndarray:
    rng = np.random.default_rng(seed)
    return render(StudyFindings(findings), ANATOMY, view, SIZE, rng).astype(np.float32)


def _box(image: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    n = image.shape[0]
    return image[int(y0 * n) : int(y1 * n), int(x0 * n) : int(x1 * n)]


# --- determinism and layout -----------------------------------------------------------------


def test_same_seed_gives_a_byte_identical_tree_whatever_the_workers(corpus, tmp_path) -> None:
    again = tmp_path / "again"
    write_corpus(again, CorpusConfig(n_images=120, seed=7, image_size=128), workers=2)
    assert _tree(again) == _tree(corpus)
    other = tmp_path / "other"
    write_corpus(other, CorpusConfig(n_images=120, seed=8, image_size=128), workers=1)
    assert _tree(other)["manifest.csv"] != _tree(corpus)["manifest.csv"]


def test_tree_has_exactly_n_images_patients_with_several_studies_and_all_views(corpus) -> None:
    with (corpus / "manifest.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 120
    assert len(list((corpus / "images").glob("*.jpg"))) == 120
    assert all((corpus / r["image"]).is_file() and (corpus / r["report"]).is_file() for r in rows)
    assert {r["view"] for r in rows} == {"PA", "AP", "LATERAL"}
    studies_per_patient: dict[str, set[str]] = {}
    split_of_patient: dict[str, set[str]] = {}
    for row in rows:
        studies_per_patient.setdefault(row["patient_id"], set()).add(row["study_id"])
        split_of_patient.setdefault(row["patient_id"], set()).add(row["split"])
    assert max(len(s) for s in studies_per_patient.values()) >= 2
    assert all(len(s) == 1 for s in split_of_patient.values())  # patient-level split
    info = json.loads((corpus / "corpus.json").read_text())
    assert info["images"] == 120 and info["seed"] == 7
    assert info["studies"] == len({r["study_id"] for r in rows})


def test_findings_come_zero_to_three_with_co_occurrence() -> None:
    rng = np.random.default_rng(0)
    studies = [sample_study(rng) for _ in range(3000)]
    counts = [len(s.findings) for s in studies]
    assert min(counts) == 0 and max(counts) == 3
    with_heart = [s for s in studies if "cardiomegaly" in s.kinds()]
    without = [s for s in studies if "cardiomegaly" not in s.kinds()]
    rate = lambda group: sum("effusion" in s.kinds() for s in group) / len(group)  # noqa: E731
    assert rate(with_heart) > 2 * rate(without)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="synthetic.n_images"):
        CorpusConfig.from_params({"synthetic": {"n_images": 0}})
    with pytest.raises(ValueError, match="train \\+ valid < 1"):
        CorpusConfig.from_params({"synthetic": {"ratios": {"train": 0.9, "valid": 0.2}}})


def test_refuses_to_overwrite_a_directory_that_is_not_a_corpus(tmp_path) -> None:
    (tmp_path / "precious.txt").write_text("real data")
    with pytest.raises(ValueError, match="not a synthetic corpus"):
        write_corpus(tmp_path, CorpusConfig(n_images=2, image_size=64))
    assert (tmp_path / "precious.txt").read_text() == "real data"


def test_adapter_names_missing_files_and_reads_a_corpus(corpus, tmp_path) -> None:
    with pytest.raises(LayoutError, match="missing corpus.json, manifest.csv, labels.csv"):
        read_adapter("synthetic", tmp_path, {})
    result = read_adapter("synthetic", corpus, {})
    assert len(result.records) == 120 and not result.rejects
    record = result.records[0]
    assert record["dataset"] == "synthetic" and record["official_split"] in {
        "train",
        "valid",
        "test",
    }
    assert json.loads(record["extra_json"])["generator_version"] == "1"


# --- what the images show -------------------------------------------------------------------


def _cardiothoracic_ratio(image: np.ndarray) -> float:
    """Heart width / thorax width on the row through the lower heart, read from the pixels."""
    row = image[
        int((ANATOMY.lung_bottom - 0.06) * SIZE) - 2 : int((ANATOMY.lung_bottom - 0.06) * SIZE) + 3
    ].mean(0)
    lung = np.median(_box(image, 0.26, 0.34, 0.35, 0.5))
    heart_level = np.median(
        _box(image, 0.5, 0.58, ANATOMY.lung_bottom - 0.08, ANATOMY.lung_bottom - 0.04)
    )
    bright = row > (lung + heart_level) / 2
    centre = int(0.55 * SIZE)
    left = centre
    while left > 0 and bright[left - 1]:
        left -= 1
    right = centre
    while right < SIZE - 1 and bright[right + 1]:
        right += 1
    thorax = 2 * (ANATOMY.lung_gap + ANATOMY.lung_half_width) * SIZE
    return (right - left + 1) / thorax


def test_cardiomegaly_widens_the_cardiac_silhouette() -> None:
    normal = np.mean([_cardiothoracic_ratio(_image((), seed)) for seed in range(4)])
    severe = np.mean(
        [_cardiothoracic_ratio(_image((Finding("cardiomegaly", 2),), seed)) for seed in range(4)]
    )
    assert normal < 0.5 < severe
    assert severe - normal > 0.6 * (CARDIOMEGALY_CTR[2] - NORMAL_CTR)


def test_left_effusion_whitens_the_left_base_only() -> None:
    normal = _image(())
    effusion = _image((Finding("effusion", 2, "left"),))
    base = (ANATOMY.lung_bottom - 0.12, ANATOMY.lung_bottom - 0.02)
    left_base = (0.5 + ANATOMY.lung_gap + 0.04, 0.5 + ANATOMY.lung_gap + 0.12, *base)
    right_base = (0.5 - ANATOMY.lung_gap - 0.12, 0.5 - ANATOMY.lung_gap - 0.04, *base)
    assert _box(effusion, *left_base).mean() - _box(normal, *left_base).mean() > 25
    assert abs(_box(effusion, *right_base).mean() - _box(normal, *right_base).mean()) < 5


def _block_means(region: np.ndarray) -> np.ndarray:
    h, w = region.shape[0] // 4 * 4, region.shape[1] // 4 * 4
    return region[:h, :w].reshape(h // 4, 4, w // 4, 4).mean(axis=(1, 3))


def test_pneumothorax_rim_is_darker_and_has_no_lung_markings() -> None:
    rim = (0.185, 0.215, 0.38, 0.5)  # inside the right lung, lateral third
    pneumothorax = (Finding("pneumothorax", 2, "right", "upper"),)
    assert _box(_image(pneumothorax, 3), *rim).mean() < _box(_image((), 3), *rim).mean() - 10

    # Anatomy and ribs are fixed here; lung markings are a texture drawn per seed. Where the
    # markings are, 4×4 block means change from seed to seed; in the lucent rim they must not.
    def seed_spread(findings: tuple[Finding, ...]) -> float:
        stack = np.stack([_block_means(_box(_image(findings, s), *rim)) for s in range(6)])
        return float(stack.std(axis=0).mean())

    assert seed_spread(pneumothorax) < 0.5 * seed_spread(())


def test_nodule_is_a_bright_round_spot_where_the_report_puts_it() -> None:
    normal = _image((), seed=5)
    nodule = _image((Finding("nodule", 2, "right", "upper", size_mm=40),), seed=5)
    difference = nodule - normal
    y, x = np.unravel_index(np.argmax(difference), difference.shape)
    assert difference[y, x] > 60
    assert x < SIZE / 2  # the patient's right is on the image's left
    assert y < (ANATOMY.lung_top + 0.4 * (ANATOMY.lung_bottom - ANATOMY.lung_top)) * SIZE


def test_devices_are_metal_bright_and_views_carry_their_marker() -> None:
    tube = _image((Finding("devices", devices=("endotracheal tube",)),), seed=1)
    trachea = (0.49, 0.51, 0.05, 0.15)
    no_tube = _image((), seed=1)
    assert _box(tube, *trachea).max(axis=1).mean() > _box(no_tube, *trachea).max(axis=1).mean() + 15
    pa, ap = _image((), view="PA"), _image((), view="AP")
    assert _box(pa, 0.1, 0.15, 0.065, 0.085).mean() > _box(ap, 0.1, 0.15, 0.065, 0.085).mean() + 40


# --- reports, labels and questions agree with the findings ------------------------------------


def test_labels_follow_the_drawn_findings(corpus) -> None:
    truth = read_ground_truth(corpus)
    studies = [json.loads(line) for line in (corpus / "findings.jsonl").read_text().splitlines()]
    assert set(truth) == {s["study_id"] for s in studies}
    label_of = {
        "cardiomegaly": "Cardiomegaly",
        "effusion": "Pleural Effusion",
        "pneumothorax": "Pneumothorax",
        "nodule": "Lung Lesion",
        "consolidation": "Consolidation",
        "atelectasis": "Atelectasis",
        "devices": "Support Devices",
    }
    for study in studies:
        labels = truth[study["study_id"]]
        report = (corpus / "reports" / f"{study['study_id']}.txt").read_text()
        assert "FINDINGS:" in report and "IMPRESSION:" in report
        kinds = {f["kind"] for f in study["findings"]}
        for finding in study["findings"]:
            expected = -1.0 if finding["hedged"] else 1.0
            assert labels[label_of[finding["kind"]]] == expected
            if finding["side"] in ("left", "right"):
                findings_text = report.split("IMPRESSION:")[0]
                assert finding["side"] in findings_text or "lingula" in findings_text
        for kind, name in label_of.items():
            if kind not in kinds:
                assert labels[name] in (0.0,) or math.isnan(labels[name])
        pathology = kinds - {"devices"}
        assert (labels["No Finding"] == 1.0) == (not pathology)


def test_vqa_answers_come_from_the_findings_and_follow_the_patient_split(corpus) -> None:
    questions = json.loads((corpus / "vqa/questions.json").read_text())
    studies = {
        json.loads(line)["study_id"]: json.loads(line)
        for line in (corpus / "findings.jsonl").read_text().splitlines()
    }
    with (corpus / "manifest.csv").open(encoding="utf-8") as handle:
        split_of = {f"{r['image_id']}.jpg": r["split"] for r in csv.DictReader(handle)}
    assert [q["qid"] for q in questions] == list(range(len(questions)))
    assert {q["answer_type"] for q in questions} == {"CLOSED", "OPEN"}
    for question in questions:
        assert (question["phrase_type"] == "test_freeform") == (
            split_of[question["image_name"]] == "test"
        )
        study = studies[question["image_name"].split("_")[0]]
        kinds = {f["kind"]: f for f in study["findings"]}
        if question["question"] == "Is there cardiomegaly?":
            assert question["answer"] == ("yes" if "cardiomegaly" in kinds else "no")
        if question["question"] == "Which side is the pleural effusion on?":
            side = kinds["effusion"]["side"]
            assert question["answer"] == ("both" if side == "bilateral" else side)
        if question["question"] == "Which view is this?":
            assert question["answer"] == question["image_name"].split("_")[1][:-4]


def test_built_in_labeler_scores_at_least_095_f1_on_the_corpus(tmp_path) -> None:
    from pipeline.synthetic.score import score_corpus

    raw = tmp_path / "corpus"
    write_corpus(raw, CorpusConfig(n_images=260, seed=11, image_size=64), workers=1)
    score = score_corpus(raw)
    assert score.reports == len(plan_corpus(CorpusConfig(n_images=260, seed=11, image_size=64)))
    assert score.f1 >= 0.95, score
    assert {"Cardiomegaly", "Pleural Effusion", "Support Devices"} <= set(score.per_label_f1)


def test_score_counts_false_positives_and_negatives() -> None:
    import pandas as pd

    from pipeline.synthetic.score import score_labels

    truth = [dict.fromkeys(CHEXPERT_LABELS, math.nan) for _ in range(2)]
    truth[0]["Cardiomegaly"] = 1.0
    truth[1]["Pneumothorax"] = 1.0
    predicted = pd.DataFrame([dict.fromkeys(CHEXPERT_LABELS, math.nan) for _ in range(2)])
    predicted.loc[0, "Cardiomegaly"] = 1.0
    predicted.loc[1, "Edema"] = 1.0
    score = score_labels(truth, predicted)
    assert (score.precision, score.recall) == (0.5, 0.5)
    assert score.exact_match == 0.5


def test_questions_per_image_keeps_a_seeded_subset(tmp_path) -> None:
    config = CorpusConfig(n_images=40, seed=7, image_size=64, questions_per_image=3)
    write_corpus(tmp_path / "a", config)
    questions = json.loads((tmp_path / "a/vqa/questions.json").read_text())
    per_image: dict[str, int] = {}
    for question in questions:
        per_image[question["image_name"]] = per_image.get(question["image_name"], 0) + 1
    assert set(per_image.values()) == {3}
    assert [q["qid"] for q in questions] == list(range(len(questions)))
    write_corpus(tmp_path / "b", config)
    assert (tmp_path / "b/vqa/questions.json").read_bytes() == (
        tmp_path / "a/vqa/questions.json"
    ).read_bytes()
