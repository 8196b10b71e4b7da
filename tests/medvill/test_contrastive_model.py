"""The dual-encoder model (ConVIRT / CLIP / LoVT) and its shard loader."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel

import medvill  # noqa: F401 - registers the Auto classes
from medvill.contrastive.config import ContrastiveConfig
from medvill.contrastive.data import ContrastiveShards, ReportLayout, report_tokens
from medvill.contrastive.losses import info_nce
from medvill.contrastive.model import ContrastiveModel, sentence_embeddings
from medvill.data import LoaderSettings, read_index
from pipeline.sentences import split_sentences


def tiny_config(objective: str, **fields) -> ContrastiveConfig:
    values = dict(
        objective=objective, backbone="resnet18", image_size=64, vocab_size=60, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, max_text_tokens=12, max_sentences=4, projection_dim=16,
        projection_hidden=32, pooling_heads=2, cls_token_id=2, sep_token_id=3,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    values.update(fields)
    return ContrastiveConfig(**values)


def tiny_batch(batch: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Reports of 2, 3 and 1 sentences (the last one's tokens end early: padding)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (batch, 14), generator=generator)
    valid = torch.ones(batch, 14, dtype=torch.bool)
    index = torch.full((batch, 14), -1)
    index[0, 1:6], index[0, 6:13] = 0, 1
    index[1, 1:4], index[1, 4:8], index[1, 8:13] = 0, 1, 2
    index[2, 1:5] = 0
    valid[2, 6:] = False
    return {"images": torch.randn(batch, 3, 64, 64, generator=generator), "text_ids": ids,
            "text_valid": valid, "sentence_index": index}  # fmt: skip


def test_report_tokens_layout() -> None:
    layout = ReportLayout(max_tokens=5, max_sentences=8, pad_id=0, cls_id=2, sep_id=3,
                          random_sentence=False)  # fmt: skip
    ids, valid, index = report_tokens([[10, 11], [12, 13, 14], [15]], layout)
    # the third sentence does not fit the 5 WordPieces: cut
    assert ids.tolist() == [2, 10, 11, 12, 13, 14, 3]
    assert index.tolist() == [-1, 0, 0, 1, 1, 1, -1]
    assert valid.all()
    one = ReportLayout(max_tokens=5, max_sentences=1, pad_id=0, cls_id=2, sep_id=3,
                       random_sentence=False)  # fmt: skip
    ids, valid, index = report_tokens([[10, 11], [12]], one)
    assert ids.tolist() == [2, 10, 11, 3, 0, 0, 0]
    assert valid.tolist() == [True] * 4 + [False] * 3
    assert index.tolist() == [-1, 0, 0, -1, -1, -1, -1]


def test_sentence_embeddings_are_token_means() -> None:
    tokens = torch.tensor([[[1.0], [2.0], [4.0], [8.0], [16.0]]])
    index = torch.tensor([[-1, 0, 0, 1, -1]])
    sentences, valid = sentence_embeddings(tokens, index, 3)
    assert sentences[0, :, 0].tolist() == [3.0, 8.0, 0.0]
    assert valid.tolist() == [[True, True, False]]


@pytest.mark.parametrize(
    ("objective", "weight", "local"), [("convirt", 0.75, False), ("clip", 0.5, False),
                                       ("lovt", 0.75, True)],
)  # fmt: skip
def test_forward_weighs_the_papers_objectives(objective: str, weight: float, local: bool) -> None:
    torch.manual_seed(0)
    model = ContrastiveModel(tiny_config(objective)).eval()
    with torch.no_grad():
        out = model(**tiny_batch())
    losses = out.losses
    expected = weight * losses["image_to_report"] + (1 - weight) * losses["report_to_image"]
    if local:
        expected = expected + 0.375 * (losses["local_image"] + losses["local_report"])
        # the third report has one sentence: its sentence term has no negative, so it is 0
        assert losses["local_report"][2].item() == pytest.approx(0.0, abs=1e-6)
        assert (losses["local_report"][:2] > 0).all() and (losses["local_image"] > 0).all()
    else:
        assert set(losses) == {"image_to_report", "report_to_image"}
    assert torch.allclose(out.per_sample, expected)
    assert out.loss.item() == pytest.approx(expected.mean().item(), rel=1e-6)
    # the global terms are InfoNCE over the batch's projected embeddings
    to_report, _ = info_nce(out.image_embeds, out.text_embeds, model.temperature())
    assert torch.allclose(to_report, losses["image_to_report"], atol=1e-5)
    with torch.no_grad():
        halved = model(**tiny_batch(), normalizer=torch.tensor(6.0))
    assert halved.loss.item() == pytest.approx(out.per_sample.sum().item() / 6, rel=1e-5)


def test_clip_temperature_is_a_parameter_from_0_07() -> None:
    model = ContrastiveModel(tiny_config("clip"))
    assert model.log_logit_scale is not None and model.log_logit_scale.requires_grad
    assert float(model.temperature().detach()) == pytest.approx(0.07, rel=1e-5)
    for fixed in ("convirt", "lovt"):
        model = ContrastiveModel(tiny_config(fixed))
        assert model.temperature() == 0.1 and model.log_logit_scale is None


def test_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="objective must be one of"):
        tiny_config("simclr")
    with pytest.raises(ValueError, match="lovt pools sentences by attention"):
        tiny_config("lovt", text_pooling="max")
    with pytest.raises(ValueError, match="image_size must be a positive multiple of 32"):
        tiny_config("clip", image_size=70)


def test_checkpoint_round_trip_through_auto_model(tmp_path) -> None:
    """save_pretrained writes safetensors; AutoModel gives the same model back (same
    objective, same outputs)."""
    torch.manual_seed(1)
    model = ContrastiveModel(tiny_config("lovt")).eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, ContrastiveModel) and loaded.config.objective == "lovt"
    batch = tiny_batch()
    with torch.no_grad():
        a, b = model(**batch), loaded(**batch)
    assert torch.allclose(a.per_sample, b.per_sample, atol=1e-6)
    assert torch.allclose(a.image_embeds, b.image_embeds, atol=1e-6)


def _dataset(tiny_data, random_sentence: bool) -> ContrastiveShards:
    tokenizer = tiny_data["tokenizer"]
    settings = LoaderSettings(batch_size=4, num_workers=0, shuffle_buffer=8, seed=3,
                              image_size=64, augment=True)  # fmt: skip
    layout = ReportLayout(max_tokens=24, max_sentences=4, pad_id=tokenizer.pad_token_id,
                          cls_id=tokenizer.cls_token_id, sep_id=tokenizer.sep_token_id,
                          random_sentence=random_sentence)  # fmt: skip
    shards = read_index(tiny_data["index"], "train")
    return ContrastiveShards(shards, tokenizer, None, settings, layout=layout)


def test_loader_gives_each_token_its_sentence(tiny_data) -> None:
    """These shards predate the sentences key: the loader splits txt itself. The report
    'the heart size is normal . the lungs are clear .' has two sentences; the first token
    after [CLS] starts sentence 0, the WordPieces of 'the lungs…' are sentence 1."""
    dataset = _dataset(tiny_data, random_sentence=False)
    dataset.set_epoch(0)
    batches = list(dataset)
    assert len(batches) == 3 and all(len(b["keys"]) == 4 for b in batches)
    tokenizer = tiny_data["tokenizer"]
    texts = dict((key, text) for key, text, _ in tiny_data["records"])
    for batch in batches:
        assert batch["images"].shape == (4, 3, 64, 64)
        for row, key in enumerate(batch["keys"]):
            ids = batch["text_ids"][row]
            index = batch["sentence_index"][row]
            valid = batch["text_valid"][row]
            sentences = split_sentences(texts[key])
            assert int(index.max()) + 1 == len(sentences) and len(sentences) in (1, 2)
            for number, sentence in enumerate(sentences):
                decoded = tokenizer.decode(ids[index == number].tolist())
                assert decoded.replace(" ", "") == sentence.replace(" ", "")
            assert ids[0] == tokenizer.cls_token_id
            assert ids[int(valid.sum()) - 1] == tokenizer.sep_token_id


def test_convirt_reads_one_seeded_sentence(tiny_data) -> None:
    dataset = _dataset(tiny_data, random_sentence=True)
    dataset.set_epoch(0)
    first = list(dataset)
    dataset.set_epoch(0)
    again = list(dataset)
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["text_ids"], b["text_ids"])  # seeded by (seed, epoch, key)
        assert int(a["sentence_index"].max()) == 0  # one sentence only
    tokenizer = tiny_data["tokenizer"]
    texts = dict((key, text) for key, text, _ in tiny_data["records"])
    for batch in first:
        for row, key in enumerate(batch["keys"]):
            chosen = tokenizer.decode(batch["text_ids"][row][batch["sentence_index"][row] == 0])
            options = [s.replace(" ", "") for s in split_sentences(texts[key])]
            assert chosen.replace(" ", "") in options


def test_lovt_forward_under_bf16_autocast_matches_fp32() -> None:
    """The precision policy's bf16 autocast (GPUs; here on the CPU): masks, pooling, the
    BatchNorm projection of valid sentences only and the losses run in mixed precision, and
    the loss stays within bf16 rounding of the fp32 one."""
    torch.manual_seed(3)
    model = ContrastiveModel(tiny_config("lovt")).eval()
    batch = tiny_batch()
    with torch.no_grad():
        reference = model(**batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model(**batch)
    assert mixed.image_embeds.dtype == torch.bfloat16  # autocast really ran the heads in bf16
    assert torch.isfinite(mixed.per_sample).all()
    assert mixed.loss.float().item() == pytest.approx(reference.loss.item(), rel=3e-2)
    for name, value in reference.losses.items():
        assert torch.allclose(mixed.losses[name].float(), value, rtol=5e-2, atol=5e-2), name
