"""How one global batch is split over ranks and micro-batches, for any world size.

The paper's global batch (128) is a property of the optimisation; how many GPUs run it is
not. A profile therefore states the global batch and the largest micro-batch one device holds
(``max_micro_batch_size``), and the plan is derived per launch:

    micro_batch_size × world × accumulation = global_batch_size

with the largest micro-batch ≤ the maximum that divides the per-rank share (fewest
accumulation steps, best device use). Paper profile, global 128, max micro 32:
1 GPU 32 × 4, 2 GPUs 32 × 2, 4 GPUs 32 × 1, 8 GPUs 16 × 1, 16 GPUs 8 × 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class BatchPlan:
    """One launch's split of the global batch (stored in every checkpoint)."""

    global_batch_size: int
    micro_batch_size: int  # per rank, per forward/backward
    world: int  # ranks (GPUs) in the process group
    accumulation: int  # micro-batches per rank per optimizer step

    def __post_init__(self) -> None:
        product = self.micro_batch_size * self.world * self.accumulation
        if product != self.global_batch_size:
            raise ValueError(
                f"batch plan {self.describe()} gives {product}, not {self.global_batch_size}"
            )

    def describe(self) -> str:
        return (
            f"global batch {self.global_batch_size} = micro-batch {self.micro_batch_size} × "
            f"{self.world} rank(s) × {self.accumulation} accumulation step(s)"
        )

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchPlan:
        return cls(**{k: int(data[k]) for k in ("global_batch_size", "micro_batch_size",
                                                 "world", "accumulation")})  # fmt: skip


def plan_batches(global_batch_size: int, world: int, max_micro_batch_size: int) -> BatchPlan:
    """The plan for ``world`` ranks: each rank takes ``global / world`` samples per step, in
    the largest micro-batch ≤ ``max_micro_batch_size`` that divides that share.

    A world size that does not divide the global batch is refused with the sizes that would
    work, since any other split changes the optimisation (the batch the paper trained with).
    """
    if global_batch_size < 1 or max_micro_batch_size < 1 or world < 1:
        raise ValueError(
            f"global_batch_size ({global_batch_size}), max_micro_batch_size "
            f"({max_micro_batch_size}) and world ({world}) must be ≥ 1"
        )
    if global_batch_size % world:
        usable = [w for w in range(1, min(global_batch_size, 64) + 1) if global_batch_size % w == 0]
        raise ValueError(
            f"global_batch_size {global_batch_size} cannot be split over {world} ranks "
            f"(each rank needs a whole share); world sizes that work: {usable}"
        )
    per_rank = global_batch_size // world
    micro = max(d for d in range(1, min(per_rank, max_micro_batch_size) + 1) if per_rank % d == 0)
    return BatchPlan(global_batch_size, micro, world, per_rank // micro)
