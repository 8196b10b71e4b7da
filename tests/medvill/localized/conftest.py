"""One tiny synthetic corpus through the whole pipeline (its shards carry `regions`), and a
tiny LoVT checkpoint, shared by the localized tests of this folder."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def localized_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``root`` (a project root: data/ under it), ``raw`` (the corpus), ``index``."""
    from pipeline.cli import STAGES, run_stages
    from pipeline.synthetic import CorpusConfig, write_corpus

    root = tmp_path_factory.mktemp("localized")
    raw = root / "raw"
    write_corpus(raw, CorpusConfig(n_images=40, seed=5, image_size=128), workers=1)
    run_stages(list(STAGES), "synthetic", raw=raw, adapter="synthetic", out=root / "data",
               workers=1, params_path=REPO / "params.yaml")  # fmt: skip
    return {"root": root, "raw": raw, "index": root / "data/shards/synthetic/index.json"}


@pytest.fixture(scope="session")
def lovt_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised LoVT model saved as the pretraining stage saves it."""
    import torch

    from medvill.contrastive.config import ContrastiveConfig
    from medvill.contrastive.model import ContrastiveModel

    torch.manual_seed(0)
    config = ContrastiveConfig(
        objective="lovt", backbone="resnet18", image_size=64, hidden_size=32,
        num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, vocab_size=200,
        max_position_embeddings=64, max_text_tokens=32, projection_dim=16,
        projection_hidden=32, pooling_heads=2, cls_token_id=2, sep_token_id=3,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("lovt") / "final"
    ContrastiveModel(config).save_pretrained(folder)
    return folder
