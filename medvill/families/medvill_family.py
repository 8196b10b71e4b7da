"""MedViLL (MLM + image-report matching) as a pretraining family: exactly the behaviour the
trainer had before families existed (same batches, normalisers, losses and metrics)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, ClassVar

import torch

from medvill.config import MedViLLConfig, config_from_profile
from medvill.families.base import DataContext, PretrainFamily, StepOutput
from medvill.model.heads import IGNORE_INDEX
from medvill.model.medvill import (
    MedViLLForPretraining,
    load_pretrained_parts,
    mlm_target_positions,
)
from medvill.tokenizer import tokenizer_ids

log = logging.getLogger(__name__)


class MedViLLFamily(PretrainFamily):
    """Counts: masked tokens and IRM pairs of the global batch; stats: summed MLM loss, IRM
    loss and correct IRM decisions."""

    name: ClassVar[str] = "medvill"
    title: ClassVar[str] = "MedViLL"
    model_class = MedViLLForPretraining
    loss_names: ClassVar[tuple[str, ...]] = ("mlm_loss", "irm_loss")
    extra_metrics: ClassVar[tuple[str, ...]] = ("irm_accuracy",)
    _cnn_weights: str = ""  # train.cnn_weights of the profile build_config last read

    @property
    def stat_names(self) -> tuple[str, ...]:
        return ("mlm_loss", "irm_loss", "irm_correct")

    def build_config(
        self, profile: dict[str, Any], tokenizer: Any, overrides: dict[str, Any]
    ) -> MedViLLConfig:
        # the CNN file is a train setting; remembered here for load_public_weights
        self._cnn_weights = str(profile.get("train", {}).get("cnn_weights", ""))
        model_fields = dict(profile.get("model", {}))
        if overrides.get("mask_type"):
            model_fields["attention_mask_type"] = overrides["mask_type"]
        return config_from_profile({"model": model_fields}, tokenizer_ids(tokenizer))

    def load_public_weights(
        self, model: torch.nn.Module, text_weights: str, imagenet: bool
    ) -> dict[str, str]:
        return load_pretrained_parts(  # type: ignore[arg-type]
            model, text_weights, imagenet, self._cnn_weights
        )

    def prepare(self, model: torch.nn.Module, settings: Any, device: torch.device) -> None:
        model.medvill.set_attention_backend(settings.attention_backend)
        if device.type == "cuda":
            # NHWC is what tensor cores read without transposes.
            model.medvill.visual_backbone.to(memory_format=torch.channels_last)

    def describe(self, config: MedViLLConfig) -> str:
        return f"medvill, mask {config.attention_mask_type}"

    def dataset(self, context: DataContext) -> Any:
        from medvill.data import IrmNegatives, PretrainShards, text_spec_for

        config, settings = context.config, context.settings
        negatives = None
        if context.negatives_path is not None and Path(context.negatives_path).exists():
            negatives = IrmNegatives.read(context.negatives_path)
        else:
            log.warning(
                "no IRM negatives file at %s: every pair is matched", context.negatives_path
            )
        loader_settings = context.loader_settings(
            grid_cells=config.num_visual_features,
            num_sampled_visual=config.num_sampled_visual,
            mask_type=config.attention_mask_type,
            s2s_probability=config.s2s_probability,
            mlm_probability=settings.mlm_probability,
            negative_probability=settings.negative_probability,
        )
        spec = text_spec_for(
            context.tokenizer, config.max_text_tokens, config.attention_mask_type == "noncross"
        )
        return PretrainShards(context.shards, context.tokenizer, spec, loader_settings,
                              negatives, context.rank, context.world)  # fmt: skip

    def counts(self, micro: list[dict[str, Any]]) -> list[float]:
        return [
            float(sum(int((b["mlm_labels"] != IGNORE_INDEX).sum()) for b in micro)),
            float(sum(len(b["irm_labels"]) for b in micro)),
        ]

    def to_device(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        # computed on the host: selecting the MLM slots on the GPU would wait for its count
        positions = mlm_target_positions(batch["mlm_labels"])
        return super().to_device({**batch, "mlm_positions": positions}, device)

    def step(
        self, model: Any, batch: dict[str, Any], normalizers: torch.Tensor, device: torch.device
    ) -> StepOutput:
        out = model(
            images=batch["images"],
            text_ids=batch["text_ids"],
            text_valid=batch["text_valid"],
            visual_cells=batch["visual_cells"],
            mask_type=batch["mask_type"],
            mlm_labels=batch["mlm_labels"],
            irm_labels=batch["irm_labels"],
            mlm_normalizer=normalizers[0],
            irm_normalizer=normalizers[1],
            mlm_positions=batch["mlm_positions"],
        )
        correct = (out.irm_logits.argmax(-1) == batch["irm_labels"]).sum()
        stats = torch.stack([out.mlm_loss.detach().float(), out.irm_loss.detach().float(),
                             correct.float()])  # fmt: skip
        return StepOutput(loss=out.loss, stats=stats)

    def row(self, stats: list[float], counts: list[float], world: int) -> dict[str, float]:
        mlm, irm = stats[0] / world, stats[1] / world
        return {
            "loss": mlm + irm,
            "mlm_loss": mlm,
            "irm_loss": irm,
            "irm_accuracy": stats[2] / max(counts[1], 1.0),
        }
