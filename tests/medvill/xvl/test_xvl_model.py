"""The X-VL model end to end on tiny shapes: losses, momentum and queue inside a training
forward, ITM negatives, safetensors round trip, ViT weights from a local file, the refusal of
random initialisation, and the batch builder on real shard samples."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from medvill.families import get_family
from medvill.xvl.config import XVLConfig, config_from_profile
from medvill.xvl.model import XVLForPretraining, XVLModel, build_vit
from medvill.xvl.weights import load_vit

TINY = {
    "vision_width": 32, "vision_depth": 2, "vision_heads": 2, "patch_size": 16, "image_size": 64,
    "hidden_size": 32, "num_text_layers": 1, "num_fusion_layers": 1, "num_attention_heads": 2,
    "intermediate_size": 64, "max_position_embeddings": 32, "max_text_tokens": 10,
    "embed_dim": 16, "queue_size": 6,
}  # fmt: skip
IDS = {"vocab_size": 50, "pad_token_id": 0, "cls_token_id": 1, "sep_token_id": 2,
       "mask_token_id": 3}  # fmt: skip


def tiny_model(**overrides: object) -> XVLForPretraining:
    torch.manual_seed(0)
    return XVLForPretraining(config_from_profile({**TINY, **overrides}, IDS))


def tiny_batch(batch: int = 4, reports: list[int] | None = None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 50, (batch, 12), generator=g)
    ids[:, 0] = 1
    valid = torch.ones(batch, 12, dtype=torch.bool)
    valid[0, 8:] = False
    labels = torch.full_like(ids, -100)
    labels[:, 3] = ids[:, 3]
    mlm = ids.clone()
    mlm[:, 3] = 3
    report_ids = torch.tensor(reports if reports is not None else list(range(batch)))
    return {
        "images": torch.randn(batch, 3, 64, 64, generator=g),
        "text_ids": ids, "text_valid": valid, "mlm_ids": mlm, "mlm_labels": labels,
        "report_ids": report_ids,
        "report_overlap": (report_ids[:, None] == report_ids[None]).float(),
    }  # fmt: skip


def test_training_forward_updates_momentum_and_queue_and_only_online_weights_learn() -> None:
    model = tiny_model()
    model.train()
    online = model.xvl.text.layer[0].attention.self.query.weight.detach().clone()
    shadow_before = model.text_m.layer[0].attention.self.query.weight.detach().clone()
    with torch.no_grad():  # make the online model differ from its momentum copy
        model.xvl.text.layer[0].attention.self.query.weight.add_(1.0)
    out = model(**tiny_batch(), generator=torch.Generator().manual_seed(0))
    m = model.config.momentum
    expected = m * shadow_before + (1 - m) * (online + 1.0)
    assert torch.allclose(model.text_m.layer[0].attention.self.query.weight, expected)
    for value in (out.loss, out.itc_loss, out.itm_loss, out.mlm_loss):
        assert torch.isfinite(value) and value.item() > 0
    assert out.loss.item() == pytest.approx(
        (out.itc_loss + out.itm_loss + out.mlm_loss).item(), rel=1e-6
    )
    assert int(out.itm_negatives) == 8  # 4 distinct reports: one negative image + one text each
    out.loss.backward()
    assert model.xvl.visual_encoder.blocks[0].attn.qkv.weight.grad is not None
    assert model.xvl.text.layer[1].crossattention.self.key.weight.grad is not None
    assert all(p.grad is None for _, s in model.model_pairs() for p in s.parameters())
    # the queue took the batch's momentum features and report ids
    assert int(model.queue_filled) == 4 and int(model.queue_pointer) == 4
    assert model.report_queue.tolist() == [0, 1, 2, 3, -1, -1]
    assert torch.allclose(model.image_queue[:, :4].norm(dim=0), torch.ones(4))
    model(**tiny_batch(), generator=torch.Generator().manual_seed(0))
    assert int(model.queue_filled) == 6 and int(model.queue_pointer) == 2  # wrapped


def test_identical_reports_give_no_matching_negatives_and_eval_leaves_state_alone() -> None:
    model = tiny_model()
    model.eval()
    out = model(**tiny_batch(reports=[7, 7, 7, 7]), generator=torch.Generator().manual_seed(0))
    assert int(out.itm_negatives) == 0 and torch.isfinite(out.itm_loss)
    assert int(model.queue_filled) == 0  # evaluation neither enqueues nor moves the EMA
    assert torch.equal(
        model.text_m.layer[0].attention.self.query.weight,
        model.xvl.text.layer[0].attention.self.query.weight,
    )


def test_safetensors_round_trip_keeps_queue_and_freezes_momentum(tmp_path: Path) -> None:
    model = tiny_model()
    model.train()
    model(**tiny_batch(), generator=torch.Generator().manual_seed(0))
    model.save_pretrained(tmp_path, safe_serialization=True)
    assert (tmp_path / "model.safetensors").is_file()
    again = XVLForPretraining.from_pretrained(tmp_path)
    assert torch.equal(again.image_queue, model.image_queue)
    assert torch.equal(again.report_queue, model.report_queue)
    assert int(again.queue_pointer) == 4
    assert not any(p.requires_grad for _, s in again.model_pairs() for p in s.parameters())
    assert again.xvl.visual_encoder.pos_embed.requires_grad
    encoder = XVLModel.from_pretrained(tmp_path)  # downstream: the encoder alone
    own = model.xvl.state_dict()
    assert all(torch.equal(own[k], v) for k, v in encoder.state_dict().items())
    images = tiny_batch()["images"][:2]
    encoder.eval()
    out = encoder(images, tiny_batch()["text_ids"][:2], tiny_batch()["text_valid"][:2])
    assert out.image_embeds.shape == (2, 1 + 16, 32) and out.itm_logits.shape == (2, 2)


def test_vit_weights_load_from_a_local_file_with_a_resampled_grid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = build_vit(XVLConfig(**{**TINY, "image_size": 32}, **IDS))  # 2×2 grid
    state = {f"module.backbone.{k}": v for k, v in source.state_dict().items()}
    state["module.head.weight"] = torch.zeros(3, 32)  # a classifier head is dropped
    path = tmp_path / "ibot_vits16.safetensors"
    save_file(state, str(path))
    model = tiny_model()  # 4×4 grid
    origin = load_vit(model, str(path))
    assert "tensors" in origin
    vit = model.xvl.visual_encoder
    assert torch.equal(vit.blocks[1].mlp.fc2.weight, source.blocks[1].mlp.fc2.weight)
    assert vit.pos_embed.shape == (1, 17, 32)
    assert torch.equal(vit.pos_embed[:, :1], source.pos_embed[:, :1])  # [CLS] position kept
    with caplog.at_level(logging.WARNING):
        assert load_vit(model, str(tmp_path / "missing.pth")) == "random"
    assert "random initialisation" in caplog.text and "missing.pth" in caplog.text


def test_require_pretrained_refuses_random_init_unless_allowed(
    tiny_data: dict, tmp_path: Path
) -> None:
    """The paper profile's refusal, through the shared trainer, naming the ViT file."""
    from medvill.pretrain import Paths, TrainSettings, check_initialisation

    family = get_family("xvl")
    settings = TrainSettings.from_dict(
        {"vit_weights": str(tmp_path / "ibot_vits16.pth"), "text_weights": "", "imagenet": True,
         "require_pretrained": True}
    )  # fmt: skip
    profile = {"model": dict(TINY), "train": {"vit_weights": settings.vit_weights}}
    config = family.build_config(profile, tiny_data["tokenizer"], {})
    model = family.new_model(config)
    origin = family.load_public_weights(model, settings.text_weights, settings.imagenet)
    assert origin["visual"] == "random"
    with pytest.raises(FileNotFoundError, match="--allow-random-init") as error:
        check_initialisation(origin, settings, False, family.visual_weights_hint)
    assert "ViT-S/16" in str(error.value) and "ResNet" not in str(error.value)
    check_initialisation(origin, settings, True, family.visual_weights_hint)  # overridden
    # with the file present the ViT loads and the momentum copy follows it
    source = build_vit(config)
    save_file(source.state_dict(), str(tmp_path / "ibot_vits16.safetensors"))
    family.build_config({**profile, "train": {"vit_weights": str(tmp_path /
                        "ibot_vits16.safetensors")}}, tiny_data["tokenizer"], {})  # fmt: skip
    origin = family.load_public_weights(model, "", True)
    assert origin["visual"] == "imagenet"
    check_initialisation(origin, settings, False, family.visual_weights_hint)
    assert torch.equal(model.visual_encoder_m.blocks[0].attn.qkv.weight,
                       source.blocks[0].attn.qkv.weight)  # fmt: skip
    assert Paths.for_dataset("d", tmp_path, "xvl").out == tmp_path / "models/d/pretrain-xvl"


def test_config_rejects_unknown_fields_and_bad_shapes() -> None:
    with pytest.raises(ValueError, match="unknown xvl model settings"):
        config_from_profile({"hidden_layers": 2}, IDS)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        config_from_profile({**TINY, "image_size": 70}, IDS)


def test_batch_builder_on_shard_samples(tiny_data: dict) -> None:
    from medvill.data import LoaderSettings, read_index
    from medvill.xvl.data import XVLShards, report_id, xvl_text_spec

    tokenizer = tiny_data["tokenizer"]
    spec = xvl_text_spec(tokenizer, 16)
    settings = LoaderSettings(batch_size=6, num_workers=0, shuffle_buffer=8, seed=3,
                              image_size=32)  # fmt: skip
    dataset = XVLShards(read_index(tiny_data["index"], "train"), tokenizer, spec, settings)
    dataset.set_epoch(0)
    batches = list(dataset)
    assert len(batches) == 2  # 12 training samples, batches of 6
    batch = batches[0]
    assert batch["images"].shape == (6, 3, 32, 32)
    assert (batch["text_ids"][:, 0] == tokenizer.cls_token_id).all()
    lengths = batch["text_valid"].sum(1)
    last = batch["text_ids"][torch.arange(6), lengths - 1]
    assert (last == tokenizer.sep_token_id).all()
    masked = batch["mlm_labels"] != -100
    assert masked.any(1).all()  # every report has a word to predict
    assert torch.equal(batch["mlm_labels"][masked], batch["text_ids"][masked])
    assert not (batch["mlm_ids"][~masked] != batch["text_ids"][~masked]).any()
    # report ids and overlap follow the texts: the fixture repeats its 6 reports
    all_keys = [k for b in batches for k in b["keys"]]
    assert len(set(all_keys)) == 12
    texts = {r[0]: r[1] for r in tiny_data["records"]}
    expected = torch.tensor([report_id(texts[k]) for k in batch["keys"]])
    assert torch.equal(batch["report_ids"], expected)
    same = batch["report_ids"][:, None] == batch["report_ids"][None]
    assert torch.equal(batch["report_overlap"] == 1.0, same)
    again = XVLShards(read_index(tiny_data["index"], "train"), tokenizer, spec, settings)
    again.set_epoch(0)
    repeat = next(iter(again))
    assert repeat["keys"] == batch["keys"] and repeat["mining_seed"] == batch["mining_seed"]
    assert torch.equal(repeat["mlm_ids"], batch["mlm_ids"])


def test_bf16_autocast_keeps_the_contrast_and_the_queue_in_fp32() -> None:
    model = tiny_model()
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**tiny_batch(), generator=torch.Generator().manual_seed(0))
    out.loss.backward()
    assert out.itc_loss.dtype == torch.float32 and torch.isfinite(out.loss)
    assert model.image_queue.dtype == torch.float32 and int(model.queue_filled) == 4
    assert model.xvl.temp.grad is not None
