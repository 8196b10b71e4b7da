"""Attention maps drawn over the radiograph, and the files ``medvill visualize`` writes.

Geometry: a (grid, grid) map covers the whole image the model saw (the image resized to a
square), so patch (r, c) is the rectangle ``[c·W/g, (c+1)·W/g) × [r·H/g, (r+1)·H/g)`` of the
original W × H image. The map is scaled to [0, 1], resized to W × H (bilinear, so a patch's
heat stays centred on its rectangle), coloured with the ``jet`` colour map and blended over the
grey image; overlays have the original image's size.
"""

from __future__ import annotations

import html
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from medvill.xvl.attention import AttentionMaps, peak_cell

#: Blend weight of the heat map over the image.
HEAT_ALPHA = 0.5


def upsample(grid_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) float32 in [0, 1]: the map scaled to [0, 1] (a flat map is all zero: nothing
    stands out) and resized to ``size`` (W, H), patch (r, c) over its rectangle."""
    values = grid_map.astype(np.float32) - float(grid_map.min())
    top = float(values.max())
    values = values / top if top > 0 else np.zeros_like(values)
    resized = Image.fromarray(values, mode="F").resize(size, Image.Resampling.BILINEAR)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def heat_rgb(grid_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 ``jet`` colours of :func:`upsample`."""
    import matplotlib

    colours = matplotlib.colormaps["jet"](upsample(grid_map, size))[..., :3]
    return (colours * 255).round().astype(np.uint8)


def overlay(image: Image.Image, grid_map: np.ndarray, alpha: float = HEAT_ALPHA) -> Image.Image:
    """The map over the image (RGB, the image's size)."""
    base = np.asarray(image.convert("L").convert("RGB"), dtype=np.float32)
    heat = heat_rgb(grid_map, image.size).astype(np.float32)
    mixed = (1 - alpha) * base + alpha * heat
    return Image.fromarray(mixed.round().clip(0, 255).astype(np.uint8), "RGB")


def slug(text: str) -> str:
    """A file-name-safe short form of a word or phrase."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "token"


def write_pair(image: Image.Image, maps: AttentionMaps, out: Path, report: str) -> dict[str, Any]:
    """Write one pair's overlays under ``out`` and ``attention.json`` listing them:
    ``word-NN-<word>.png`` (cross-attention), ``word-NN-<word>-gradcam.png``,
    ``cls-head-H.png`` (ViT [CLS] per head), ``image.png`` (the image as given)."""
    out.mkdir(parents=True, exist_ok=True)
    image = image.convert("L")
    image.save(out / "image.png")
    words = []
    for number, (span, cross, cam) in enumerate(
        zip(maps.words, maps.cross, maps.gradcam, strict=True)
    ):
        stem = f"word-{number:02d}-{slug(span.text)}"
        overlay(image, cross).save(out / f"{stem}.png")
        overlay(image, cam).save(out / f"{stem}-gradcam.png")
        words.append({
            "word": span.text, "tokens": span.positions, "overlay": f"{stem}.png",
            "gradcam": f"{stem}-gradcam.png", "peak_cell": list(peak_cell(cross)),
            "gradcam_peak_cell": list(peak_cell(cam)),
        })  # fmt: skip
    heads = []
    for head, grid_map in enumerate(maps.cls_heads):
        name = f"cls-head-{head}.png"
        overlay(image, grid_map).save(out / name)
        heads.append(name)
    doc = {
        "report": report,
        "image": "image.png",
        "size": list(image.size),
        "grid": maps.grid,
        "fusion_layer": maps.layer,
        "match_probability": maps.match_probability,
        "words": words,
        "cls_heads": heads,
    }
    (out / "attention.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return doc


def write_index(entries: list[tuple[str, str, dict[str, Any]]], out: Path) -> Path:
    """``index.html``: one section per pair (name, folder relative to ``out``, its
    attention.json) with the image, every word's overlay and Grad-CAM, and the [CLS] heads."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>X-VL attention maps</title>",
        "<style>body{font-family:sans-serif}figure{display:inline-block;margin:4px}"
        "img{width:192px;height:auto}figcaption{font-size:12px;text-align:center}</style>",
        "</head><body><h1>X-VL attention maps</h1>",
        "<p>Per word: cross-attention of the fusion layer over the image patches (left) and its "
        "gradient-weighted variant (right); then the ViT's [CLS] self-attention per head.</p>",
    ]
    for name, folder, doc in entries:
        prefix = f"{folder}/" if folder else ""
        parts.append(f"<section><h2>{html.escape(name)}</h2>")
        parts.append(f"<p>{html.escape(doc['report'])}</p><p>match probability "
                     f"{doc['match_probability']:.3f}</p>")  # fmt: skip
        parts.append(_figure(prefix + doc["image"], "image"))
        for word in doc["words"]:
            parts.append(_figure(prefix + word["overlay"], word["word"]))
            parts.append(_figure(prefix + word["gradcam"], f"{word['word']} (Grad-CAM)"))
        for head, file in enumerate(doc["cls_heads"]):
            parts.append(_figure(prefix + file, f"[CLS] head {head}"))
        parts.append("</section>")
    parts.append("</body></html>")
    path = out / "index.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


#: Montage tile side and caption strip height, pixels.
TILE, CAPTION = 192, 16


def write_montage(
    entries: list[tuple[str, str, dict[str, Any]]], out: Path, words_per_row: int = 4
) -> Path:
    """``overlays.png``: one row per pair — the image, its first ``words_per_row`` word
    overlays, [CLS] head 0 — each tile captioned (the DVC plot of example overlays)."""
    from PIL import ImageDraw

    columns = words_per_row + 2
    sheet = Image.new("RGB", (columns * TILE, len(entries) * (TILE + CAPTION)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, (_, folder, doc) in enumerate(entries):
        base = out / folder if folder else out
        tiles = [(doc["image"], "image")]
        tiles += [(w["overlay"], w["word"]) for w in doc["words"][:words_per_row]]
        tiles += [(doc["cls_heads"][0], "[CLS] head 0")] if doc["cls_heads"] else []
        top = row * (TILE + CAPTION)
        for column, (file, caption) in enumerate(tiles):
            with Image.open(base / file) as tile:
                sheet.paste(tile.convert("RGB").resize((TILE, TILE)), (column * TILE, top))
            draw.text((column * TILE + 4, top + TILE + 2), caption[:30], fill="black")
    path = out / "overlays.png"
    sheet.save(path)
    return path


def _figure(src: str, caption: str) -> str:
    return (f"<figure><img src='{html.escape(src, quote=True)}' alt='{html.escape(caption)}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip


def open_image(data: bytes, name: str) -> Image.Image:
    """Decode image bytes (PNG/JPEG…) to grey; a ValueError naming the file if they are not an
    image."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.convert("L")
    except Exception as error:  # PIL raises several types for bad bytes
        raise ValueError(f"{name}: not a readable image ({error})") from error
