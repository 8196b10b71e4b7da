"""Shards → pretraining batches (WebDataset), deterministic and resumable.

Pipeline per loader worker (open_clip-style, ``log_and_continue`` on corrupt samples):

1. the split's shard list from ``index.json``, permuted by (seed, epoch);
2. :mod:`medvill.shardreader` groups tar members by key (webdataset's rules) from the tar
   headers alone — no member data is read yet;
3. a seeded shuffle buffer (same order in every process);
4. stream split: sample *i* of that global order goes to stream ``i mod (world × workers)``, so
   ranks and workers see disjoint samples even when there are fewer shards than streams (the
   demo has one) and a rank's global batch is the same set of samples whatever the world size;
   each stream then reads the bytes of its own samples only;
5. decode — only ``jpg``/``png`` (PIL), ``txt`` (UTF-8) and ``json`` members are read, other
   members are never loaded, nothing is ever unpickled —, IRM pairing, tokenisation, MLM masking,
   the random crop box, each driven by an RNG seeded from (seed, epoch, sample key), so a sample
   is processed identically whichever worker or rank gets it. Images leave the worker as 8-bit
   grey pixels with their crop box (``image_sources``, ``crop_boxes``); the trainer crops,
   resizes and normalises them on its device (:func:`medvill.imagebatch.model_images`);
6. batching, with one visual-feature subset and (for Bi & S2S) one mask type per global
   mini-batch, seeded by (seed, epoch, optimizer step).

Data position: a rank's micro-batches come round-robin from its workers (PyTorch's
``DataLoader`` order); :func:`rank_schedule` computes that order from the index's sample counts,
so a resumed epoch skips, per worker, exactly the batches already consumed — before decoding.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import multiprocessing
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from medvill.imagebatch import CropBox, full_box, model_images, stack_sources
from medvill.model.heads import IGNORE_INDEX
from medvill.model.masks import resolve_mask_type
from medvill.shardreader import MemberReader, sample_refs
from pipeline.members import ShardContents, read_member_index

log = logging.getLogger(__name__)

IMAGE_MEMBERS = ("jpg", "png")
T = TypeVar("T")
#: The only shard members the loaders ever read.
SAMPLE_MEMBERS = (*IMAGE_MEMBERS, "txt", "json")


def log_and_continue(error: Exception) -> bool:
    """WebDataset handler (as open_clip's): log the corrupt sample or shard and go on."""
    log.warning("skipping a sample or shard: %r", error)
    return True


# --------------------------------------------------------------------------- index and schedule


@dataclass(frozen=True)
class SplitShards:
    """Shard files of one split (absolute paths), their sample counts and, when the shards
    stage wrote one, the member index (``members.parquet``) that spares the header scans."""

    files: tuple[str, ...]
    samples: tuple[int, ...]
    members: str | None = None

    @property
    def total(self) -> int:
        return sum(self.samples)

    def contents(self) -> dict[str, ShardContents] | None:
        """Where every member of these shards is, from the member index (None without one)."""
        if self.members is None:
            return None
        return read_member_index(self.members, self.files)


def read_index(index_path: Path | str, split: str) -> SplitShards:
    """Read ``data/shards/<dataset>/index.json``; shard paths are relative to its folder."""
    path = Path(index_path)
    index = json.loads(path.read_text(encoding="utf-8"))
    if split not in index.get("splits", {}):
        raise KeyError(f"{path}: no split {split!r} (has {sorted(index.get('splits', {}))})")
    shards = index["splits"][split]["shards"]
    files = tuple(str((path.parent / s["file"]).resolve()) for s in shards)
    members = index.get("members")
    members_path = path.parent / members if members else None
    if members_path is not None and not members_path.is_file():
        log.warning("%s lists %s, which is missing: tar headers will be scanned", path, members)
        members_path = None
    return SplitShards(
        files=files,
        samples=tuple(int(s["samples"]) for s in shards),
        members=str(members_path) if members_path else None,
    )


def stream_sizes(total: int, streams: int) -> list[int]:
    """Samples of each stream under the modulo split of a ``total``-sample epoch."""
    return [total // streams + (1 if s < total % streams else 0) for s in range(streams)]


def rank_schedule(
    total: int, world: int, rank: int, num_workers: int, batch_size: int
) -> list[tuple[int, int]]:
    """The (worker, worker-batch index) of each micro-batch a rank receives, in order.

    Each worker drops its last partial batch; the ``DataLoader`` visits workers round-robin and
    skips exhausted ones.
    """
    workers = max(num_workers, 1)
    sizes = stream_sizes(total, world * workers)[rank * workers : (rank + 1) * workers]
    counts = [size // batch_size for size in sizes]
    order: list[tuple[int, int]] = []
    for j in range(max(counts, default=0)):
        order.extend((w, j) for w in range(workers) if j < counts[w])
    return order


def micro_batches_per_epoch(
    total: int, world: int, num_workers: int, batch_size: int, accumulation: int
) -> int:
    """Micro-batches every rank runs per epoch: the least any rank has, whole optimizer steps."""
    least = min(len(rank_schedule(total, world, r, num_workers, batch_size)) for r in range(world))
    return least - least % accumulation


# --------------------------------------------------------------------------- per-sample transforms


def sample_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """The RNG of one sample in one epoch, independent of worker, rank and order."""
    return np.random.default_rng([seed, epoch, zlib.crc32(key.encode("utf-8"))])


def batch_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The RNG shared by every micro-batch of one optimizer step (all ranks)."""
    state = np.random.SeedSequence([seed, epoch, step, 0x6D76]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def random_resized_crop_params(
    height: int,
    width: int,
    rng: np.random.Generator,
    scale: tuple[float, float],
    ratio: tuple[float, float],
) -> tuple[int, int, int, int]:
    """(top, left, h, w) like torchvision's ``RandomResizedCrop.get_params`` but from ``rng``.

    Ten tries for a crop that fits; else the central crop at the nearest allowed aspect ratio.
    With the paper's scale (0.8, 1.1), draws above 1 never fit and fall to another try.
    """
    area = height * width
    log_ratio = (np.log(ratio[0]), np.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = float(np.exp(rng.uniform(log_ratio[0], log_ratio[1])))
        w = round(np.sqrt(target * aspect))
        h = round(np.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def decode_grey(data: bytes, size: int) -> np.ndarray:
    """Image bytes → its 8-bit grey pixels (H, W), the part of the image work the loader
    workers do. JPEGs are decoded at reduced scale when the target ``size`` is at most half
    the stored size (the demo's 128² from 512² shards)."""
    with Image.open(io.BytesIO(data)) as img:
        if img.format == "JPEG" and min(img.size) >= 2 * size:
            img.draft("L", (size, size))
        grey = img.convert("L")
        return np.asarray(grey, dtype=np.uint8).copy()


def crop_box(
    height: int,
    width: int,
    rng: np.random.Generator | None,
    scale: tuple[float, float] = (0.8, 1.1),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> CropBox:
    """The region that becomes the model input: a random resized crop drawn from ``rng``
    (pretraining augmentation), or the whole image without one."""
    if rng is None:
        return full_box(height, width)
    return random_resized_crop_params(height, width, rng, scale, ratio)


def decode_image(
    data: bytes,
    size: int,
    rng: np.random.Generator | None,
    scale: tuple[float, float] = (0.8, 1.1),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Image bytes → (3, size, size) ImageNet-normalised float tensor, on the CPU.

    Grey is replicated to 3 channels (docs/model.md §2). With ``rng`` (pretraining) a random resized
    crop to ``size``; without, a plain resize when the stored size differs. The pretraining
    loader splits this in two — :func:`decode_grey` and :func:`crop_box` in its workers,
    :func:`medvill.imagebatch.model_images` on the training device — with the same result.
    """
    array = decode_grey(data, size)
    box = crop_box(*array.shape, rng, scale, ratio)
    return model_images(stack_sources([array]), [box], size)[0]


@dataclass(frozen=True)
class TextSpec:
    """Token ids and layout of the text block (docs/model.md §3–4)."""

    max_tokens: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    text_cls: bool = False  # Non-cross: an extra [CLS] opens the text block

    @property
    def slots(self) -> int:
        return self.max_tokens + 1 + (1 if self.text_cls else 0)


def text_block(token_ids: list[int], spec: TextSpec) -> tuple[np.ndarray, np.ndarray]:
    """Truncate at the tail, append [SEP], pad: ``(ids (L,), valid (L,))``."""
    ids = list(token_ids[: spec.max_tokens])
    block = ([spec.cls_id] if spec.text_cls else []) + ids + [spec.sep_id]
    valid = np.zeros(spec.slots, dtype=bool)
    valid[: len(block)] = True
    out = np.full(spec.slots, spec.pad_id, dtype=np.int64)
    out[: len(block)] = block
    return out, valid


def mask_tokens(
    ids: np.ndarray,
    valid: np.ndarray,
    spec: TextSpec,
    rng: np.random.Generator,
    probability: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking of report tokens (docs/model.md §6): each token (never [CLS]/[SEP]/[PAD]) is
    chosen with ``probability``; a chosen token becomes [MASK] 80 %, a random non-special
    token 10 %, or stays 10 %. If none is chosen, the first token is. Returns (inputs, labels)
    with labels −100 on unchosen slots."""
    special = np.isin(ids, _special_array(spec.special_ids))
    candidates = np.flatnonzero(valid & ~special)
    inputs = ids.copy()
    labels = np.full_like(ids, IGNORE_INDEX)
    if candidates.size == 0:
        return inputs, labels
    chosen = candidates[rng.random(candidates.size) < probability]
    if chosen.size == 0:
        chosen = candidates[:1]
    labels[chosen] = ids[chosen]
    action = rng.random(chosen.size)
    to_mask = chosen[action < 0.8]
    to_random = chosen[(action >= 0.8) & (action < 0.9)]
    inputs[to_mask] = spec.mask_id
    if to_random.size:
        normal = _normal_ids(spec.vocab_size, spec.special_ids)
        inputs[to_random] = rng.choice(normal, size=to_random.size)
    return inputs, labels


@functools.lru_cache(maxsize=8)
def _special_array(special_ids: tuple[int, ...]) -> np.ndarray:
    return np.asarray(special_ids)


@functools.lru_cache(maxsize=8)
def _normal_ids(vocab_size: int, special_ids: tuple[int, ...]) -> np.ndarray:
    """Non-special token ids, built once per vocabulary (was per masked sample: ~8 ms each at
    BERT's 30,522 ids, half the loader's time per sample)."""
    normal = np.setdiff1d(np.arange(vocab_size), np.asarray(special_ids))
    normal.flags.writeable = False
    return normal


# --------------------------------------------------------------------------- IRM negatives


#: Uniform draws tried before an explicit pool is built for a label set (a dominant label set
#: would otherwise make rejection sampling slow).
IRM_REJECTION_TRIES = 32


@dataclass
class IrmNegatives:
    """The pairs stage's ``irm_negatives.parquet``: every training key's text, its positive
    CheXpert label set and K precomputed keys of reports with a different label set.

    With label sets (the ``labels`` column) a negative is re-drawn for every sample every epoch
    from the *whole* training pool — any report whose label set differs — as MedViLL's loader
    draws a random report per sample, instead of cycling through K fixed keys. Files without
    the column (older pairs outputs) fall back to the K keys. A query with no label set
    (unlabelled report) may take any labelled report but its own.
    """

    texts: dict[str, str]
    negatives: dict[str, tuple[str, ...]]
    label_sets: dict[str, tuple[str, ...] | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._keys = sorted(self.label_sets)
        names = sorted({s for s in self.label_sets.values() if s is not None})
        index = {name: i for i, name in enumerate(names)}
        self._set_of = np.array(
            [-1 if self.label_sets[k] is None else index[self.label_sets[k]] for k in self._keys],
            dtype=np.int64,
        )
        self._position = {k: i for i, k in enumerate(self._keys)}
        # records per label set, for "has a negative" without building any pool
        self._set_sizes = np.bincount(self._set_of[self._set_of >= 0], minlength=len(names))
        self._labelled = int(self._set_sizes.sum())
        self._pools: dict[int, np.ndarray] = {}

    @classmethod
    def read(cls, path: Path | str) -> IrmNegatives:
        import pyarrow.parquet as pq

        columns = pq.read_schema(path).names
        wanted = ["key", "text", "negative_keys"] + (["labels"] if "labels" in columns else [])
        table = pq.read_table(path, columns=wanted).to_pydict()
        texts = dict(zip(table["key"], table["text"], strict=True))
        negatives = {
            key: tuple(n for n in (negs or ()) if n in texts)
            for key, negs in zip(table["key"], table["negative_keys"], strict=True)
        }
        label_sets: dict[str, tuple[str, ...] | None] = {}
        if "labels" in table:
            label_sets = {
                key: None if labels is None else tuple(sorted(labels))
                for key, labels in zip(table["key"], table["labels"], strict=True)
            }
        result = cls(texts=texts, negatives=negatives, label_sets=label_sets)
        without = sum(1 for key in texts if not result.has_negative(key))
        if without:
            log.warning(
                "IRM: %d of %d training keys have no negatives; they are always matched pairs",
                without,
                len(texts),
            )
        return result

    def _pool(self, group: int) -> np.ndarray:
        """Positions of the labelled records outside label set ``group`` (-1: unlabelled, whose
        pool is every labelled record). Built lazily, once per group, and only when rejection
        sampling in :meth:`draw` failed, so a large corpus does not hold one array per set."""
        if group not in self._pools:
            self._pools[group] = np.flatnonzero((self._set_of >= 0) & (self._set_of != group))
        return self._pools[group]

    def _negative_count(self, group: int) -> int:
        return self._labelled - (int(self._set_sizes[group]) if group >= 0 else 0)

    def has_negative(self, key: str) -> bool:
        if key in self._position:
            return self._negative_count(int(self._set_of[self._position[key]])) > 0
        return bool(self.negatives.get(key))

    def draw(self, key: str, rng: np.random.Generator) -> str | None:
        """One negative key for ``key`` from ``rng`` (None when it has none)."""
        position = self._position.get(key)
        if position is None:
            options = self.negatives.get(key) or ()
            return options[int(rng.integers(0, len(options)))] if options else None
        group = int(self._set_of[position])
        for _ in range(IRM_REJECTION_TRIES):
            candidate = int(rng.integers(0, len(self._keys)))
            # a different label set (never -1) is never the query itself
            if self._set_of[candidate] >= 0 and self._set_of[candidate] != group:
                return self._keys[candidate]
        pool = self._pool(group)
        return self._keys[int(pool[int(rng.integers(0, pool.size))])] if pool.size else None


# --------------------------------------------------------------------------- the dataset


@dataclass(frozen=True)
class LoaderSettings:
    """Everything that decides the batches; identical on every rank."""

    batch_size: int  # per rank, per micro-batch
    accumulation: int = 1
    num_workers: int = 0
    shuffle_buffer: int = 1000
    seed: int = 123
    image_size: int = 512
    augment: bool = True
    crop_scale: tuple[float, float] = (0.8, 1.1)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    grid_cells: int = 256
    num_sampled_visual: int = 180
    mask_type: str = "bar"
    s2s_probability: float = 0.75
    mlm_probability: float = 0.15
    negative_probability: float = 0.5


def deterministic_shuffle(
    samples: Iterable[T], bufsize: int, rng: np.random.Generator
) -> Iterator[T]:
    """Buffer shuffle from an explicit RNG (webdataset's uses a process-local one)."""
    buffer: list[T] = []
    for sample in samples:
        if len(buffer) < bufsize:
            buffer.append(sample)
            continue
        index = int(rng.integers(0, len(buffer)))
        yield buffer[index]
        buffer[index] = sample
    order = rng.permutation(len(buffer))
    for index in order:
        yield buffer[int(index)]


class PretrainShards(IterableDataset):
    """Iterable of collated pretraining micro-batches for one rank.

    Call :meth:`set_epoch` before building each epoch's ``DataLoader`` (``batch_size=None``);
    ``start`` is the number of this epoch's micro-batches already consumed (resume).
    """

    def __init__(
        self,
        shards: SplitShards,
        tokenizer: Any,
        spec: TextSpec,
        settings: LoaderSettings,
        negatives: IrmNegatives | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        super().__init__()
        if settings.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.shards = shards
        self.tokenizer = tokenizer
        self.spec = spec
        self.settings = settings
        self.negatives = negatives
        self.rank = rank
        self.world = world
        # (epoch, micro-batches already consumed), in shared memory: persistent loader workers
        # read the position the trainer set for each new epoch (their dataset is a copy).
        self._position = multiprocessing.RawArray("q", 2)

    @property
    def workers(self) -> int:
        return max(self.settings.num_workers, 1)

    def micro_batches_per_epoch(self) -> int:
        s = self.settings
        return micro_batches_per_epoch(
            self.shards.total, self.world, s.num_workers, s.batch_size, s.accumulation
        )

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Set before each ``iter(loader)``: its workers (new or persistent) start there."""
        self._position[0] = epoch
        self._position[1] = start

    @property
    def epoch(self) -> int:
        return int(self._position[0])

    @property
    def start(self) -> int:
        return int(self._position[1])

    def _plan(self, physical_worker: int) -> tuple[int, list[int], int]:
        """(logical worker, rank-micro indices of its batches still to produce, batches to skip).

        Physical worker 0 is the one the ``DataLoader`` asks first, so the worker owning the
        next micro-batch of the schedule is mapped to it (the round-robin is then unchanged).
        """
        s = self.settings
        schedule = rank_schedule(
            self.shards.total, self.world, self.rank, s.num_workers, s.batch_size
        )[: self.micro_batches_per_epoch()]
        first = schedule[self.start][0] if self.start < len(schedule) else 0
        logical = (physical_worker + first) % self.workers
        mine = [m for m, (w, _) in enumerate(schedule) if w == logical]
        skip = sum(1 for m in mine if m < self.start)
        return logical, [m for m in mine if m >= self.start], skip

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        physical = info.id if info is not None else 0
        if info is not None and info.num_workers != self.workers:
            raise RuntimeError("DataLoader num_workers differs from LoaderSettings.num_workers")
        logical, micro_indices, skip = self._plan(physical)
        if not micro_indices:
            return
        s = self.settings
        stream = self.rank * self.workers + logical
        streams = self.world * self.workers
        order = np.random.default_rng([s.seed, self.epoch, 1]).permutation(len(self.shards.files))
        urls = [self.shards.files[i] for i in order]
        shuffled = deterministic_shuffle(
            sample_refs(urls, log_and_continue, self.shards.contents()),
            s.shuffle_buffer,
            np.random.default_rng([s.seed, self.epoch, 2]),
        )
        mine = (ref for i, ref in enumerate(shuffled) if i % streams == stream)
        first = skip * s.batch_size
        needed = len(micro_indices) * s.batch_size
        counters = {"unpaired": 0, "failed": 0}
        batch: list[dict[str, Any]] = []
        produced = 0
        with MemberReader(SAMPLE_MEMBERS) as reader:
            for position, ref in enumerate(mine):
                if position < first:
                    continue  # consumed before the resume point: never read nor decoded
                if position >= first + needed:
                    break
                try:
                    batch.append(self._process(reader.read(ref), counters))
                except Exception as error:  # a corrupt sample is logged and skipped, not fatal
                    counters["failed"] += 1
                    log_and_continue(error)
                    continue
                if len(batch) == s.batch_size:
                    micro = micro_indices[produced]
                    yield self._collate(batch, micro // s.accumulation)
                    produced += 1
                    batch = []
                    if produced == len(micro_indices):
                        break
        if counters["unpaired"] or counters["failed"]:
            log.info(
                "rank %d worker %d epoch %d: %d samples not in the IRM negatives file (always "
                "matched), %d samples failed to decode",
                self.rank,
                logical,
                self.epoch,
                counters["unpaired"],
                counters["failed"],
            )
        for name in sorted(set(counters) - {"unpaired", "failed"}):  # a subclass's own counts
            if counters[name]:
                log.info("rank %d worker %d epoch %d: %s: %d samples", self.rank, logical,
                         self.epoch, name, counters[name])  # fmt: skip

    def _open(self, sample: dict[str, Any]) -> tuple[str, str, np.random.Generator, str]:
        """(key, image member, this sample's RNG for the epoch, report text) of a shard
        sample, whose members are checked first (every family's loader reads them alike)."""
        key = sample["__key__"]
        image_member = next((m for m in IMAGE_MEMBERS if m in sample), None)
        if image_member is None or "txt" not in sample:
            raise ValueError(f"sample {key} lacks an image (jpg/png) or txt member")
        if "json" in sample:
            json.loads(sample["json"])  # validates the metadata member; never unpickled
        rng = sample_rng(self.settings.seed, self.epoch, key)
        return key, image_member, rng, sample["txt"].decode("utf-8")

    def _text_block(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The report's WordPiece ids in the spec's text block, and which slots are words."""
        tokens = self.tokenizer(
            text, add_special_tokens=False, truncation=True, max_length=self.spec.max_tokens
        )["input_ids"]
        return text_block(tokens, self.spec)

    def _process(self, sample: dict[str, Any], counters: dict[str, int]) -> dict[str, Any]:
        s = self.settings
        key, image_member, rng, text = self._open(sample)
        matched = 1
        draw = rng.random()
        if self.negatives is not None:
            if key not in self.negatives.texts:
                counters["unpaired"] += 1
            elif draw < s.negative_probability:
                negative = self.negatives.draw(key, rng)
                if negative is not None:
                    text = self.negatives.texts[negative]
                    matched = 0
        ids, valid = self._text_block(text)
        inputs, labels = mask_tokens(ids, valid, self.spec, rng, s.mlm_probability)
        # The worker stops at the 8-bit pixels and the crop box; the float work runs on the
        # training device (medvill/imagebatch.py), in the order the RNG was always drawn.
        image = decode_grey(sample[image_member], s.image_size)
        image_rng = rng if s.augment else None
        box = crop_box(*image.shape, image_rng, s.crop_scale, s.crop_ratio)
        return {
            "key": key,
            "image": image,
            "box": box,
            "text_ids": inputs,
            "text_valid": valid,
            "mlm_labels": labels,
            "irm_label": matched,
        }

    def _collate(self, samples: list[dict[str, Any]], step: int) -> dict[str, Any]:
        s = self.settings
        generator = batch_generator(s.seed, self.epoch, step)
        cells = torch.randperm(s.grid_cells, generator=generator)[: s.num_sampled_visual]
        mask_type = resolve_mask_type(s.mask_type, generator, s.s2s_probability)
        return {
            "keys": [x["key"] for x in samples],
            # (B, 1, H, W) uint8 + (B, 4) crop boxes: model_images() finishes them on the device
            "image_sources": stack_sources([x["image"] for x in samples]),
            "crop_boxes": torch.tensor([x["box"] for x in samples], dtype=torch.long),
            "image_size": s.image_size,
            "text_ids": torch.from_numpy(np.stack([x["text_ids"] for x in samples])),
            "text_valid": torch.from_numpy(np.stack([x["text_valid"] for x in samples])),
            "mlm_labels": torch.from_numpy(np.stack([x["mlm_labels"] for x in samples])),
            "irm_labels": torch.tensor([x["irm_label"] for x in samples], dtype=torch.long),
            "visual_cells": torch.sort(cells).values,
            "mask_type": mask_type,
            "step": step,
        }


def make_loader(dataset: PretrainShards, seed: int, pin_memory: bool = False) -> DataLoader:
    """The ``DataLoader`` of a run: iterate it once per epoch after ``dataset.set_epoch``. Its
    own seeded generator keeps the global torch RNG (used by dropout) untouched, so a resumed
    run continues the same random stream.

    Workers are persistent (no re-fork, no re-import each epoch): they read the epoch and
    resume position from the dataset's shared memory when a new iteration starts.
    ``pin_memory`` (on for CUDA) lets the trainer's ``non_blocking`` copies overlap compute.
    """
    workers = dataset.settings.num_workers
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        pin_memory=pin_memory,
    )


def text_spec_for(tokenizer: Any, max_tokens: int, text_cls: bool) -> TextSpec:
    """The :class:`TextSpec` of a tokenizer."""
    special = tuple(int(i) for i in tokenizer.all_special_ids)
    return TextSpec(
        max_tokens=max_tokens,
        pad_id=tokenizer.pad_token_id,
        cls_id=tokenizer.cls_token_id,
        sep_id=tokenizer.sep_token_id,
        mask_id=tokenizer.mask_token_id,
        vocab_size=len(tokenizer),
        special_ids=special,
        text_cls=text_cls,
    )


BatchFn = Callable[[dict[str, Any]], None]
