"""Batch plans: micro-batch × ranks × accumulation = the profile's global batch, any GPU count."""

from __future__ import annotations

import pytest

from medvill.batchplan import BatchPlan, plan_batches


@pytest.mark.parametrize(
    ("world", "micro", "accumulation"),
    [(1, 32, 4), (2, 32, 2), (4, 32, 1), (8, 16, 1), (16, 8, 1)],
)
def test_paper_profile_plans_for_1_to_16_gpus(world, micro, accumulation):
    """The README's 8-GPU command (global 128, max micro 32) starts: 16 × 8 × 1."""
    plan = plan_batches(128, world, 32)
    assert (plan.micro_batch_size, plan.world, plan.accumulation) == (micro, world, accumulation)
    assert plan.micro_batch_size * plan.world * plan.accumulation == 128


@pytest.mark.parametrize("world", range(1, 17))
@pytest.mark.parametrize(("global_batch", "max_micro"), [(128, 32), (96, 24), (64, 5), (48, 7)])
def test_every_divisible_world_gets_the_largest_micro_batch_that_fits(world, global_batch,
                                                                        max_micro):  # fmt: skip
    if global_batch % world:
        with pytest.raises(ValueError, match=f"cannot be split over {world} ranks"):
            plan_batches(global_batch, world, max_micro)
        return
    plan = plan_batches(global_batch, world, max_micro)
    per_rank = global_batch // world
    assert plan.global_batch_size == global_batch
    assert plan.micro_batch_size * plan.accumulation == per_rank
    assert plan.micro_batch_size <= max_micro
    bigger = [m for m in range(plan.micro_batch_size + 1, max_micro + 1) if per_rank % m == 0]
    assert bigger == []


def test_indivisible_world_names_the_sizes_that_work():
    with pytest.raises(ValueError, match=r"world sizes that work: \[1, 2, 4, 8, 16, 32, 64\]"):
        plan_batches(128, 3, 32)


def test_plan_round_trips_through_a_checkpoint_dict_and_checks_itself():
    plan = plan_batches(8, 2, 2)
    assert plan.describe() == "global batch 8 = micro-batch 2 × 2 rank(s) × 2 accumulation step(s)"
    assert BatchPlan.from_dict(plan.as_dict()) == plan
    with pytest.raises(ValueError, match="gives 6, not 8"):
        BatchPlan(8, 3, 2, 1)
    with pytest.raises(ValueError, match="must be ≥ 1"):
        plan_batches(8, 1, 0)


def test_the_old_fixed_micro_batch_setting_is_refused_with_its_new_name():
    from medvill.pretrain import TrainSettings

    with pytest.raises(ValueError, match="now max_micro_batch_size"):
        TrainSettings.from_dict({"micro_batch_size": 32})
    assert TrainSettings.from_dict({"max_micro_batch_size": 16}).max_micro_batch_size == 16
