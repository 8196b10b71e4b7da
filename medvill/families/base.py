"""What a model family gives the shared pretraining loop (:mod:`medvill.pretrain`).

The loop owns everything that is the same for every family: the batch plan, DDP and gradient
accumulation, the precision policy, the optimizer and schedule, checkpoints and exact resume,
``metrics.csv``/TensorBoard and the summary. A family owns what is its own: its config and
``PreTrainedModel`` (saved with ``save_pretrained``, safetensors), how it starts from public
weights, the dataset that turns shard samples into its batches, and a forward that returns the
loss to back-propagate plus named per-objective losses.

Normalisation contract (what makes DDP × accumulation equal one large batch): the loop sums
:meth:`PretrainFamily.counts` of a step's micro-batches over all ranks and hands
``counts / world`` to :meth:`PretrainFamily.step`; a family divides its summed per-item losses
by those normalisers, so the gradients DDP averages over ranks are those of the global batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

#: The image weights MedViLL's ResNet starts from, as a refusal message names them.
RESNET_WEIGHTS_HINT = (
    "ImageNet weights for the ResNet (torchvision's file in $TORCH_HOME/hub/checkpoints)"
)


@dataclass(frozen=True)
class StepOutput:
    """One micro-batch's forward: ``loss`` (normalised, to back-propagate) and ``stats`` (a 1-D
    detached float tensor, one value per :attr:`PretrainFamily.stat_names`, summed by the loop
    over micro-batches and ranks before :meth:`PretrainFamily.row` turns it into metrics)."""

    loss: torch.Tensor
    stats: torch.Tensor


class PretrainFamily(ABC):
    """A pretraining model family; one instance per registered name (``--model <name>``)."""

    #: registry name, ``medvill pretrain --model <name>``
    name: ClassVar[str]
    #: human-readable title (plots, logs)
    title: ClassVar[str]
    #: per-objective losses, logged after ``loss`` in metrics.csv (``final_<name>`` in the summary)
    loss_names: ClassVar[tuple[str, ...]]
    #: further per-step metrics (e.g. accuracies), logged after the losses
    extra_metrics: ClassVar[tuple[str, ...]] = ()
    #: the model-card kind (medvill.modelcard) of its pretraining checkpoints
    card_kind: ClassVar[str] = "pretraining"
    #: the ``PreTrainedModel`` subclass it trains (built from its config, saved and reloaded
    #: with save_pretrained / from_pretrained)
    model_class: ClassVar[Any]
    #: what to put where when ``require_pretrained`` finds the image weights missing
    visual_weights_hint: ClassVar[str] = RESNET_WEIGHTS_HINT
    #: DDP re-sends every buffer from rank 0 before each forward; a family whose buffers are
    #: identical on every rank by construction (X-VL's feature queues) turns that off
    broadcast_buffers: ClassVar[bool] = True

    @property
    def metric_columns(self) -> tuple[str, ...]:
        return ("step", "epoch", "loss", *self.loss_names, *self.extra_metrics, "lr",
                "samples_per_s", "elapsed_s")  # fmt: skip

    # ---- the model
    @abstractmethod
    def build_config(
        self, profile: dict[str, Any], tokenizer: Any, overrides: dict[str, Any]
    ) -> Any:
        """The family's ``PretrainedConfig`` from a profile's ``model`` block and the tokenizer
        (``overrides``: CLI options such as ``--mask``)."""

    def new_model(self, config: Any) -> torch.nn.Module:
        """A freshly initialised :attr:`model_class`."""
        return self.model_class(config)

    def from_checkpoint(self, folder: Path) -> torch.nn.Module:
        """The model saved in a checkpoint folder (``from_pretrained``, safetensors)."""
        return self.model_class.from_pretrained(str(folder))

    @abstractmethod
    def load_public_weights(
        self, model: torch.nn.Module, text_weights: str, imagenet: bool
    ) -> dict[str, str]:
        """Start from public weights where available; ``{"text": …, "visual": …}`` says what
        each part started from ("random" when the weights could not be had)."""

    def prepare(  # noqa: B027 - an optional hook: families without per-run settings skip it
        self, model: torch.nn.Module, settings: Any, device: torch.device
    ) -> None:
        """Per-run settings on the model (attention backend, CUDA memory format, …)."""

    def describe(self, config: Any) -> str:
        """A few words for the start-of-run log line."""
        return self.name

    # ---- the data
    @abstractmethod
    def dataset(self, context: DataContext) -> Any:
        """The rank's iterable of collated micro-batches: a
        :class:`medvill.data.PretrainShards` (or subclass), so the loop's resume and
        stream-split rules hold."""

    # ---- one micro-batch
    @abstractmethod
    def counts(self, micro: list[dict[str, Any]]) -> list[float]:
        """Host-side item counts of one step's micro-batches (the loss normalisers' sources)."""

    @property
    @abstractmethod
    def stat_names(self) -> tuple[str, ...]:
        """What :attr:`StepOutput.stats` holds, in order."""

    @abstractmethod
    def step(
        self,
        model: Any,
        batch: dict[str, Any],
        normalizers: torch.Tensor,
        device: torch.device,
    ) -> StepOutput:
        """Forward one micro-batch (already on ``device``; ``model`` may be DDP-wrapped)."""

    @abstractmethod
    def row(self, stats: list[float], counts: list[float], world: int) -> dict[str, float]:
        """Global-batch metrics: ``loss``, every :attr:`loss_names` and :attr:`extra_metrics`."""

    def to_device(self, batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """Host batch → device batch (override to add host-computed indices first).

        The pretraining loader's 8-bit images (``image_sources`` + host-side ``crop_boxes``,
        :mod:`medvill.data`) are cropped, resized and normalised here, on ``device``, into
        ``images``; the crop boxes stay on the host (their sizes shape the kernels).
        """
        from medvill.device import to_device
        from medvill.imagebatch import model_images

        layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
        moved = to_device({k: v for k, v in batch.items() if k != "crop_boxes"}, device)
        if "image_sources" in moved:
            moved["images"] = model_images(
                moved.pop("image_sources"), batch["crop_boxes"], batch["image_size"], layout
            )
        if device.type == "cuda" and "images" in moved:
            moved["images"] = moved["images"].contiguous(memory_format=torch.channels_last)
        return moved


@dataclass(frozen=True)
class DataContext:
    """What a family needs to build its dataset for one rank."""

    shards: Any  # medvill.data.SplitShards of the train split
    tokenizer: Any
    config: Any  # the family's config
    settings: Any  # medvill.pretrain.TrainSettings
    micro_batch_size: int
    accumulation: int
    negatives_path: Path | None
    rank: int
    world: int

    def loader_settings(self, **family_fields: Any) -> Any:
        """The :class:`medvill.data.LoaderSettings` every family shares (batch plan, workers,
        shuffle, seed, image size, augmentation) plus the family's own ``family_fields``."""
        from medvill.data import LoaderSettings

        return LoaderSettings(
            batch_size=self.micro_batch_size,
            accumulation=self.accumulation,
            num_workers=self.settings.num_workers,
            shuffle_buffer=self.settings.shuffle_buffer,
            seed=self.settings.seed,
            image_size=self.config.image_size,
            augment=self.settings.augment,
            **family_fields,
        )
