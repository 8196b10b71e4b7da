"""Does a pretrained MedViLL use the image to predict masked words?

Masked-word cross-entropy and accuracy on one split's matched pairs, twice over the same
masked reports: with each report's own image, and with the batch's images rolled by one (every
report sees another study's image). Equal numbers mean the masked words are predicted from
the report alone and pretraining has learned nothing cross-modal (README, issue 13).

    python benchmarks/bench_mlm_image.py --root <project root> [--dataset synthetic]
                                         [--split valid] [--checkpoint …]

Last line: ``mlm_image: own_ce=… other_ce=… own_acc=… other_acc=… tokens=…``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from medvill.data import LoaderSettings, PretrainShards, make_loader, read_index, text_spec_for
from medvill.imagebatch import model_images
from medvill.model.heads import IGNORE_INDEX
from medvill.model.medvill import MedViLLForPretraining
from medvill.tokenizer import load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--split", default="valid")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=5, help="seeds the masking")
    args = parser.parse_args()
    checkpoint = args.checkpoint or args.root / "models" / args.dataset / "pretrain" / "final"
    model = MedViLLForPretraining.from_pretrained(str(checkpoint)).eval()
    config = model.config
    tokenizer = load_tokenizer(checkpoint)
    settings = LoaderSettings(
        batch_size=16, num_workers=0, shuffle_buffer=1, seed=args.seed,
        image_size=config.image_size, augment=False, grid_cells=config.num_visual_features,
        num_sampled_visual=config.num_visual_features, mask_type=config.attention_mask_type,
    )  # fmt: skip
    spec = text_spec_for(
        tokenizer, config.max_text_tokens, config.attention_mask_type == "noncross"
    )
    shards = read_index(args.root / "data" / "shards" / args.dataset / "index.json", args.split)
    data = PretrainShards(shards, tokenizer, spec, settings, None, 0, 1)  # all pairs matched
    totals = {"own": [0.0, 0, 0], "other": [0.0, 0, 0]}  # summed CE, tokens, correct
    with torch.no_grad():
        for batch in make_loader(data, args.seed):
            images = model_images(batch["image_sources"], batch["crop_boxes"], batch["image_size"])
            labels = batch["mlm_labels"].reshape(-1)
            labels = labels[labels != IGNORE_INDEX]
            for name, shown in (("own", images), ("other", images.roll(1, 0))):
                out = model(
                    images=shown,
                    text_ids=batch["text_ids"],
                    text_valid=batch["text_valid"],
                    visual_cells=batch["visual_cells"],
                    mask_type=batch["mask_type"],
                    mlm_labels=batch["mlm_labels"],
                )
                total = totals[name]
                total[0] += float(out.mlm_loss) * labels.numel()  # the mean over its tokens
                total[1] += labels.numel()
                total[2] += int((out.mlm_logits.argmax(-1) == labels).sum())
    (own_ce, tokens, own_right), (other_ce, _, other_right) = totals["own"], totals["other"]
    print(f"mlm_image: own_ce={own_ce / tokens:.3f} other_ce={other_ce / tokens:.3f} "
          f"own_acc={own_right / tokens:.3f} other_acc={other_right / tokens:.3f} "
          f"tokens={tokens}")  # fmt: skip


if __name__ == "__main__":
    main()
