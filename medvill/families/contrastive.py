"""ConVIRT, CLIP and LoVT as pretraining families: one dual-encoder model
(:mod:`medvill.contrastive`) with three objectives.

Negatives are the other samples of the same micro-batch on the same rank (as in LoVT's code,
whose batch of 32 is accumulated 16 times): ``max_micro_batch_size`` is therefore the
contrastive batch, and the paper profiles fix it. With ``model.gather_negatives: true`` the
global InfoNCE takes its candidates from every rank's micro-batch (all-gathered with gradient
flow, :func:`medvill.contrastive.losses.gather_across_ranks`): the contrastive batch is then
micro-batch × ranks and the logged loss that of those larger batches. Counts: samples; each
objective's per-sample losses are summed and divided by the global batch's sample count.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from medvill.contrastive.config import ContrastiveConfig
from medvill.contrastive.model import ContrastiveModel, load_public_weights
from medvill.families.base import DataContext, PretrainFamily, StepOutput
from medvill.tokenizer import tokenizer_ids


class ContrastiveFamily(PretrainFamily):
    """Shared by the three; subclasses name the objective and its losses."""

    objective: ClassVar[str]
    card_kind: ClassVar[str] = "contrastive_pretraining"
    model_class = ContrastiveModel
    #: the model's per-sample loss names, logged as ``<name>_loss``
    objectives: ClassVar[tuple[str, ...]] = ("image_to_report", "report_to_image")

    @property
    def stat_names(self) -> tuple[str, ...]:
        return ("loss", *self.loss_names)

    def build_config(
        self, profile: dict[str, Any], tokenizer: Any, overrides: dict[str, Any]
    ) -> ContrastiveConfig:
        if overrides.get("mask_type"):
            raise ValueError(f"--mask applies to medvill only, not to {self.name}")
        fields = dict(profile.get("model", {}))
        given = fields.pop("objective", self.objective)
        if given != self.objective:
            raise ValueError(f"a {self.name} profile cannot set objective {given!r}")
        return ContrastiveConfig(objective=self.objective, **fields, **tokenizer_ids(tokenizer))

    def load_public_weights(
        self, model: torch.nn.Module, text_weights: str, imagenet: bool
    ) -> dict[str, str]:
        return load_public_weights(model, text_weights, imagenet)  # type: ignore[arg-type]

    def prepare(self, model: torch.nn.Module, settings: Any, device: torch.device) -> None:
        if device.type == "cuda":
            model.visual_backbone.to(memory_format=torch.channels_last)

    def describe(self, config: ContrastiveConfig) -> str:
        return (
            f"{self.name}: τ {config.global_temperature}"
            f"{' (learnable)' if config.learnable_temperature else ''}, image→report weight "
            f"{config.image_to_report_weight}, text {config.text_input}, negatives "
            f"{'from every rank' if config.gather_negatives else 'from the rank micro-batch'}"
        )

    def dataset(self, context: DataContext) -> Any:
        from medvill.contrastive.data import ContrastiveShards, ReportLayout

        config, tokenizer = context.config, context.tokenizer
        loader_settings = context.loader_settings()
        layout = ReportLayout(
            max_tokens=config.max_text_tokens,
            max_sentences=config.max_sentences,
            pad_id=tokenizer.pad_token_id,
            cls_id=tokenizer.cls_token_id,
            sep_id=tokenizer.sep_token_id,
            random_sentence=config.text_input == "random_sentence",
        )
        return ContrastiveShards(context.shards, tokenizer, None, loader_settings, None,
                                 context.rank, context.world, layout=layout)  # fmt: skip

    def counts(self, micro: list[dict[str, Any]]) -> list[float]:
        return [float(sum(len(b["keys"]) for b in micro))]

    def step(
        self, model: Any, batch: dict[str, Any], normalizers: torch.Tensor, device: torch.device
    ) -> StepOutput:
        out = model(
            images=batch["images"],
            text_ids=batch["text_ids"],
            text_valid=batch["text_valid"],
            sentence_index=batch["sentence_index"],
            normalizer=normalizers[0],
        )
        parts = [out.losses[name].detach().float().sum() for name in self.objectives]
        stats = torch.stack([out.per_sample.detach().float().sum(), *parts]) / normalizers[0]
        return StepOutput(loss=out.loss, stats=stats)

    def row(self, stats: list[float], counts: list[float], world: int) -> dict[str, float]:
        values = [value / world for value in stats]
        return dict(zip(self.stat_names, values, strict=True))


class ConVIRTFamily(ContrastiveFamily):
    name: ClassVar[str] = "convirt"
    title: ClassVar[str] = "ConVIRT"
    objective: ClassVar[str] = "convirt"
    loss_names: ClassVar[tuple[str, ...]] = ("image_to_report_loss", "report_to_image_loss")


class CLIPFamily(ContrastiveFamily):
    name: ClassVar[str] = "clip"
    title: ClassVar[str] = "CLIP"
    objective: ClassVar[str] = "clip"
    loss_names: ClassVar[tuple[str, ...]] = ("image_to_report_loss", "report_to_image_loss")


class LoVTFamily(ContrastiveFamily):
    name: ClassVar[str] = "lovt"
    title: ClassVar[str] = "LoVT"
    objective: ClassVar[str] = "lovt"
    objectives: ClassVar[tuple[str, ...]] = (
        "image_to_report", "report_to_image", "local_image", "local_report",
    )  # fmt: skip
    loss_names: ClassVar[tuple[str, ...]] = (
        "image_to_report_loss", "report_to_image_loss", "local_image_loss", "local_report_loss",
    )  # fmt: skip
