"""Pointing game of a pretrained X-VL on the synthetic corpus: does a finding's word's
attention peak inside the finding's drawn box more often than chance?

The corpus, its pipeline and the model first (2 CPU cores: set OMP_NUM_THREADS=1 on a busy
machine):

    medvill-prep synthesize --out data/raw/synthetic
    medvill-prep all --dataset synthetic --adapter synthetic --raw data/raw/synthetic
    medvill tokenizer --dataset synthetic
    medvill pretrain --model xvl --dataset synthetic --profile learn
    python benchmarks/bench_xvl_pointing.py --dataset synthetic

Last line: ``pointing: accuracy=… gradcam_accuracy=… chance=… trials=…`` (all findings).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medvill.xvl.pointing import pointing_game


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=0, help="samples at most (0 = all)")
    parser.add_argument("--root", type=Path, default=Path("."))
    args = parser.parse_args()
    checkpoint = args.checkpoint or args.root / "models" / args.dataset / "pretrain-xvl" / "final"
    index = args.root / "data" / "shards" / args.dataset / "index.json"
    result = pointing_game(checkpoint, index, args.split, args.limit)
    print(json.dumps(result, indent=2, sort_keys=True))
    overall = result.get("all", {"accuracy": 0.0, "gradcam_accuracy": 0.0, "chance": 0.0,
                                 "trials": 0})  # fmt: skip
    print(f"pointing: accuracy={overall['accuracy']:.3f} "
          f"gradcam_accuracy={overall['gradcam_accuracy']:.3f} chance={overall['chance']:.3f} "
          f"trials={overall['trials']}")  # fmt: skip


if __name__ == "__main__":
    main()
