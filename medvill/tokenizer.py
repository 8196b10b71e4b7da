"""WordPiece tokenizer: ``bert-base-uncased`` (or any HF tokenizer path) when it can be had,
otherwise one trained on the training-split reports with the ``tokenizers`` library.

Either way the result is saved with ``save_pretrained`` under ``models/<dataset>/tokenizer/`` and
loaded from there by pretraining, so the model's vocabulary size and special-token ids always
come from the tokenizer that produced the ids. A ``source.json`` says which one it is.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

from medvill.config import hub_source  # importing it registers "medvill" with AutoConfig
from medvill.model.embeddings import _host_reachable

log = logging.getLogger(__name__)

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece(
    texts: Iterable[str], vocab_size: int, min_frequency: int = 1, lowercase: bool = True
) -> BertTokenizerFast:
    """Train a BERT-style (lower-casing, accent-stripping) WordPiece vocabulary.

    The special tokens take ids 0–4 in :data:`SPECIAL_TOKENS` order.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer

    core = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.decoder = decoders.WordPiece(prefix="##")
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix="##",
    )
    core.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = core.token_to_id("[CLS]"), core.token_to_id("[SEP]")
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return BertTokenizerFast(
        tokenizer_object=core,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        do_lower_case=lowercase,
    )


def load_pretrained_tokenizer(source: str) -> PreTrainedTokenizerBase | None:
    """A tokenizer from a local directory or the hub, or None (with a log line) when absent.

    A hub id loads at its pinned commit (:func:`medvill.config.hub_source`), the same one the
    text weights come from, so token ids and embedding rows stay matched.
    """
    if not source:
        return None
    where, revision = hub_source(source)
    try:
        offline = revision is not None and not _host_reachable("huggingface.co")
        return AutoTokenizer.from_pretrained(where, revision=revision, local_files_only=offline)
    except (OSError, ValueError) as error:
        log.warning("tokenizer %r unavailable (%s)", source, str(error).splitlines()[0])
        return None


def iter_shard_texts(index_path: Path, split: str = "train") -> Iterator[str]:
    """The ``txt`` member of every sample of one split, read straight from the tars.

    Only ``.txt`` members are read; nothing is unpickled or decoded beyond UTF-8.
    """
    index = json.loads(Path(index_path).read_text(encoding="utf-8"))
    root = Path(index_path).parent
    for shard in index["splits"][split]["shards"]:
        with tarfile.open(root / shard["file"]) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".txt"):
                    handle = tar.extractfile(member)
                    if handle is not None:
                        yield io.TextIOWrapper(handle, encoding="utf-8").read()


def build_tokenizer(
    index_path: Path, out_dir: Path, settings: dict[str, Any]
) -> tuple[PreTrainedTokenizerBase, str]:
    """The ``tokenizer`` stage: save the configured pretrained tokenizer, or train one.

    ``settings`` is the ``tokenizer`` block of params.yaml: ``pretrained`` (path or hub id, ""
    to always train), ``vocab_size``, ``min_frequency``, ``lowercase``. Returns the tokenizer
    and a description of its origin, also written to ``source.json``.
    """
    tokenizer = load_pretrained_tokenizer(str(settings.get("pretrained", "")))
    if tokenizer is not None:
        origin = f"pretrained:{settings['pretrained']}"
        log.info("tokenizer: using pretrained %s", settings["pretrained"])
    else:
        texts = list(iter_shard_texts(index_path, "train"))
        if not texts:
            raise ValueError(f"{index_path}: the train split has no reports to train a tokenizer")
        tokenizer = train_wordpiece(
            texts,
            vocab_size=int(settings.get("vocab_size", 30522)),
            min_frequency=int(settings.get("min_frequency", 1)),
            lowercase=bool(settings.get("lowercase", True)),
        )
        origin = f"trained:wordpiece on {len(texts)} train reports"
        log.info(
            "tokenizer: trained WordPiece (%d tokens) on %d reports", len(tokenizer), len(texts)
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "source.json").write_text(
        json.dumps({"origin": origin, "vocab_size": len(tokenizer)}, indent=2, sort_keys=True)
        + "\n",
        encoding="utf-8",
    )
    return tokenizer, origin


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer the ``tokenizer`` stage saved."""
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def tokenizer_ids(tokenizer: PreTrainedTokenizerBase) -> dict[str, int]:
    """Vocabulary size and special-token ids, as :class:`MedViLLConfig` fields."""
    ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "unk_token_id": tokenizer.unk_token_id,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "mask_token_id": tokenizer.mask_token_id,
    }
    missing = [name for name, value in ids.items() if value is None]
    if missing:
        raise ValueError(f"tokenizer lacks special tokens: {missing}")
    return ids
