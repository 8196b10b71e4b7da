"""Does X-VL's image–report contrast (ITC) learn on a processed corpus, and what stops it?

Trains only the contrastive part of an X-VL profile (ViT, text layers, projections, momentum
encoders, queue, momentum distillation: the code path of ``XVLForPretraining.forward`` without
matching and masked words, about 4× cheaper per step) on the ``Train.jsonl`` pairs, images
resized once (no augmentation), and prints every 10 steps the contrastive loss against the
uniform guess ln(batch + queue), the in-batch top-1 (chance 1/batch) and the temperature;
every ``--eval-every`` steps the held-out ITC MRR on the pairs stage's Valid and Test blocks
(label-set relevance, exact random-order MRR beside it) and the mean pairwise cosine of the
held-out image and report features in eval mode (1.0 = the encoder ignores its input).

    OMP_NUM_THREADS=1 python benchmarks/bench_xvl_itc.py --root /tmp/w800 --steps 500 \
        --initializer-range 0.2 --vision-initializer-range 0.2 --queue 32 --momentum 0.9

Defaults are the ``learn`` profile of ``--params``; each flag overrides one field, so
``--initializer-range 0.02 --vision-initializer-range 0 --queue 256 --momentum 0.995`` is the
profile before issue 16's fix (docs/xvl.md §6).
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from medvill.data import decode_image, text_block
from medvill.metrics import retrieval_metrics, score_query
from medvill.tasks.retrieval import DIRECTIONS, query_blocks
from medvill.tokenizer import load_tokenizer, tokenizer_ids
from medvill.xvl.config import config_from_profile
from medvill.xvl.data import report_id, xvl_text_spec
from medvill.xvl.model import XVLForPretraining
from medvill.xvl.objectives import contrastive_loss, momentum_update
from medvill.xvl.retrieval import PairFeatures, chance_mrr
from pipeline.taskfiles.jsonl import read_task_file

OVERRIDES = {"initializer_range": "initializer_range",
             "vision_initializer_range": "vision_initializer_range", "queue": "queue_size",
             "momentum": "momentum", "alpha": "distill_alpha",
             "temperature": "initial_temperature"}  # fmt: skip


def held_out(model: XVLForPretraining, tokenizer, pairs: Path, root: Path) -> dict[str, str]:
    """ITC MRR (random order) per split and direction; feature cosines on the Test split."""
    out = {}
    for split in ("Valid", "Test"):
        for direction, prefix in DIRECTIONS.items():
            rows = read_task_file(pairs / f"{prefix}_Label_{split}.jsonl")
            relevant = np.array([int(r["is_aligned"][0]) for r in rows], dtype=bool)
            features = PairFeatures(model.xvl, tokenizer, [root / r["img"] for r in rows],
                                    [r["text"] for r in rows])  # fmt: skip
            scores, blocks = features.itc(), query_blocks(rows, direction)
            mrr = retrieval_metrics([score_query(scores[b], relevant[b]) for b in blocks])["mrr"]
            chance = np.mean([chance_mrr(len(b), int(relevant[b].sum())) for b in blocks])
            out[f"{split.lower()}_{direction}"] = f"{mrr:.3f} ({chance:.3f})"
            if split == "Test" and direction == "i2r":
                for name, f in (("image", features.image_feats), ("report", features.text_feats)):
                    out[f"cos_{name}"] = f"{float((f @ f.t()).mean()):.4f}"
    model.train()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="processed corpus root")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--profile", default="learn")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    for flag in OVERRIDES:
        parser.add_argument("--" + flag.replace("_", "-"), type=float, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    profiles = yaml.safe_load(args.params.read_text())["pretrain"]["families"]["xvl"]["profiles"]
    fields = dict(profiles[args.profile]["model"])
    for flag, field in OVERRIDES.items():
        value = getattr(args, flag)
        if value is not None:
            fields[field] = int(value) if field == "queue_size" else value
    tokenizer = load_tokenizer(args.root / "models" / args.dataset / "tokenizer")
    ids = {k: v for k, v in tokenizer_ids(tokenizer).items() if k != "unk_token_id"}
    config = config_from_profile(fields, ids)
    torch.manual_seed(args.seed)
    model = XVLForPretraining(config).train()
    pairs = args.root / "data" / "interim" / args.dataset / "pairs"
    train = read_task_file(pairs / "Train.jsonl")
    images = torch.stack([decode_image((args.root / r["img"]).read_bytes(), config.image_size,
                                       None) for r in train])  # fmt: skip
    spec = xvl_text_spec(tokenizer, config.max_text_tokens)
    blocks = [text_block(tokenizer(r["text"], add_special_tokens=False, truncation=True,
                                   max_length=spec.max_tokens)["input_ids"], spec)
              for r in train]  # fmt: skip
    text_ids = torch.from_numpy(np.stack([b[0] for b in blocks]))
    text_valid = torch.from_numpy(np.stack([b[1] for b in blocks]))
    reports = torch.tensor([report_id(r["text"]) for r in train])
    print(f"{len(train)} training pairs; {fields}", flush=True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.01},
         {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}], lr=args.lr,
    )  # fmt: skip
    warmup = max(1, round(0.05 * args.steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: (s + 1) / warmup
                                                 if s < warmup else (args.steps - s) /
                                                 max(1, args.steps - warmup))  # fmt: skip
    rng = np.random.default_rng(args.seed)
    per_epoch = len(train) // args.batch
    x, history, start = model.xvl, [], time.time()
    for step in range(args.steps):
        epoch_step = step % per_epoch
        if epoch_step == 0:
            order = rng.permutation(len(train))
        rows = torch.from_numpy(order[epoch_step * args.batch : (epoch_step + 1) * args.batch])
        image, ids, valid, rid = images[rows], text_ids[rows], text_valid[rows], reports[rows]
        alpha = config.distill_alpha * min(1.0, (step + 1) / per_epoch)  # the trainer's ramp
        image_feat = x.image_features(x.encode_image(image))
        text_feat = x.text_features(x.text.encode_text(ids, valid))
        with torch.no_grad():
            x.temp.clamp_(0.001, 0.5)
            momentum_update(model.model_pairs(), config.momentum)
            _, image_m, _, text_m = model._momentum_features(image, ids, valid)
            filled = int(model.queue_filled.item())
            image_all = torch.cat([image_m.t(), model.image_queue[:, :filled]], 1)
            text_all = torch.cat([text_m.t(), model.text_queue[:, :filled]], 1)
            positives = (rid[:, None] == torch.cat([rid, model.report_queue[:filled]])).float()
        loss, sim_i2t, _ = contrastive_loss(image_feat, text_feat, image_all, text_all,
                                            positives, x.temp, image_m, text_m, alpha)  # fmt: skip
        model._enqueue(image_m, text_m, rid)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        top = sim_i2t[:, : len(rows)].argmax(1)
        history.append((loss.item(), float((rid[top] == rid).float().mean()),
                        math.log(len(rows) + filled), x.temp.item()))  # fmt: skip
        if (step + 1) % 10 == 0:
            itc, top1, uniform, temp = np.mean(history[-10:], axis=0)
            print(f"step {step + 1} ({time.time() - start:.0f} s): itc {itc:.3f} (uniform "
                  f"{uniform:.3f}) in-batch top-1 {top1:.3f} temperature {temp:.3f}",
                  flush=True)  # fmt: skip
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            print(f"held-out step {step + 1}: {held_out(model, tokenizer, pairs, args.root)}",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
