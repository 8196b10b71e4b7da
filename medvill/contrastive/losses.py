"""The contrastive objectives, as per-sample losses (the trainer sums them and divides by the
global batch size, so DDP × accumulation equals one large batch).

* :func:`info_nce` — image → report and report → image InfoNCE over the cosine similarities of
  a batch (the diagonal pairs are the positives). ConVIRT (Zhang et al., 2020) weights the two
  directions λ = 0.75 / 1 − λ with τ = 0.1; CLIP (Radford et al., 2021) weights them ½ / ½ and
  learns the temperature (:func:`clip_logit_scale`). With negatives from every rank
  (:func:`gather_across_ranks`), the anchors are this rank's samples and the candidates the
  whole step's micro-batches of all ranks.
* :func:`local_intra_sample_loss` — LoVT's local alignment (Müller et al., ECCV 2022): inside
  one sample, each local embedding (an image region or a report sentence) must pick its own
  cross-modal "attended" embedding among those of the sample's other regions/sentences, and
  vice versa; soft positives for spatial neighbours, per-local weights from the attention
  pooling. Facts from the paper's public configuration: τ = 0.3, region positives within 0.5 of
  the feature map's diagonal weighted exp(−d), sentence positives the sentence itself.

All similarities are cosine similarities (embeddings L2-normalised here).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.nn.functional as F

#: CLIP's initial temperature and the cap on its inverse (the logit scale), from the paper.
CLIP_INITIAL_TEMPERATURE = 0.07
CLIP_MAX_LOGIT_SCALE = 100.0


def info_nce(
    image: torch.Tensor,
    text: torch.Tensor,
    temperature: float | torch.Tensor,
    candidates: tuple[torch.Tensor, torch.Tensor, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample InfoNCE losses ``(image_to_report, report_to_image)``, each (B,).

    ``image_to_report[i] = −log softmax_k(cos(v_i, u_k) / τ)[i]`` (the image is the anchor,
    the batch's reports are the candidates); ``report_to_image`` the same with roles swapped.
    ``candidates`` ``(images, reports, offset)``: a larger candidate set (N, d) — every rank's
    embeddings — in which this batch's pairs sit at rows ``offset … offset + B − 1``.
    """
    if image.shape != text.shape or image.dim() != 2:
        raise ValueError(f"expected two (B, d) embeddings, got {image.shape} and {text.shape}")
    all_images, all_texts, offset = candidates if candidates is not None else (image, text, 0)
    if all_images.shape != all_texts.shape or all_images.shape[1:] != image.shape[1:]:
        raise ValueError(
            f"candidates {all_images.shape} and {all_texts.shape} do not match the batch "
            f"{image.shape}"
        )
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    to_reports = image @ F.normalize(all_texts, dim=-1).T / temperature
    to_images = text @ F.normalize(all_images, dim=-1).T / temperature
    targets = offset + torch.arange(image.shape[0], device=image.device)
    image_to_report = F.cross_entropy(to_reports, targets, reduction="none")
    report_to_image = F.cross_entropy(to_images, targets, reduction="none")
    return image_to_report, report_to_image


class _GatherWithGradient(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns this rank's rows of the gradient summed
    over ranks (each rank's loss depends on every rank's rows)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor)
        ctx.rows = slice(dist.get_rank() * tensor.shape[0], (dist.get_rank() + 1) * tensor.shape[0])
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        total = grad.contiguous().clone()
        dist.all_reduce(total)  # a reduce-scatter, written so that gloo runs it too
        return total[ctx.rows]


def gather_across_ranks(embeddings: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Every rank's (B, d) embeddings stacked in rank order, (world · B, d), and the row where
    this rank's start; ``(embeddings, 0)`` outside a multi-rank process group.

    Gradients flow back to every rank's own rows (the gather's backward sums the other ranks'
    gradients of this rank's rows into it), so the loss of one rank's anchors also trains the
    encoders of the ranks that supplied its negatives. Every rank must pass the same B: the
    loader drops partial micro-batches, so they always do. Its own autograd function (a plain
    all-gather, and an all-reduce in the backward; the embeddings are small): both of
    PyTorch's autograd gathers (``torch.distributed.nn.functional.all_gather``,
    ``all_gather_tensor_autograd``) warn as deprecated in torch 2.14.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return embeddings, 0
    gathered = _GatherWithGradient.apply(embeddings.contiguous())
    return gathered, dist.get_rank() * embeddings.shape[0]


def clip_logit_scale(log_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's learnable inverse temperature ``exp(log_scale)``, clamped at 100 (the paper's cap,
    which keeps training stable); its parameter starts at ``log(1 / 0.07)``."""
    return log_scale.exp().clamp(max=CLIP_MAX_LOGIT_SCALE)


def initial_log_logit_scale(temperature: float = CLIP_INITIAL_TEMPERATURE) -> float:
    """The logit-scale parameter's start, ``log(1 / τ₀)`` (CLIP: τ₀ = 0.07)."""
    return math.log(1.0 / temperature)


@functools.lru_cache(maxsize=8)
def grid_positive_weights(grid: int, threshold: float, smooth: float) -> torch.Tensor:
    """(g², g²) positive weights between the cells of a g × g feature map, LoVT's spatial
    smoothing: cells whose distance, relative to the map's diagonal, is ≤ ``threshold`` are
    positives of weight ``exp(−smooth · d)``; rows are normalised to sum 1."""
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    coordinates = torch.stack([rows.flatten(), cols.flatten()], dim=1).float()
    coordinates = coordinates / math.sqrt(2.0 * grid * grid)
    distances = torch.cdist(coordinates, coordinates)
    weights = torch.exp(-smooth * distances) * (distances <= threshold + 1e-9)
    return weights / weights.sum(dim=1, keepdim=True)


def local_intra_sample_loss(
    local: torch.Tensor,
    attended: torch.Tensor,
    temperature: float,
    weights: torch.Tensor,
    valid: torch.Tensor | None = None,
    positives: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(local_to_attended, attended_to_local)`` losses, each (B,).

    ``local``, ``attended``: (B, N, d) — the N local embeddings of one modality and, for each,
    the other modality's embedding attended from it. For local i the positives are attended
    j with weight ``positives[i, j]`` (identity when None) and every attended j of the same
    sample is in the denominator::

        ℓ_i = −Σ_j P_ij s_ij / τ + log Σ_j exp(s_ij / τ),   s_ij = cos(local_i, attended_j)

    and the reverse direction uses s_ji. ``weights`` (B, N) weigh the locals (renormalised over
    the valid ones to sum 1 per sample); ``valid`` (B, N) marks real locals (padding sentences
    are neither anchors nor candidates).
    """
    batch, count, _ = local.shape
    if valid is None:
        valid = torch.ones(batch, count, dtype=torch.bool, device=local.device)
    if positives is None:
        positives = torch.eye(count, device=local.device)
    positives = positives.to(local.dtype).expand(batch, count, count) * valid[:, None, :]
    positives = positives / positives.sum(-1, keepdim=True).clamp_min(1e-12)
    weights = weights * valid
    weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-12)
    scores = (
        torch.bmm(F.normalize(local, dim=-1), F.normalize(attended, dim=-1).transpose(1, 2))
        / temperature
    )  # (B, N, N): [b, i, j] = s(local_i, attended_j)
    padding = torch.zeros_like(scores[:, :1, :]).masked_fill(~valid[:, None, :], float("-inf"))

    def direction(similarity: torch.Tensor) -> torch.Tensor:
        positive = (positives * similarity).sum(-1)
        per_local = torch.logsumexp(similarity + padding, dim=-1) - positive
        return (weights * per_local.masked_fill(~valid, 0.0)).sum(-1)

    return direction(scores), direction(scores.transpose(1, 2))
