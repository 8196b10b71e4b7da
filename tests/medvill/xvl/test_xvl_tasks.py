"""X-VL's fine-tuned downstream tasks: head shapes and losses, ALBEF's ITC-then-ITM ranking,
and classification / retrieval / VQA fine-tuned and evaluated end to end on a tiny project."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medvill.report import compare, summary_markdown, xvl_markdown
from medvill.tasks.common import EvalSettings
from medvill.tokenizer import load_tokenizer, tokenizer_ids
from medvill.xvl.config import config_from_profile
from medvill.xvl.model import XVLForPretraining
from medvill.xvl.retrieval import rerank
from medvill.xvl.tasks import classification as XC
from medvill.xvl.tasks import retrieval as XR
from medvill.xvl.tasks import task_module
from medvill.xvl.tasks import vqa as XV
from medvill.xvl.tasks.common import XVLTaskPaths
from tests.medvill.test_tasks import DS, build_project

TINY = {
    "vision_width": 32, "vision_depth": 1, "vision_heads": 2, "patch_size": 16, "image_size": 32,
    "hidden_size": 32, "num_text_layers": 1, "num_fusion_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64, "max_position_embeddings": 40, "max_text_tokens": 16,
    "embed_dim": 16, "queue_size": 8, "hidden_dropout_prob": 0.0,
}  # fmt: skip
EVAL = EvalSettings(bootstrap=8, seed=1, batch_size=16)
FAST: dict[str, Any] = {"batch_size": 4, "lr": 1e-3, "seed": 3}


def _config(tokenizer: Any) -> Any:
    ids = {k: v for k, v in tokenizer_ids(tokenizer).items() if k != "unk_token_id"}
    return config_from_profile(TINY, ids)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> XVLTaskPaths:
    """MedViLL's tiny task project (shards, task files, VQA files) with an X-VL pretraining
    checkpoint at models/tiny/pretrain-xvl/final."""
    root = tmp_path_factory.mktemp("xvl-project")
    build_project(root)
    tokenizer = load_tokenizer(root / "models" / DS / "pretrain" / "final")
    torch.manual_seed(0)
    paths = XVLTaskPaths(root, DS)
    XVLForPretraining(_config(tokenizer)).save_pretrained(str(paths.pretrained))
    tokenizer.save_pretrained(str(paths.pretrained))
    return paths


def test_paths_sit_beside_the_other_xvl_outputs(tmp_path: Path) -> None:
    paths = XVLTaskPaths(tmp_path, "sample")
    assert paths.pretrained == tmp_path / "models/sample/pretrain-xvl/final"
    assert paths.finetuned("vqa") == tmp_path / "models/sample/xvl/vqa/final"
    assert paths.reports("retrieval") == tmp_path / "reports/sample/xvl/retrieval"
    assert paths.index == tmp_path / "data/shards/sample/index.json"
    with pytest.raises(ValueError, match="no decoder"):
        task_module("generation")
    with pytest.raises(ValueError, match="input must be one of"):
        XC.XVLClassificationSettings(input="report")


def test_heads_shapes_and_losses(project: XVLTaskPaths) -> None:
    tokenizer = load_tokenizer(project.pretrained)
    config = _config(tokenizer)
    torch.manual_seed(0)
    images = torch.randn(4, 3, 32, 32)
    ids = torch.randint(5, len(tokenizer), (4, 18))
    valid = torch.ones(4, 18, dtype=torch.bool)
    for source, width in (("image", TINY["vision_width"]), ("pair", TINY["hidden_size"])):
        config.classifier_input, config.num_labels = source, 14
        model = XC.XVLForClassification(config).eval()
        assert model.classifier.in_features == width
        assert model(images, ids, valid).shape == (4, 14)
    # the image input ignores the report; the pair input does not
    other = torch.randint(5, len(tokenizer), (4, 18))
    config.classifier_input = "image"
    image_only = XC.XVLForClassification(config).eval()
    assert torch.equal(image_only(images, ids, valid), image_only(images, other, valid))
    assert not torch.allclose(model(images, ids, valid), model(images, other, valid))
    config.num_labels = 5
    assert XV.XVLForVQA(config)(images, ids, valid).shape == (4, 5)
    retrieval = XR.XVLForRetrieval(config)
    reports = torch.tensor([1, 2, 3, 1])  # samples 0 and 3 share a report: one positive
    overlap = torch.eye(4)
    out = retrieval(images, ids, valid, reports, overlap, torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["loss"] == out["itc_loss"] + out["itm_loss"]
    out["loss"].backward()
    grad = retrieval.xvl.itm_head.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert retrieval.xvl.vision_proj.weight.grad.abs().sum() > 0


class _Scores:
    """Stand-in for PairFeatures: fixed contrastive and matching scores per line."""

    def __init__(self, itc: list[float], itm: list[float]) -> None:
        self._itc, self._itm = np.array(itc), np.array(itm)
        self.asked: list[int] = []

    def itc(self) -> np.ndarray:
        return self._itc

    def itm(self, lines: np.ndarray) -> np.ndarray:
        self.asked += [int(i) for i in lines]
        return self._itm[lines]


def test_rerank_orders_the_top_k_by_matching_and_the_rest_by_contrast() -> None:
    # two blocks of 4 lines; k = 2
    scores = _Scores(
        itc=[0.9, 0.1, 0.5, 0.3, -0.2, 0.4, 0.8, 0.0],
        itm=[0.2, 0.99, 0.7, 0.5, 0.9, 0.1, 0.3, 0.6],
    )
    out = rerank(scores, [[0, 1, 2, 3], [4, 5, 6, 7]], 2)
    # block 1: top-2 by contrast are lines 0 and 2; matching puts 2 (0.7) before 0 (0.2);
    # then 3 (0.3) and 1 (0.1) by contrast, although line 1's matching score is the highest
    assert list(np.argsort(-out[:4])) == [2, 0, 3, 1]
    # block 2: top-2 by contrast are 6 and 5, matching keeps 6 (0.3) before 5 (0.1); line 4's
    # matching score 0.9 is never asked for
    assert list(np.argsort(-out[4:]) + 4) == [6, 5, 7, 4]
    assert sorted(scores.asked) == [0, 2, 5, 6]  # matching runs on the top-k only
    assert np.array_equal(rerank(scores, [[0, 1, 2, 3]], 0), scores.itc())


@pytest.mark.slow
def test_finetune_and_evaluate_the_three_tasks(project: XVLTaskPaths) -> None:
    info = XC.finetune(project, XC.XVLClassificationSettings(epochs=2, **FAST))
    assert info["model"] == "xvl" and info["input"] == "image"
    final = project.finetuned("classification")
    config = json.loads((final / "config.json").read_text())
    assert config["model_type"] == "xvl" and config["classifier_input"] == "image"
    assert config["id2label"]["2"] == "Cardiomegaly"
    assert "Medical X-VL fine-tuned for multi-label diagnosis" in (final / "README.md").read_text()
    doc = doc_cls = XC.evaluate(project, EVAL)
    assert set(doc["metrics"]) == {"micro_auroc", "micro_f1", "macro_auroc"}
    assert 0.0 <= doc["metrics"]["micro_auroc"] <= 1.0 and doc["samples"] == 6
    out = project.reports("classification")
    pred = json.loads((out / "predictions.json").read_text())
    assert len(pred["scores"]) == 6 and len(pred["scores"][0]) == 14
    assert (out / "plots" / "roc.json").is_file() and (out / "plots" / "roc.png").is_file()
    assert compare("classification", out, out, 8, 1)["metrics"]["micro_auroc"]["difference"] == 0

    XR.finetune(project, XR.XVLRetrievalSettings(epochs=1, rerank_k=3, **FAST))
    doc = XR.evaluate(project, EVAL)
    assert doc["queries"] == {"i2r": 6, "r2i": 6} and doc["rerank_k"] == 3
    # every block holds 3 positives among 6 candidates: Hit@5 is 1 whatever the order
    assert doc["metrics"]["i2r/hit@5"] == doc["metrics"]["r2i/hit@5"] == 1.0
    for direction in ("i2r", "r2i"):
        assert 1 / 4 <= doc["metrics"][f"{direction}/mrr"] <= 1.0  # first positive by rank 4
        assert 1 / 4 <= doc["itc_only_mrr"][direction] <= 1.0
    pred = json.loads((project.reports("retrieval") / "predictions.json").read_text())
    block = np.array(pred["i2r"]["scores"][0])
    assert len(block) == 6 and int((block >= 2.0).sum()) == 3  # the re-ranked top 3

    XV.finetune(project, XV.XVLVqaSettings(epochs=1, **FAST))
    doc = XV.evaluate(project, EVAL)
    assert set(doc["metrics"]) >= {"open", "closed", "overall", "chest_closed"}
    assert 0.0 <= doc["metrics"]["overall"] <= 1.0 and doc["organs"] == "ALL"
    with pytest.raises(ValueError, match="is a medvill model, not an X-VL one"):
        XV.evaluate(project, EVAL, checkpoint=_medvill_vqa(project))

    text = summary_markdown(project.root)
    micro = doc_cls["bootstrap"]["metrics"]["micro_auroc"]
    cell = f"{micro['value']:.3f} [{micro['ci_low']:.3f}, {micro['ci_high']:.3f}]"
    assert f"| classification | micro_auroc | – | {cell} |" in text  # no MedViLL run here
    assert "| tiny | xvl (fine-tuned) | " + cell in text  # the model-families table
    overall = doc["bootstrap"]["metrics"]["overall"]
    assert f"| vqa | overall | – | {overall['value']:.3f} [" in text


def _medvill_vqa(project: XVLTaskPaths) -> Path:
    """A task folder whose task.json is MedViLL's (no "model": "xvl")."""
    folder = project.root / "medvill-vqa"
    folder.mkdir(exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((project.finetuned("vqa") / name).read_bytes())
    (folder / "task.json").write_text(json.dumps({"task": "vqa"}))
    return folder


def _metrics(path: Path, values: dict[str, float], **extra: Any) -> None:
    """A metrics.json in the tasks' layout (value and its bootstrap interval per metric)."""
    boot = {k: {"value": v, "ci_low": v - 0.1, "ci_high": v + 0.1} for k, v in values.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"metrics": values, "bootstrap": {"metrics": boot}, **extra}))


def test_summary_puts_xvl_beside_medvill_per_dataset(tmp_path: Path) -> None:
    assert "No evaluation yet: `medvill evaluate <task> --model xvl`" in "\n".join(
        xvl_markdown(tmp_path)
    )
    reports = tmp_path / "reports" / "ds"
    _metrics(reports / "classification/metrics.json", {"micro_auroc": 0.7})
    _metrics(reports / "xvl/classification/metrics.json", {"micro_auroc": 0.8}, input="pair")
    _metrics(reports / "xvl/vqa/metrics.json", {"closed": 0.55, "open": 0.25})
    text = "\n".join(xvl_markdown(tmp_path))
    assert "ds (X-VL classification input: pair)" in text
    assert "| classification | micro_auroc | 0.700 [0.600, 0.800] | 0.800 [0.700, 0.900] |" in text
    assert "| vqa | closed | – | 0.550 [0.450, 0.650] |" in text
    assert "| retrieval | i2r/mrr | – | – |" in text


def test_cli_runs_xvl_tasks_from_their_own_params_block(project: XVLTaskPaths) -> None:
    import yaml
    from typer.testing import CliRunner

    from medvill.cli import app

    params = project.root / "xvl-params.yaml"
    block = {"vqa": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "organs": ["CHEST"]}}
    params.write_text(yaml.safe_dump({"finetune": {"profile": "demo", "families": {
        "xvl": {"profiles": {"demo": block}}}}, "evaluate": {"bootstrap": 4}}))  # fmt: skip
    common = ["--dataset", DS, "--model", "xvl", "--root", str(project.root),
              "--params", str(params)]  # fmt: skip
    runner = CliRunner()
    done = runner.invoke(app, ["finetune", "vqa", *common])
    assert done.exit_code == 0, done.output
    assert json.loads((project.finetuned("vqa") / "task.json").read_text())["organs"] == ["CHEST"]
    done = runner.invoke(app, ["evaluate", "vqa", *common])
    assert done.exit_code == 0, done.output
    assert json.loads((project.reports("vqa") / "metrics.json").read_text())["organs"] == "CHEST"
    for argv, message in (
        (["finetune", "generation", *common], "X-VL has no 'generation' task"),
        (["finetune", "retrieval", *common], "has no 'retrieval' block"),
        (["finetune", "vqa", *common, "--profile", "paper"], "unknown X-VL finetune profile"),
    ):
        failed = runner.invoke(app, argv)
        assert failed.exit_code == 2 and message in failed.output, failed.output
