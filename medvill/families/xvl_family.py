"""Medical X-VL (contrast + matching with mined negatives + distilled masked words) as a
pretraining family: ``medvill pretrain --model xvl``, profiles under
``pretrain.families.xvl.profiles``, output ``models/<dataset>/pretrain-xvl``.

Normalisation: every X-VL loss is a mean over its micro-batch (the contrast and the mined
negatives live inside it), so the count is the samples of the global batch and a micro-batch's
losses are weighted by its share of them; with equal micro-batches that is the plain mean.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch

from medvill.families.base import DataContext, PretrainFamily, StepOutput
from medvill.tokenizer import tokenizer_ids
from medvill.xvl.config import XVLConfig, config_from_profile
from medvill.xvl.model import XVLForPretraining
from medvill.xvl.weights import load_bert, load_vit

log = logging.getLogger(__name__)


class XVLFamily(PretrainFamily):
    """Counts: samples of the global batch; stats: sample-weighted ITC, ITM and MLM losses and
    ITM accuracy."""

    name: ClassVar[str] = "xvl"
    title: ClassVar[str] = "Medical X-VL"
    card_kind: ClassVar[str] = "xvl_pretraining"
    model_class = XVLForPretraining
    loss_names: ClassVar[tuple[str, ...]] = ("itc_loss", "itm_loss", "mlm_loss")
    extra_metrics: ClassVar[tuple[str, ...]] = ("itm_accuracy", "alpha", "noisy_fraction")
    visual_weights_hint: ClassVar[str] = (
        "ViT-S/16 self-supervised ImageNet weights (train.vit_weights: a local iBOT or DINO "
        "checkpoint file, .pth or .safetensors)"
    )
    broadcast_buffers: ClassVar[bool] = False  # queues are gathered: equal on every rank

    def __init__(self) -> None:
        self._vit_weights = ""
        self._vit_key = ""

    @property
    def stat_names(self) -> tuple[str, ...]:
        return ("loss", "itc_loss", "itm_loss", "mlm_loss", "itm_accuracy", "alpha",
                "noisy_fraction")  # fmt: skip

    def build_config(
        self, profile: dict[str, Any], tokenizer: Any, overrides: dict[str, Any]
    ) -> XVLConfig:
        if overrides.get("mask_type"):
            raise ValueError("--mask is MedViLL's attention mask; X-VL has none to choose")
        train = profile.get("train", {})
        # the ViT file is a train setting; remembered here for load_public_weights
        self._vit_weights = str(train.get("vit_weights", ""))
        self._vit_key = str(train.get("vit_checkpoint_key", ""))
        ids = {k: v for k, v in tokenizer_ids(tokenizer).items() if k != "unk_token_id"}
        return config_from_profile(dict(profile.get("model", {})), ids)

    def load_public_weights(
        self, model: torch.nn.Module, text_weights: str, imagenet: bool
    ) -> dict[str, str]:
        """The ViT from ``train.vit_weights`` (when ``imagenet``), BERT layers from
        ``text_weights``; then the momentum model restarts as a copy of what was loaded."""
        assert isinstance(model, XVLForPretraining)
        visual = "random"
        if imagenet:
            loaded = load_vit(model, self._vit_weights, self._vit_key)
            visual = "random" if loaded == "random" else "imagenet"
        else:
            log.info("image encoder: random initialisation (train.imagenet is false)")
        text = load_bert(model, text_weights)
        model.reset_momentum()
        origin = {"text": text, "visual": visual}
        if visual == "imagenet":
            origin["visual_weights"] = self._vit_weights
        return origin

    def describe(self, config: XVLConfig) -> str:
        return (
            f"xvl, ViT {config.vision_width}×{config.vision_depth} at {config.image_size}², "
            f"text {config.num_text_layers} + fusion {config.num_fusion_layers} layers, queue "
            f"{config.queue_size}"
        )

    def dataset(self, context: DataContext) -> Any:
        from medvill.xvl.data import XVLShards, xvl_text_spec

        config, settings = context.config, context.settings
        loader_settings = context.loader_settings(
            mlm_probability=settings.mlm_probability,
        )
        spec = xvl_text_spec(context.tokenizer, config.max_text_tokens)
        return XVLShards(context.shards, context.tokenizer, spec, loader_settings, None,
                         context.rank, context.world)  # fmt: skip

    def counts(self, micro: list[dict[str, Any]]) -> list[float]:
        return [float(sum(len(b["keys"]) for b in micro))]

    def to_device(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        from medvill.device import to_device

        return to_device({k: v for k, v in batch.items() if k != "keys"}, device)

    def step(
        self, model: Any, batch: dict[str, Any], normalizers: torch.Tensor, device: torch.device
    ) -> StepOutput:
        inner = getattr(model, "module", model)
        alpha = inner.config.distill_alpha * float(batch["alpha_ramp"])
        # co-learning starts once the distillation ramp is complete (end of the first epoch):
        # before, the teacher is too young to judge which pairs match
        colearn = bool(inner.config.colearning) and float(batch["alpha_ramp"]) >= 1.0
        generator = torch.Generator(device=device).manual_seed(int(batch["mining_seed"]))
        warming_up = int(batch["epoch"]) < inner.config.contrast_warmup_epochs
        out = model(
            images=batch["images"],
            text_ids=batch["text_ids"],
            text_valid=batch["text_valid"],
            mlm_ids=batch["mlm_ids"],
            mlm_labels=batch["mlm_labels"],
            report_ids=batch["report_ids"],
            report_overlap=batch["report_overlap"],
            alpha=alpha,
            generator=generator,
            colearn=colearn,
            fusion_weight=0.0 if warming_up else 1.0,
        )
        share = batch["images"].shape[0] / normalizers[0]
        # ``loss`` is what was optimised: the contrast alone during the warm-up
        stats = torch.stack(
            [out.loss.detach().float(), out.itc_loss.detach().float(),
             out.itm_loss.detach().float(), out.mlm_loss.detach().float(),
             out.itm_accuracy.float(), torch.tensor(alpha, device=device),
             out.noisy_fraction.float()]
        ) * batch["images"].shape[0]  # fmt: skip
        return StepOutput(loss=out.loss * share, stats=stats)

    def row(self, stats: list[float], counts: list[float], world: int) -> dict[str, float]:
        total = max(counts[0], 1.0)
        return {name: value / total for name, value in zip(self.stat_names, stats, strict=True)}
