"""Hugging Face conventions: Auto classes, ModelOutput, model cards, pinned Hub revisions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForPreTraining, BertConfig, BertForPreTraining

import medvill
from medvill.config import PINNED_HUB_REVISIONS, hub_source
from medvill.model.medvill import (
    MedViLLForPretraining,
    MedViLLModel,
    MedViLLModelOutput,
    load_pretrained_parts,
)
from medvill.modelcard import CardFacts, build_model_card, data_licence
from tests.medvill.test_model import fixed_batch, tiny_config

BERT_COMMIT = PINNED_HUB_REVISIONS["google-bert/bert-base-uncased"]


@pytest.fixture(scope="module")
def pretraining_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny pretraining checkpoint whose weights are not at their initial values."""
    torch.manual_seed(3)
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = MedViLLForPretraining(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    folder = tmp_path_factory.mktemp("pretrain") / "final"
    model.save_pretrained(folder)
    return folder


def test_auto_model_loads_a_pretraining_checkpoint_after_import_medvill(
    pretraining_checkpoint: Path,
) -> None:
    """A fresh interpreter: `import medvill` alone makes AutoModel / AutoModelForPreTraining
    resolve the "medvill" model type (no import of the model module by the caller)."""
    code = (
        "import sys, medvill\n"
        "from transformers import AutoModel, AutoModelForPreTraining\n"
        "print(type(AutoModel.from_pretrained(sys.argv[1])).__name__)\n"
        "print(type(AutoModelForPreTraining.from_pretrained(sys.argv[1])).__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(pretraining_checkpoint)],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(medvill.__file__).parents[1],
    )
    assert result.stdout.split() == ["MedViLLModel", "MedViLLForPretraining"]


def test_auto_model_gets_the_saved_encoder_weights_and_a_model_output(
    pretraining_checkpoint: Path,
) -> None:
    encoder = AutoModel.from_pretrained(pretraining_checkpoint).eval()
    full = AutoModelForPreTraining.from_pretrained(pretraining_checkpoint).eval()
    assert isinstance(encoder, MedViLLModel) and isinstance(full, MedViLLForPretraining)
    saved = load_file(pretraining_checkpoint / "model.safetensors")
    own = encoder.state_dict()
    encoder_keys = [k for k in saved if k.startswith("medvill.")]
    assert len(encoder_keys) > 50
    for key in encoder_keys:  # the "medvill." prefix is stripped, every tensor arrives as saved
        assert torch.equal(own[key.removeprefix("medvill.")], saved[key]), key
    batch = fixed_batch(encoder.config)
    args = (batch["images"], batch["text_ids"], batch["text_valid"], batch["visual_cells"])
    with torch.no_grad():
        out = encoder(*args)
        reference = full(*args)
    assert isinstance(out, MedViLLModelOutput)
    assert out.last_hidden_state.shape == (4, 3 + 2 + 11, 32)
    assert out.pooler_output.shape == (4, 32)
    assert torch.equal(out.last_hidden_state, reference.last_hidden_state)
    assert torch.equal(out.pooler_output, reference.pooled_output)


def facts(**overrides) -> CardFacts:
    values = dict(
        kind="classification", dataset="mimic_cxr", model_class="MedViLLForClassification",
        architecture={"backbone": "resnet50", "hidden_size": 768},
        params={"lr": 1e-05, "epochs": 10, "uncertain": "negative"},
        split_counts={"train": 120, "valid": 7, "test": 9}, shards=5,
        metrics={"valid_micro_auroc": 0.87654321, "threshold": 0.25, "wall_time_s": 3.2},
        labels=("No Finding", "Enlarged Cardiomediastinum"),
        model_module="medvill.tasks.classification",
    )  # fmt: skip
    values.update(overrides)
    return CardFacts(**values)


def test_model_card_front_matter_and_body_carry_the_given_facts() -> None:
    card = build_model_card(facts())
    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["license"] == "other" and meta["license_name"] == "see-model-card"
    assert meta["pipeline_tag"] == "image-classification"
    assert meta["datasets"] == ["mimic_cxr"] and "classification" in meta["tags"]
    assert meta["library_name"] == "transformers" and "base_model" not in meta
    assert "| valid_micro_auroc | 0.8765 |" in body and "| threshold | 0.25 |" in body
    assert "wall_time_s" not in body  # timing would make identical trainings differ
    assert '"lr": 1e-05' in body and '"uncertain": "negative"' in body
    assert "| train | 120 |" in body and "| shard files | 5 |" in body
    assert "| 1 | Enlarged Cardiomediastinum |" in body
    assert "from medvill.tasks.classification import MedViLLForClassification" in body
    assert "must not be used for diagnosis" in body
    assert "not transferable" in body  # MIMIC-derived weights stay with credentialed users
    assert "do not publish it openly" in body


def test_model_card_licence_depends_on_the_data_and_metrics_may_be_absent() -> None:
    vqa = build_model_card(facts(kind="vqa", dataset="vqa_rad", metrics={}, labels=()))
    assert yaml.safe_load(vqa.split("---\n")[1])["license"] == "cc0-1.0"
    assert "reports/vqa_rad/vqa/metrics.json" in vqa and "id2label" not in vqa
    bert = build_model_card(
        facts(kind="pretraining", dataset="elsewhere", base_model="google-bert/bert-base-uncased")
    )
    assert yaml.safe_load(bert.split("---\n")[1])["base_model"] == "google-bert/bert-base-uncased"
    assert "does not know this dataset's licence" in bert and "Apache-2.0" in bert
    assert data_licence("sample").hub_license == "other"
    with pytest.raises(ValueError, match="unknown checkpoint kind"):
        build_model_card(facts(kind="segmentation"))


def test_hub_sources_are_pinned_to_a_commit(tmp_path: Path) -> None:
    assert hub_source(str(tmp_path)) == (str(tmp_path), None)
    missing = str(tmp_path / "no-such-bert")  # a path, not a Hub id: loading it fails later
    assert hub_source(missing) == (missing, None)
    assert hub_source("bert-base-uncased") == ("bert-base-uncased", BERT_COMMIT)
    assert len(BERT_COMMIT) == 40
    assert hub_source("org/model@" + "a" * 40) == ("org/model", "a" * 40)
    for unpinned in ("org/model", "org/model@main", "bert-base-uncased@v1.0"):
        with pytest.raises(ValueError, match="pinned to a commit"):
            hub_source(unpinned)


def _cached_bert(cache: Path, commit: str, main: bool) -> BertForPreTraining:
    """A tiny BERT stored in a Hub cache layout as snapshot ``commit`` of bert-base-uncased."""
    torch.manual_seed(11)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=64)  # fmt: skip
    bert = BertForPreTraining(config)
    repo = cache / "models--bert-base-uncased"
    bert.save_pretrained(repo / "snapshots" / commit)
    if main:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
    return bert


@pytest.mark.parametrize("pinned", [True, False])
def test_text_weights_load_from_the_cache_only_at_the_pinned_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pinned: bool
) -> None:
    """Offline, from the Hub cache: the pinned snapshot is used; a snapshot of another commit
    (even the cached 'main') is not, and the model starts from random init instead."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    bert = _cached_bert(tmp_path, BERT_COMMIT if pinned else "b" * 40, main=not pinned)
    model = MedViLLForPretraining(tiny_config())
    origin = load_pretrained_parts(model, "bert-base-uncased", imagenet=False)
    layer = "bert.encoder.layer.1.attention.self.query.weight"
    copied = torch.equal(model.state_dict()[f"medvill.{layer}"], bert.state_dict()[layer])
    assert copied is pinned
    if pinned:
        assert origin["text"].startswith(f"bert-base-uncased@{BERT_COMMIT} (")
    else:
        assert origin["text"] == "random"


def test_a_task_checkpoint_saved_without_paths_reads_its_dataset_off_the_folder_layout(
    tmp_path: Path, pretraining_checkpoint: Path
) -> None:
    from medvill.tasks.common import save_finetuned
    from medvill.tokenizer import train_wordpiece

    model = MedViLLForPretraining.from_pretrained(pretraining_checkpoint)
    tokenizer = train_wordpiece(["no acute cardiopulmonary process"] * 3, vocab_size=60)
    out = tmp_path / "models" / "openi" / "generation" / "final"
    info = {"task": "generation", "mask": "s2s", "pretrained": "models/openi/pretrain/final"}
    save_finetuned(model, tokenizer, out, info, [{"loss": 2.5}, {"loss": 1.5}])
    card = (out / "README.md").read_text()
    assert "# MedViLL generation — openi" in card and "Open-I" in card
    assert "| final_train_loss | 1.5 |" in card and "| steps | 2 |" in card
    assert '"mask": "s2s"' in card and "pretraining checkpoint models/openi/pretrain/final" in card
    assert "Sample counts: unknown" in card  # no shard index under tmp_path/data
    assert yaml.safe_load(card.split("---\n")[1])["pipeline_tag"] == "image-to-text"


def test_model_card_names_the_family_of_x_vl_and_contrastive_checkpoints() -> None:
    """Another family's checkpoint is not described as MedViLL's, and its card says where that
    family's evaluation writes the test results."""
    xvl = build_model_card(facts(kind="xvl_classification", dataset="openi", metrics={}))
    assert "# Medical X-VL classification — openi" in xvl and "# MedViLL" not in xvl
    assert "reports/openi/xvl/classification/metrics.json" in xvl
    pre = build_model_card(facts(kind="xvl_pretraining", dataset="openi", metrics={}))
    assert "# Medical X-VL pretraining — openi" in pre and "momentum queue" in pre
    tuned = build_model_card(facts(kind="contrastive_retrieval", dataset="openi", metrics={}))
    assert "# Contrastive dual encoder retrieval — openi" in tuned
    assert "medvill finetune-zoo" in tuned and "reports/openi/zoo-<model>" in tuned
    medvill = build_model_card(facts(kind="classification", dataset="openi", metrics={}))
    assert "# MedViLL classification — openi" in medvill
    assert "reports/openi/classification/metrics.json" in medvill


def test_each_family_saves_its_own_card_kind() -> None:
    from medvill.families import get_family

    assert get_family("xvl").card_kind == "xvl_pretraining"
    assert get_family("lovt").card_kind == "contrastive_pretraining"
    assert get_family("medvill").card_kind == "pretraining"
