"""Downstream tasks end to end on a tiny model and a synthetic project tree (no network)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from medvill import metrics as M
from medvill.config import config_from_profile
from medvill.model.medvill import MedViLLForPretraining
from medvill.report import compare, summary_markdown, write_summary
from medvill.tasks import classification as C
from medvill.tasks import generation as G
from medvill.tasks import retrieval as R
from medvill.tasks import vqa as V
from medvill.tasks.common import EvalSettings, TaskPaths
from medvill.tokenizer import tokenizer_ids, train_wordpiece
from pipeline.records import CHEXPERT_LABELS
from tests.medvill.conftest import make_tiny_profile

DS = "tiny"
POSITIVE = "the heart is enlarged with cardiomegaly ."
NEGATIVE = "the heart size is normal and lungs are clear ."


def _png(bright: bool, rng: np.random.Generator, size: int = 64) -> bytes:
    base = 200 if bright else 40
    pixels = np.clip(base + rng.normal(0, 20, (size, size)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, "PNG")
    return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def build_project(root: Path) -> None:
    """Shards (classification), task JSONL + retrieval blocks, VQA files, a tiny checkpoint.

    The Cardiomegaly label is separable: positive samples have a bright image and a report
    that says so; every other label is blank.
    """
    rng = np.random.default_rng(0)
    counts = {"train": 16, "valid": 8, "test": 6}
    index: dict[str, Any] = {"dataset": DS, "splits": {}}
    (root / "images").mkdir(parents=True)
    rows: dict[str, list[dict[str, Any]]] = {}
    for split, count in counts.items():
        shard_dir = root / "data" / "shards" / DS / split
        shard_dir.mkdir(parents=True)
        rows[split] = []
        with tarfile.open(shard_dir / "shard-000000.tar", "w") as tar:
            for i in range(count):
                positive = i % 2 == 0
                image_id = f"{split}{i:03d}"
                data = _png(positive, rng)
                labels = [None] * len(CHEXPERT_LABELS)
                labels[CHEXPERT_LABELS.index("Cardiomegaly")] = 1.0 if positive else 0.0
                text = POSITIVE if positive else NEGATIVE
                _add(tar, f"{DS}_{image_id}.png", data)
                _add(tar, f"{DS}_{image_id}.txt", text.encode())
                _add(tar, f"{DS}_{image_id}.json", json.dumps({"labels": labels}).encode())
                (root / "images" / f"{image_id}.png").write_bytes(data)
                label = "'Cardiomegaly'" if positive else "'No Finding'"
                rows[split].append(
                    {
                        "id": image_id,
                        "split": split,
                        "label": label,
                        "text": text,
                        "img": f"images/{image_id}.png",
                    }
                )
        index["splits"][split] = {
            "shards": [{"file": f"{split}/shard-000000.tar", "samples": count}],
            "total": count,
        }
    (root / "data" / "shards" / DS / "index.json").write_text(json.dumps(index))
    pairs = root / "data" / "interim" / DS / "pairs"
    pairs.mkdir(parents=True)
    for split, name in (("train", "Train"), ("valid", "Valid"), ("test", "Test")):
        _jsonl(pairs / f"{name}.jsonl", rows[split])
    test = rows["test"]
    for prefix in ("I2T", "T2I"):
        lines = []
        for query in test:
            for cand in test:
                image, report = (query, cand) if prefix == "I2T" else (cand, query)
                lines.append(
                    {
                        "id": image["id"],
                        "split": "test",
                        "label": image["label"],
                        "is_aligned": [int(query["label"] == cand["label"])],
                        "T_id": report["id"],
                        "text": report["text"],
                        "img": image["img"],
                    }
                )
        _jsonl(pairs / f"{prefix}_Label_Test.jsonl", lines)
    vqa = root / "data" / "interim" / DS / "vqa"
    vqa.mkdir(parents=True)
    answers = ["no", "yes", "pa"]
    for split in ("train", "test"):
        entries, targets = [], []
        for i, row in enumerate(rows[split] if split == "train" else rows["test"]):
            yes = row["label"] == "'Cardiomegaly'"
            qid = f"{split}{i}"
            open_q = i % 4 == 3
            entries.append(
                {
                    "qid": qid,
                    "image_name": f"{row['id']}.png",
                    "image_organ": "HEAD" if i % 5 == 4 else "CHEST",  # VQA-RAD mixes organs
                    "question": "which view is this?" if open_q else "is there cardiomegaly?",
                    "answer": "pa" if open_q else ("yes" if yes else "no"),
                    "answer_type": "OPEN" if open_q else "CLOSED",
                }
            )
            label = 2 if open_q else int(yes)
            targets.append(
                {"qid": qid, "image_name": f"{row['id']}.png", "labels": [label], "scores": [1.0]}
            )
        (vqa / f"{split}set.json").write_text(json.dumps(entries))
        (vqa / f"{split}_target.json").write_text(json.dumps(targets))
    (vqa / "ans2label.json").write_text(json.dumps({a: i for i, a in enumerate(answers)}))
    image_paths = {f"{r['id']}.png": r["img"] for split in rows for r in rows[split]}
    (vqa / "image_paths.json").write_text(json.dumps(image_paths))
    texts = [r["text"] for split in rows for r in rows[split]] * 3
    tokenizer = train_wordpiece(texts, vocab_size=120)
    profile = make_tiny_profile()
    profile["model"]["hidden_dropout_prob"] = 0.0
    config = config_from_profile(profile, tokenizer_ids(tokenizer))
    torch.manual_seed(0)
    model = MedViLLForPretraining(config)
    final = root / "models" / DS / "pretrain" / "final"
    model.save_pretrained(str(final))
    tokenizer.save_pretrained(str(final))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> TaskPaths:
    root = tmp_path_factory.mktemp("project")
    build_project(root)
    return TaskPaths(root, DS)


EVAL = EvalSettings(bootstrap=8, seed=1, batch_size=16)
FAST = {"train_backbone": False, "batch_size": 8, "lr": 1e-3}


def test_label_policy() -> None:
    values = [1.0, 0.0, -1.0, None] + [0.0] * 10
    target, valid = C.label_targets(values, "negative", "negative")
    assert target[:4].tolist() == [1, 0, 0, 0] and valid.all()
    target, valid = C.label_targets(values, "positive", "ignore")
    assert target[:4].tolist() == [1, 0, 1, 0] and valid[:4].tolist() == [True, True, True, False]
    _, valid = C.label_targets(values, "ignore", "negative")
    assert valid[:4].tolist() == [True, True, False, True]
    with pytest.raises(ValueError, match="must be one of"):
        C.ClassificationSettings(uncertain="maybe")


def test_classification_finetune_lifts_auroc_then_evaluate_and_compare(project: TaskPaths) -> None:
    settings = C.ClassificationSettings(
        epochs=6, batch_size=8, lr=2e-3, blank="ignore", seed=3, train_backbone=False
    )
    info = C.finetune(project, settings)
    # blank cells are ignored, so this is the AUROC of the separable Cardiomegaly label
    assert info["valid_micro_auroc"] > 0.8
    final = project.finetuned("classification")
    config = json.loads((final / "config.json").read_text())
    # the Hub convention: every output named, in the fixed CheXpert order
    assert config["id2label"] == {str(j): name for j, name in enumerate(CHEXPERT_LABELS)}
    assert config["label2id"]["Cardiomegaly"] == 2 and config["label2id"]["Support Devices"] == 13
    assert config["problem_type"] == "multi_label_classification"
    card = (final / "README.md").read_text()
    assert f"| valid_micro_auroc | {info['valid_micro_auroc']:.4g} |" in card
    assert (
        '"blank": "ignore"' in card and '"epochs": 6' in card and "| 13 | Support Devices |" in card
    )
    doc = C.evaluate(project, EVAL)
    out = project.reports("classification")
    assert doc["metrics"]["micro_auroc"] > 0.8
    stats = doc["bootstrap"]["metrics"]["micro_f1"]
    assert stats["ci_low"] <= stats["ci_high"] and stats["resamples"] >= 1
    # mean ± std over evaluate.bootstrap (8 here) resamples, the interval over 1,000
    assert doc["bootstrap"]["resamples"] == 8 and doc["bootstrap"]["ci_resamples"] == 1000
    assert stats["resamples"] <= 8 < stats["ci_resamples"] <= 1000
    assert doc["inference_ms_per_sample"]["classification"] > 0
    assert (out / "plots" / "roc.png").stat().st_size > 1000
    # DVC plot curves: ROC from (0, 0) to (1, 1), PR points, one confusion cell per valid cell
    roc = json.loads((out / "plots" / "roc.json").read_text())["roc"]
    assert (roc[0]["fpr"], roc[0]["tpr"], roc[-1]["fpr"], roc[-1]["tpr"]) == (0, 0, 1, 1)
    pr = json.loads((out / "plots" / "precision_recall.json").read_text())["precision_recall"]
    assert pr and all(0 <= p["precision"] <= 1 and 0 <= p["recall"] <= 1 for p in pr)
    cells = json.loads((out / "plots" / "confusion.json").read_text())["cells"]
    predictions = json.loads((out / "predictions.json").read_text())
    assert len(cells) == int(np.sum(predictions["valid"]))
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metrics"]["micro_auroc"] == pytest.approx(doc["metrics"]["micro_auroc"])
    same = compare("classification", out, out, 8, 1)
    assert same["metrics"]["micro_auroc"]["difference"] == 0.0
    write_summary(project.root)
    text = (project.root / "reports" / "summary.md").read_text()
    assert "paper table II" in text and "0.980" in text and "ours: tiny" in text
    assert "tiny: mean ± std over 8, 95 % interval over 1000 (seed 1)" in text


def test_retrieval_end_to_end(project: TaskPaths) -> None:
    R.finetune(project, R.RetrievalSettings(epochs=1, **FAST))
    doc = R.evaluate(project, EVAL)
    for direction in ("i2r", "r2i"):
        for name in ("mrr", "hit@5", "recall@5", "precision@5"):
            assert 0.0 <= doc["metrics"][f"{direction}/{name}"] <= 1.0
    # every block holds 3 positives among 6 candidates: Hit@5 must be 1 whatever the scores
    assert doc["metrics"]["i2r/hit@5"] == 1.0
    assert doc["queries"] == {"i2r": 6, "r2i": 6}
    pred = json.loads((project.reports("retrieval") / "predictions.json").read_text())
    assert len(pred["i2r"]["scores"][0]) == 6
    # rank histogram (DVC plot CSV): one row per rank of the 6-candidate blocks, 6 queries each
    lines = (project.reports("retrieval") / "plots" / "rank_histogram.csv").read_text().split()
    assert lines[0] == "rank,i2r,r2i" and len(lines) == 1 + 6
    rows = [[int(v) for v in line.split(",")] for line in lines[1:]]
    assert sum(r[1] for r in rows) == sum(r[2] for r in rows) == 6
    i2r = zip(pred["i2r"]["scores"], pred["i2r"]["relevant"], strict=True)
    first_ranks = [M.first_positive_rank(np.array(s), np.array(r, bool)) for s, r in i2r]
    assert [r[1] for r in rows] == np.bincount(first_ranks, minlength=6).tolist()


def test_greedy_decoding_stops_at_sep_and_respects_max_length() -> None:
    mask_id, sep_id, vocab = 3, 2, 20
    seen: list[list[int]] = []

    def stop_after_three(text: torch.Tensor) -> torch.Tensor:
        seen.append(text[0].tolist())
        logits = torch.zeros(text.shape[0], vocab)
        step = text.shape[1]
        logits[0, sep_id if step == 4 else 5 + step] = 1.0  # seq 0 stops after 3 tokens
        logits[1, 9] = 1.0  # seq 1 never stops
        return logits

    out = G.greedy_decode(stop_after_three, 2, mask_id, sep_id, max_length=6)
    assert out[0] == [6, 7, 8]
    assert out[1] == [9] * 6
    # each step feeds the previous *predictions* back, then one trailing [MASK]
    assert seen[0] == [mask_id] and seen[3] == [6, 7, 8, mask_id]

    def beam_step(text: torch.Tensor) -> torch.Tensor:  # every beam: 6, 7, 8 then [SEP]
        logits = torch.full((text.shape[0], vocab), -5.0)
        logits[:, sep_id if text.shape[1] == 4 else 5 + text.shape[1]] = 0.0
        return logits

    assert G.beam_decode(beam_step, mask_id, sep_id, 6, beam_width=3) == [6, 7, 8]
    assert len(G.beam_decode(beam_step, mask_id, sep_id, 2, beam_width=3)) == 2
    with pytest.raises(ValueError, match="max_length"):
        G.greedy_decode(stop_after_three, 1, mask_id, sep_id, 0)


def test_one_pass_perplexity_equals_stepwise_decoding(project: TaskPaths) -> None:
    model = MedViLLForPretraining.from_pretrained(str(project.pretrained)).eval()
    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    targets = [[7, 9, 11, 13], [8, 10]]
    fast = G.reference_nll(model, images, targets)
    decoder = G.Decoder(model, images)
    cfg = model.config
    for b, target in enumerate(targets):
        seq = [*target, cfg.sep_token_id]
        slow = []
        for t, token in enumerate(seq):
            text = torch.tensor([[*seq[:t], cfg.mask_token_id]])
            logp = torch.log_softmax(decoder.step(text, torch.tensor([b])).float(), -1)
            slow.append(-float(logp[0, token]))
        np.testing.assert_allclose(fast[b], slow, rtol=1e-4, atol=1e-5)
    assert not decoder.step(torch.tensor([[cfg.mask_token_id]]), torch.tensor([0])).requires_grad
    generated = G.generate(model, images, max_length=5)
    assert all(len(g) <= 5 and cfg.sep_token_id not in g for g in generated)


def test_generation_masking_limits() -> None:
    from medvill.data import TextSpec

    spec = TextSpec(
        max_tokens=20,
        pad_id=0,
        cls_id=1,
        sep_id=2,
        mask_id=3,
        vocab_size=50,
        special_ids=(0, 1, 2, 3, 4),
    )
    ids = np.array([10 + i for i in range(20)] + [2])
    valid = np.ones(21, dtype=bool)
    settings = G.GenerationSettings()
    sep_masked = 0
    for seed in range(40):
        inputs, labels = G.generation_masking(
            ids, valid, spec, np.random.default_rng(seed), settings
        )
        chosen = np.flatnonzero(labels != -100)
        assert 1 <= chosen.size <= 3 and (inputs[chosen] == 3).all()
        sep_masked += int(20 in chosen)
    assert 5 < sep_masked < 35  # the final [SEP] is a target about half the time


def test_generation_end_to_end(project: TaskPaths) -> None:
    G.finetune(project, G.GenerationSettings(epochs=1, max_length=6, **FAST))
    doc = G.evaluate(project, EVAL)
    metrics = doc["metrics"]
    assert metrics["perplexity"] > 1.0
    assert {"bleu1", "bleu4", "ce_accuracy", "ce_f1"} <= set(metrics)
    pred = json.loads((project.reports("generation") / "predictions.json").read_text())
    assert len(pred["hypotheses"]) == 6 and len(pred["hyp_labels"][0]) == 14
    agreement = json.loads(
        (project.reports("generation") / "plots" / "label_agreement.json").read_text()
    )["labels"]
    assert len(agreement) == 14 and all(0 <= r["generated"] <= 1 for r in agreement)


def test_checkpoints_load_through_auto_classes_without_warnings(
    project: TaskPaths, capfd: pytest.CaptureFixture[str]
) -> None:
    """ "medvill" is registered with AutoConfig, so AutoTokenizer on a checkpoint is quiet."""
    from transformers import AutoConfig

    from medvill.config import MedViLLConfig
    from medvill.tokenizer import load_tokenizer

    assert isinstance(AutoConfig.from_pretrained(str(project.pretrained)), MedViLLConfig)
    load_tokenizer(project.pretrained)
    assert "You are using a model of type" not in capfd.readouterr().err


def test_vqa_end_to_end_and_bad_inputs(project: TaskPaths, tmp_path: Path) -> None:
    V.finetune(project, V.VqaSettings(epochs=1, **FAST))
    doc = V.evaluate(project, EVAL)
    assert set(doc["metrics"]) >= {"open", "closed", "overall", "chest_open"}
    assert 0.0 <= doc["metrics"]["overall"] <= 1.0
    bars = json.loads((project.reports("vqa") / "plots" / "accuracy.json").read_text())
    assert {b["subset"]: b["accuracy"] for b in bars["accuracy"]}["overall"] == pytest.approx(
        doc["metrics"]["overall"]
    )
    test_entries = json.loads((project.vqa / "testset.json").read_text())
    chest = [e for e in test_entries if e["image_organ"] == "CHEST"]
    assert doc["questions"] == len(test_entries) > len(chest) > 0 and doc["organs"] == "ALL"
    # table IV's CHEST row: fine-tuned and evaluated on the chest questions only
    info = V.finetune(project, V.VqaSettings(epochs=1, organs=["chest"], **FAST))
    assert info["organs"] == ["CHEST"]
    chest_doc = V.evaluate(project, EVAL, out=tmp_path / "chest")
    assert (chest_doc["questions"], chest_doc["organs"]) == (len(chest), "CHEST")
    assert chest_doc["metrics"]["overall"] == chest_doc["metrics"]["chest_overall"]
    with pytest.raises(ValueError, match=r"trainset.json has no questions on organs \['LUNG'\]"):
        V.finetune(project, V.VqaSettings(epochs=1, organs=["LUNG"], **FAST))
    # bad inputs: an empty answer vocabulary and a question about an unknown image
    broken = tmp_path / "vqa"
    broken.mkdir()
    for name in ("trainset.json", "train_target.json", "image_paths.json"):
        (broken / name).write_text((project.vqa / name).read_text())
    (broken / "ans2label.json").write_text("{}")
    with pytest.raises(ValueError, match="empty answer vocabulary"):
        V.VqaFiles.read(broken, "train", project.root)
    (broken / "ans2label.json").write_text((project.vqa / "ans2label.json").read_text())
    (broken / "image_paths.json").write_text("{}")
    with pytest.raises(KeyError, match="unknown image"):
        V.VqaFiles.read(broken, "train", project.root)


def test_missing_checkpoint_and_unknown_image_id(project: TaskPaths, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model checkpoint"):
        C.finetune(project, C.ClassificationSettings(), pretrained=tmp_path / "nowhere")
    empty = TaskPaths(tmp_path, DS)
    with pytest.raises(FileNotFoundError, match="medvill finetune retrieval"):
        R.evaluate(empty, EVAL)
    rows = [json.loads(x) for x in (project.pairs / "Train.jsonl").read_text().splitlines()]
    rows[1]["img"] = "images/does-not-exist.png"
    pairs = tmp_path / "data" / "interim" / DS / "pairs"
    pairs.mkdir(parents=True)
    _jsonl(pairs / "Train.jsonl", rows)
    other = TaskPaths(tmp_path, DS)
    (tmp_path / "images").symlink_to(project.root / "images")
    with pytest.raises(
        FileNotFoundError, match=r"(?s)unknown image id.*Train.jsonl:2 id .train001"
    ):
        R.finetune(other, R.RetrievalSettings(), pretrained=project.pretrained)


def test_summary_without_results_says_so(tmp_path: Path) -> None:
    text = summary_markdown(tmp_path)
    assert "No evaluation yet" in text and "paper table V" in text
