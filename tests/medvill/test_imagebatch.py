"""Images finished on the training device: bit-identical (fp32, CPU) to the per-sample path
the loader workers ran before, for JPEG and PNG, with and without the random crop."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from medvill.data import crop_box, decode_grey, decode_image, random_resized_crop_params
from medvill.imagebatch import model_images, stack_sources


def frozen_decode_image(data: bytes, size: int, rng: np.random.Generator | None) -> torch.Tensor:
    """The loader's image path before the work moved to the device, kept verbatim as the
    reference: decode, /255 in float, crop-resize, 3 channels, (x − mean) / std."""
    with Image.open(io.BytesIO(data)) as img:
        if img.format == "JPEG" and min(img.size) >= 2 * size:
            img.draft("L", (size, size))
        array = np.asarray(img.convert("L"), dtype=np.uint8).copy()
    tensor = torch.from_numpy(array)[None].float().div_(255.0)
    height, width = array.shape
    if rng is not None:
        top, left, h, w = random_resized_crop_params(height, width, rng, (0.8, 1.1), (3 / 4, 4 / 3))
        tensor = TF.resized_crop(tensor, top, left, h, w, [size, size], antialias=True)
    elif (height, width) != (size, size):
        tensor = TF.resize(tensor, [size, size], antialias=True)
    tensor = tensor.expand(3, -1, -1)
    mean = torch.tensor((0.485, 0.456, 0.406))[:, None, None]
    std = torch.tensor((0.229, 0.224, 0.225))[:, None, None]
    return (tensor - mean) / std


def encoded(seed: int, shape: tuple[int, int], fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    pixels = 128 + 60 * np.sin(x / 7 + seed) * np.cos(y / 11) + rng.normal(0, 15, shape)
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L").save(buffer, fmt)
    return buffer.getvalue()


CASES = [  # (stored shape, format, target size): same size, reduced-scale JPEG, non-square PNG
    ((96, 96), "JPEG", 96),
    ((128, 128), "JPEG", 48),
    ((90, 120), "PNG", 64),
]


@pytest.mark.parametrize("augment", [True, False])
def test_device_path_is_bit_identical_to_the_former_worker_path(augment: bool) -> None:
    sources, boxes, expected = [], [], []
    for seed, (shape, fmt, size) in enumerate(CASES):
        data = encoded(seed, shape, fmt)
        reference = frozen_decode_image(
            data, size, np.random.default_rng(seed) if augment else None
        )
        rng = np.random.default_rng(seed) if augment else None
        array = decode_grey(data, size)
        box = crop_box(*array.shape, rng)
        finished = model_images(stack_sources([array]), [box], size)[0]
        assert finished.dtype == torch.float32 and finished.shape == (3, size, size)
        assert torch.equal(finished, reference)
        rng = np.random.default_rng(seed) if augment else None
        assert torch.equal(decode_image(data, size, rng), reference)  # the tasks' path too
        if size == 48:
            assert array.shape == (64, 64)  # decoded at half scale: the draft still applies
        sources.append(array)
        boxes.append(box)
        expected.append(reference)
    # a batch of differently sized images, zero-padded to one tensor, gives each one's result
    for size in {case[2] for case in CASES}:
        batch = model_images(stack_sources(sources), boxes, size)
        for i, case in enumerate(CASES):
            if case[2] == size:
                assert torch.equal(batch[i], expected[i])


def test_padding_is_never_read_and_a_wrong_box_would_be_seen() -> None:
    small = np.full((40, 30), 200, dtype=np.uint8)
    large = np.zeros((64, 64), dtype=np.uint8)
    stacked = stack_sources([small, large])
    assert stacked.shape == (2, 1, 64, 64) and stacked.dtype == torch.uint8
    assert int(stacked[0, 0, 40:].sum()) == 0 and int(stacked[0, 0, :, 30:].sum()) == 0
    inside = model_images(stacked, [(0, 0, 40, 30), (0, 0, 64, 64)], 32)
    grey = (200 / 255 - 0.485) / 0.229
    assert torch.allclose(inside[0, 0], torch.full((32, 32), grey), atol=1e-5)
    spilled = model_images(stacked, [(0, 0, 64, 64), (0, 0, 64, 64)], 32)
    assert spilled[0, 0].min() < grey - 1  # a box over the padding would show black


def test_layout_and_dtype_do_not_change_the_values() -> None:
    arrays = [decode_grey(encoded(s, (72, 72), "PNG"), 64) for s in range(3)]
    boxes = [(0, 0, 72, 72), (4, 2, 60, 66), (10, 10, 50, 40)]
    sources = stack_sources(arrays)
    plain = model_images(sources, boxes, 64)
    last = model_images(sources, torch.tensor(boxes), 64, torch.channels_last, torch.bfloat16)
    assert last.is_contiguous(memory_format=torch.channels_last)
    assert last.dtype == torch.bfloat16
    assert torch.equal(last, plain.to(torch.bfloat16))


def test_bad_inputs_are_refused_with_the_reason() -> None:
    sources = stack_sources([np.zeros((8, 8), dtype=np.uint8)])
    with pytest.raises(ValueError, match="uint8"):
        model_images(sources.float(), [(0, 0, 8, 8)], 8)
    with pytest.raises(ValueError, match="2 crop boxes for 1 images"):
        model_images(sources, [(0, 0, 8, 8)] * 2, 8)
    with pytest.raises(ValueError, match="stay on the host"):
        model_images(sources, torch.zeros(1, 4, dtype=torch.long, device="meta"), 8)
    with pytest.raises(ValueError, match="2-D uint8"):
        stack_sources([np.zeros((8, 8), dtype=np.float32)])
