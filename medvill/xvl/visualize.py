"""``medvill visualize --model xvl``: attention overlays for one pair or N test pairs.

One pair (``--image``, ``--text``): a folder with an overlay per word (or only the chosen
``--phrase``), its Grad-CAM variant, the ViT [CLS] heads and ``attention.json``. Batch mode
(``--dataset``, ``--n``): the first N samples of a split's shards, one folder each, an
``index.html`` that shows them all (open it in a browser) and ``overlays.png``, a montage of
the first words' overlays (the DVC plot).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from PIL import Image

from medvill.data import decode_image
from medvill.xvl.attention import AttentionMaps, compute_maps, phrase_span, word_spans
from medvill.xvl.model import XVLModel
from medvill.xvl.overlay import open_image, write_index, write_montage, write_pair

log = logging.getLogger(__name__)

#: Words never worth a map of their own in batch mode (punctuation is skipped too).
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "the",
        "there",
        "this",
        "to",
        "was",
        "with",
        "without",
    ]
)


def load_checkpoint(folder: Path) -> tuple[XVLModel, Any]:
    """The X-VL encoder and tokenizer of a checkpoint folder (pretraining or fine-tuned)."""
    from medvill.tokenizer import load_tokenizer

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder}: no config.json (not a checkpoint folder)")
    model = XVLModel.from_pretrained(str(folder))
    return model, load_tokenizer(folder)


def maps_for(
    model: XVLModel,
    tokenizer: Any,
    image: Image.Image,
    text: str,
    phrase: str | None = None,
    layer: int | None = None,
    content_words_only: bool = False,
) -> AttentionMaps:
    """Maps of one pair: every word, only content words, or the one ``phrase``."""
    import io

    buffer = io.BytesIO()
    image.convert("L").save(buffer, "PNG")
    tensor = decode_image(buffer.getvalue(), model.config.image_size, None)
    ids, words = word_spans(tokenizer, text, model.config.max_text_tokens)
    if not words:
        raise ValueError("the report has no words to map")
    if phrase:
        words = [phrase_span(words, phrase)]
    elif content_words_only:
        kept = [w for w in words if any(c.isalpha() for c in w.text)
                and w.text.lower() not in STOP_WORDS]  # fmt: skip
        words = kept or words
    return compute_maps(model, tensor, ids, words, layer)


def visualize_pair(
    checkpoint: Path, image_path: Path, text: str, out: Path, phrase: str | None = None,
    layer: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Write one pair's overlays and an index.html beside them; returns attention.json."""
    model, tokenizer = load_checkpoint(checkpoint)
    image_path = Path(image_path)
    if not image_path.is_file():
        raise FileNotFoundError(f"{image_path}: no such image file")
    image = open_image(image_path.read_bytes(), str(image_path))
    maps = maps_for(model, tokenizer, image, text, phrase, layer)
    doc = write_pair(image, maps, Path(out), text)
    write_index([(image_path.name, "", doc)], Path(out))
    return doc


def visualize_split(
    checkpoint: Path, index_path: Path, out: Path, n: int, split: str = "test",
    layer: int | None = None, max_words: int = 8,
) -> Path:  # fmt: skip
    """Overlays for the first ``n`` samples of ``split`` (shard order) and an index.html."""
    from medvill.data import SAMPLE_MEMBERS, log_and_continue, read_index
    from medvill.shardreader import MemberReader, sample_refs

    model, tokenizer = load_checkpoint(checkpoint)
    shards = read_index(index_path, split)
    final = Path(out)
    # built in a fresh folder and swapped in whole: no stale pair from an earlier run remains,
    # and an interrupted run leaves the previous page intact
    out = final.parent / f".{final.name}.tmp"
    shutil.rmtree(out, ignore_errors=True)
    entries = []
    with MemberReader(SAMPLE_MEMBERS) as reader:
        for ref in sample_refs(shards.files, log_and_continue, shards.contents()):
            if len(entries) >= n:
                break
            sample = reader.read(ref)
            member = "jpg" if "jpg" in sample else "png"
            if member not in sample or "txt" not in sample:
                log.warning("sample %s lacks an image or a report: skipped", ref.key)
                continue
            image = open_image(sample[member], f"{ref.url}:{ref.key}.{member}")
            text = sample["txt"].decode("utf-8")
            maps = maps_for(model, tokenizer, image, text, layer=layer, content_words_only=True)
            maps.words, maps.cross, maps.gradcam = (
                maps.words[:max_words], maps.cross[:max_words], maps.gradcam[:max_words]
            )  # fmt: skip
            doc = write_pair(image, maps, out / ref.key, text)
            entries.append((ref.key, ref.key, doc))
    if not entries:
        raise ValueError(f"{index_path}: split {split!r} has no samples to visualise")
    write_montage(entries, out)
    write_index(entries, out)
    shutil.rmtree(final, ignore_errors=True)
    out.rename(final)
    return final / "index.html"
