"""``train.cnn_weights``: the image CNN starts from a local checkpoint — one of ours or a
torchvision ResNet state dict — all of it or not at all, with errors naming the file."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torchvision

from medvill.families.medvill_family import MedViLLFamily
from medvill.model.cnn_weights import load_cnn_weights, trunk_state
from medvill.model.medvill import MedViLLForPretraining, load_pretrained_parts
from medvill.pretrain import TrainSettings, check_initialisation, pretrain
from tests.medvill.test_model import tiny_config
from tests.medvill.test_pretrain import paths_for


def trunks_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def saved_checkpoint(tmp_path: Path, **config) -> tuple[Path, MedViLLForPretraining]:
    torch.manual_seed(1)
    source = MedViLLForPretraining(tiny_config(**config))
    source.save_pretrained(tmp_path / "source")
    return tmp_path / "source", source


@pytest.mark.parametrize("as_file", [False, True])
def test_starts_from_one_of_our_checkpoints(tmp_path: Path, as_file: bool) -> None:
    folder, source = saved_checkpoint(tmp_path, backbone="small_cnn")
    torch.manual_seed(2)
    model = MedViLLForPretraining(tiny_config(backbone="small_cnn"))
    target = model.medvill.visual_backbone.trunk
    assert not trunks_equal(target, source.medvill.visual_backbone.trunk)
    path = str(folder / "model.safetensors") if as_file else str(folder)
    origin = load_pretrained_parts(model, "", False, cnn_weights=path)
    assert trunks_equal(target, source.medvill.visual_backbone.trunk)
    count = len(target.state_dict())
    assert origin == {"text": "random", "visual": f"{path} ({count} tensors)"}
    # only the CNN moved: the projection and the transformer keep their own initialisation
    assert not torch.equal(
        model.medvill.visual_proj.proj.weight,
        source.medvill.visual_proj.proj.weight,
    )


def test_starts_from_a_torchvision_state_dict_wrapped_and_prefixed(tmp_path: Path) -> None:
    torch.manual_seed(3)
    resnet = torchvision.models.resnet18(weights=None)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in resnet.state_dict().items()}}
    file = tmp_path / "chexpert_resnet18.pth"
    torch.save(wrapped, file)
    model = MedViLLForPretraining(tiny_config(backbone="resnet18", freeze_stem=True))
    load_pretrained_parts(model, "", False, cnn_weights=str(file))
    trunk = model.medvill.visual_backbone.trunk
    assert torch.equal(trunk[0].weight, resnet.conv1.weight)
    assert torch.equal(trunk[7][1].bn2.running_var, resnet.layer4[1].bn2.running_var)
    # freezing is applied again after loading (conv1, bn1, layer1 frozen, layer2+ trainable)
    assert not trunk[0].weight.requires_grad and trunk[5][0].conv1.weight.requires_grad


def test_a_file_that_does_not_fit_is_an_error_naming_it(tmp_path: Path) -> None:
    folder, _ = saved_checkpoint(tmp_path, backbone="resnet18")
    small = MedViLLForPretraining(tiny_config(backbone="small_cnn"))
    with pytest.raises(ValueError, match=r"source.*does not fit.*wrong shape"):
        load_pretrained_parts(small, "", False, cnn_weights=str(folder))
    with pytest.raises(FileNotFoundError, match=r"no-such\.pth not found"):
        load_cnn_weights(small.medvill.visual_backbone.trunk, tmp_path / "no-such.pth")
    text_only = tmp_path / "text_only.pth"
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(3, 3)}, text_only)
    with pytest.raises(ValueError, match=r"text_only\.pth does not fit.*no ResNet trunk tensors"):
        load_cnn_weights(small.medvill.visual_backbone.trunk, text_only)


def test_pickled_objects_are_refused_not_run(tmp_path: Path) -> None:
    """torch.load(weights_only=True): a pickle carrying a callable is rejected unexecuted."""
    file = tmp_path / "evil.pth"
    marker = tmp_path / "ran"
    file.write_bytes(pickle.dumps(Touch(str(marker))))
    small = MedViLLForPretraining(tiny_config(backbone="small_cnn"))
    with pytest.raises(ValueError, match=r"evil\.pth is not a tensors-only torch file"):
        load_cnn_weights(small.medvill.visual_backbone.trunk, file)
    assert not marker.exists()


class Touch:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (Path(self.path),))


def test_trunk_state_ignores_other_parts() -> None:
    tensors = {
        "medvill.visual_backbone.trunk.0.weight": torch.ones(1),
        "medvill.bert.embeddings.word_embeddings.weight": torch.ones(1),
        "cls.seq_relationship.weight": torch.ones(1),
    }
    assert list(trunk_state(tensors)) == ["0.weight"]
    assert list(trunk_state({"fc.weight": torch.ones(1), "layer2.0.conv1.weight": torch.ones(1)}))\
        == ["5.0.conv1.weight"]  # fmt: skip


def test_pretraining_profile_setting_reaches_the_model(tiny_data, tiny_profile, tmp_path):
    """``train.cnn_weights`` in a profile: the run starts from it, says so in its model card,
    and counts as a pretrained start for ``require_pretrained``."""
    folder, source = saved_checkpoint(tmp_path, backbone="resnet18")
    profile = tiny_profile(max_steps=1, cnn_weights=str(folder), lr=0.0, warmup_ratio=0.0)
    out = tmp_path / "run"
    pretrain(profile, paths_for(tiny_data, out), show_progress=False)
    final = MedViLLForPretraining.from_pretrained(str(out / "final"))
    # lr 0: the trained trunk's weights are the file's (BatchNorm statistics move in train mode)
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    trained = final.medvill.visual_backbone.trunk.state_dict()
    weights = {k: v for k, v in trained.items() if not k.endswith(statistics)}
    expected = source.medvill.visual_backbone.trunk.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in weights.items())
    assert str(folder) in (out / "final" / "README.md").read_text(encoding="utf-8")
    family = MedViLLFamily()
    family.build_config(profile, _Ids(), {})
    assert family._cnn_weights == str(folder)
    settings = TrainSettings(text_weights="", imagenet=True, require_pretrained=True)
    check_initialisation({"text": "random", "visual": f"{folder} (99 tensors)"}, settings, False)


class _Ids:
    """The five special-token ids build_config reads from a tokenizer."""

    pad_token_id, unk_token_id, cls_token_id, sep_token_id, mask_token_id = 0, 1, 2, 3, 4
    vocab_size = 100

    def __len__(self) -> int:
        return self.vocab_size


def test_read_state_file_unwraps_the_first_wrapper_and_keeps_tensors_only(tmp_path: Path) -> None:
    from medvill.checkpoint import read_state_file

    file = tmp_path / "wrapped.pth"
    torch.save({"epoch": 3, "teacher": {"w": torch.ones(2), "note": "x"}, "student": {}}, file)
    state = read_state_file(file, ("teacher", "student"))
    assert list(state) == ["w"] and torch.equal(state["w"], torch.ones(2))
    assert read_state_file(file, ("model",)) == {}  # no wrapper: the top level, tensors only
    with pytest.raises(ValueError, match=r"wrapped\.pth: no key 'model'"):
        read_state_file(file, ("model",), require_wrapper=True)
