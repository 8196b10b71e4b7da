"""Does X-VL's co-learning option (docs/xvl.md §2) help when some pairs do not match?

A toy where matching is learnable in seconds on a CPU: flat bright or dark images, reports
that say "bright" or "dark" in a few wordings. A share of the training pairs (``--noise``) get
a report of the other class: uncurated pairs. The same tiny X-VL is pretrained twice from the
same seed — co-learning off and on (threshold ``--threshold``, starting after the
distillation ramp, as the trainer does) — and measured on:

* clean held-out pairs: matching accuracy and AUROC (each image with its own report and with
  one of the other class) and contrastive retrieval accuracy (does the image's nearest report
  say its class?);
* the training pairs: how well the final teacher's confidence (the rank co-learning
  thresholds) separates the mismatched pairs from the clean ones (AUROC), the share of each it
  flags, and the teacher's matching probability on each.

    OMP_NUM_THREADS=1 python benchmarks/bench_xvl_colearning.py --steps 300 --noise 0.3

Last line: ``colearning: noise=… off_itm_auroc=… on_itm_auroc=… … on_flagged_noisy=…``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from medvill import metrics as M
from medvill.xvl.config import config_from_profile
from medvill.xvl.model import XVLForPretraining
from medvill.xvl.objectives import rank_confidence

WORDS = {1: ["bright", "white", "dense"], 0: ["dark", "black", "lucent"]}
VOCAB = ["[PAD]", "[CLS]", "[SEP]", "[MASK]", "the", "image", "is", "."]
VOCAB += [w for words in WORDS.values() for w in words]
IDS = {"vocab_size": len(VOCAB), "pad_token_id": 0, "cls_token_id": 1, "sep_token_id": 2,
       "mask_token_id": 3}  # fmt: skip
MODEL = {
    "vision_width": 32, "vision_depth": 1, "vision_heads": 2, "patch_size": 8, "image_size": 16,
    "vision_drop_path": 0.0, "hidden_size": 32, "num_text_layers": 1, "num_fusion_layers": 1,
    "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 16,
    "max_text_tokens": 6, "embed_dim": 16, "queue_size": 64, "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}  # fmt: skip


def images_of(classes: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
    """Flat images, bright (1) or dark (0), with pixel noise."""
    base = np.where(classes[:, None, None, None] == 1, 0.8, -0.8)
    return torch.tensor(base + rng.normal(0, 0.3, (len(classes), 3, 16, 16)), dtype=torch.float32)


def reports_of(classes: np.ndarray, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
    """ "[CLS] the image is <word> . [SEP]" token ids and a report id per sample (its word)."""
    words = [WORDS[int(c)][int(rng.integers(3))] for c in classes]
    ids = [[1, 4, 5, 6, VOCAB.index(w), 7, 2] for w in words]
    return torch.tensor(ids), np.array([VOCAB.index(w) for w in words])


def masked(ids: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One word of each report masked (the class word half of the time)."""
    labels = torch.full_like(ids, -100)
    out = ids.clone()
    for i in range(len(ids)):
        j = 4 if rng.random() < 0.5 else int(rng.integers(1, 4))
        labels[i, j], out[i, j] = ids[i, j], 3
    return out, labels


def train(
    colearning: bool, data: dict, steps: int, threshold: float, ramp: int, seed: int
) -> XVLForPretraining:
    torch.manual_seed(seed)
    model = XVLForPretraining(config_from_profile(
        {**MODEL, "colearning": colearning, "colearning_threshold": threshold}, IDS))  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.02)
    rng = np.random.default_rng(seed)
    n, batch = len(data["classes"]), 16
    model.train()
    for step in range(steps):
        pick = rng.choice(n, batch, replace=False)
        ids = data["ids"][pick]
        mlm_ids, mlm_labels = masked(ids, rng)
        reports = torch.tensor(data["report_ids"][pick])
        overlap = (reports[:, None] == reports[None]).float()
        alpha = 0.4 * min(1.0, (step + 1) / ramp)
        out = model(
            data["images"][pick], ids, torch.ones_like(ids, dtype=torch.bool), mlm_ids,
            mlm_labels, reports, overlap, alpha=alpha,
            generator=torch.Generator().manual_seed(seed * 100003 + step),
            colearn=colearning and step + 1 >= ramp,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  step {step} loss {out.loss.item():.3f} itc {out.itc_loss.item():.3f} "
                  f"itm {out.itm_loss.item():.3f} noisy {out.noisy_fraction.item():.2f}",
                  flush=True)  # fmt: skip
    return model.eval()


@torch.no_grad()
def evaluate(model: XVLForPretraining, train: dict, test: dict, threshold: float) -> dict:
    x = model.xvl
    valid = torch.ones_like(test["ids"], dtype=torch.bool)
    # matching: each image with its own report and with the report of a sample of the other class
    other = np.array([int(np.flatnonzero(test["classes"] != c)[i % 3])
                      for i, c in enumerate(test["classes"])])  # fmt: skip
    own = x(test["images"], test["ids"], valid).itm_logits.softmax(-1)[:, 1]
    swapped = x(test["images"], test["ids"][other], valid).itm_logits.softmax(-1)[:, 1]
    itm = float(((own > 0.5).float().mean() + (swapped <= 0.5).float().mean()) / 2)
    truth = np.r_[np.ones(len(own)), np.zeros(len(swapped))]
    itm_auroc = M.auroc(truth, np.r_[own.numpy(), swapped.numpy()])
    out = x(test["images"], test["ids"], valid)
    nearest = (out.image_feat @ out.text_feat.t()).argmax(1).numpy()
    itc = float(np.mean(test["classes"][nearest] == test["classes"]))
    # the teacher's view of the training pairs: does it single out the mismatched ones?
    tvalid = torch.ones_like(train["ids"], dtype=torch.bool)
    text_m = model.text_m.encode_text(train["ids"], tvalid)
    image_m = model.visual_encoder_m.forward_features(train["images"])
    p = model.teacher_match(text_m, tvalid, image_m).numpy()
    image_feat_m = F.normalize(model.vision_proj_m(image_m[:, 0]), dim=-1)
    text_feat_m = F.normalize(model.text_proj_m(text_m[:, 0]), dim=-1)
    reports = torch.tensor(train["report_ids"])
    # the confidence co-learning thresholds, over the whole training set as one batch
    confidence = rank_confidence(
        image_feat_m @ text_feat_m.t(), reports[:, None] == reports[None]
    ).numpy()
    noisy = train["noisy"]
    return {
        "itm_accuracy": itm,
        "itm_auroc": itm_auroc,
        "itc_accuracy": itc,
        "flag_auroc": M.auroc(noisy.astype(float), -confidence),
        "flagged_noisy": float(np.mean(confidence[noisy] < threshold)),
        "flagged_clean": float(np.mean(confidence[~noisy] < threshold)),
        "teacher_itm_p_clean_median": float(np.median(p[~noisy])),
        "teacher_itm_p_noisy_median": float(np.median(p[noisy])),
    }


def build(n: int, noise: float, rng: np.random.Generator) -> dict:
    classes = rng.integers(0, 2, n)
    noisy = rng.random(n) < noise
    report_classes = np.where(noisy, 1 - classes, classes)
    ids, report_ids = reports_of(report_classes, rng)
    return {"classes": classes, "images": images_of(classes, rng), "ids": ids,
            "report_ids": report_ids, "noisy": noisy}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--noise", type=float, default=0.3)
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--ramp", type=int, default=50, help="steps before co-learning starts")
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    train_set, test_set = build(args.n_train, args.noise, rng), build(64, 0.0, rng)
    print(f"{args.n_train} training pairs, {int(train_set['noisy'].sum())} mismatched; "
          f"{args.steps} steps, co-learning after {args.ramp}")  # fmt: skip
    results = {}
    for name, on in (("off", False), ("on", True)):
        start = time.perf_counter()
        print(f"co-learning {name}:", flush=True)
        model = train(on, train_set, args.steps, args.threshold, args.ramp, args.seed)
        results[name] = evaluate(model, train_set, test_set, args.threshold)
        print(f"  {results[name]} ({time.perf_counter() - start:.0f} s)", flush=True)
    off, on = results["off"], results["on"]
    print(
        f"colearning: noise={args.noise} steps={args.steps} off_itm_auroc={off['itm_auroc']:.3f} "
        f"on_itm_auroc={on['itm_auroc']:.3f} off_itc={off['itc_accuracy']:.3f} "
        f"on_itc={on['itc_accuracy']:.3f} off_flag_auroc={off['flag_auroc']:.3f} "
        f"on_flag_auroc={on['flag_auroc']:.3f} on_flagged_noisy={on['flagged_noisy']:.3f} "
        f"on_flagged_clean={on['flagged_clean']:.3f}"
    )


if __name__ == "__main__":
    main()
