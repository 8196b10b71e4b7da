"""X-VL training-step cost on this machine: parameters and forward + backward time of one batch
at a profile's shapes (random weights, random inputs: no data or weights needed).

    python benchmarks/bench_xvl.py --profile paper --batch 2 --threads 1
    python benchmarks/bench_xvl.py --profile demo --batch 8 --threads 1 2

Why ``--threads``: on a machine shared with other jobs, PyTorch's intra-op threads spin-wait
for each other; with every core busy, two threads can be many times slower than one.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import yaml

from medvill.xvl.config import config_from_profile
from medvill.xvl.model import XVLForPretraining

IDS = {"vocab_size": 30522, "pad_token_id": 0, "cls_token_id": 101, "sep_token_id": 102,
       "mask_token_id": 103}  # fmt: skip


def step_seconds(model: XVLForPretraining, batch: int, steps: int) -> float:
    """Median wall time of ``steps`` forward + backward passes after one warm-up."""
    cfg = model.config
    length = cfg.text_slots
    images = torch.randn(batch, 3, cfg.image_size, cfg.image_size)
    ids = torch.randint(1000, 2000, (batch, length))
    valid = torch.ones(batch, length, dtype=torch.bool)
    labels = torch.full_like(ids, -100)
    labels[:, 1 : 1 + max(1, length * 15 // 100)] = ids[:, 1 : 1 + max(1, length * 15 // 100)]
    reports = torch.arange(batch)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        out = model(images, ids, valid, ids, labels, reports, torch.eye(batch), alpha=0.4)
        out.loss.backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = parser.parse_args()
    profiles = yaml.safe_load(args.params.read_text())["pretrain"]["families"]["xvl"]["profiles"]
    config = config_from_profile(profiles[args.profile]["model"], IDS)
    torch.manual_seed(0)
    model = XVLForPretraining(config)
    model.train()
    online = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"profile {args.profile}: {online / 1e6:.1f} M trainable parameters (+ the same in "
          f"the momentum copy), queue {config.queue_size}, image {config.image_size}², "
          f"{config.text_slots} text slots")  # fmt: skip
    for threads in args.threads:
        torch.set_num_threads(threads)
        seconds = step_seconds(model, args.batch, args.steps)
        print(f"threads {threads}: forward + backward of batch {args.batch}: {seconds:.2f} s "
              f"({args.batch / seconds:.2f} samples/s)")  # fmt: skip


if __name__ == "__main__":
    main()
