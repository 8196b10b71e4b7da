"""MLM slots gathered by index equal the boolean-mask selection they replace, bit for bit."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from medvill.config import MedViLLConfig
from medvill.model.heads import IGNORE_INDEX
from medvill.model.medvill import MedViLLForPretraining, mlm_target_positions


def test_index_gather_equals_boolean_selection():
    torch.manual_seed(3)
    config = MedViLLConfig(
        vocab_size=200, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, backbone="resnet18", image_size=64, num_sampled_visual=3,
        max_text_tokens=10, max_position_embeddings=64,
    )  # fmt: skip
    model = MedViLLForPretraining(config).eval()
    batch, slots = 3, config.text_slots()
    ids = torch.randint(5, 90, (batch, slots))
    valid = torch.ones(batch, slots, dtype=torch.bool)
    labels = torch.full((batch, slots), IGNORE_INDEX)
    labels[0, [1, 4]] = ids[0, [1, 4]]
    labels[2, [0, 2, 7]] = ids[2, [0, 2, 7]]  # row 1 has no target at all
    images = torch.randn(batch, 3, 64, 64)
    cells = torch.tensor([0, 2, 3])
    positions = mlm_target_positions(labels)
    assert positions.tolist() == [1, 4, 2 * slots, 2 * slots + 2, 2 * slots + 7]

    with torch.no_grad():
        out = model(images, ids, valid, cells, "bar", labels, torch.tensor([1, 0, 1]),
                    mlm_positions=positions)  # fmt: skip
        default = model(images, ids, valid, cells, "bar", labels, torch.tensor([1, 0, 1]))
        text_hidden = out.last_hidden_state[:, -slots:]
        selected = labels != IGNORE_INDEX
        reference = model.cls.predictions(text_hidden[selected])
    assert torch.equal(out.mlm_logits, reference)
    assert torch.equal(default.mlm_logits, reference)
    expected = F.cross_entropy(reference, labels[selected], reduction="sum") / 5
    assert torch.allclose(out.mlm_loss, expected)
    # a tensor normaliser stays a tensor (no host read) and gives the float's value
    with torch.no_grad():
        tensor_norm = model(images, ids, valid, cells, "bar", labels, torch.tensor([1, 0, 1]),
                            mlm_normalizer=torch.tensor(5.0), mlm_positions=positions)  # fmt: skip
    assert torch.equal(tensor_norm.mlm_loss, out.mlm_loss)
