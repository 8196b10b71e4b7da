"""Model cards: the ``README.md`` written into every saved checkpoint folder.

A checkpoint folder (``config.json``, ``model.safetensors``, tokenizer files) is already what the
Hugging Face Hub expects; the card makes it self-explaining wherever it is copied: which data
and settings produced it, what it scored, what it may and may not be used for, and what the
training data's licence means for sharing it. The card is built by a pure function from plain
facts (:class:`CardFacts`) so the pretraining and task code only gather facts, and the text can
be tested without training anything.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CARD_FILE = "README.md"

#: Metrics that measure the machine, not the model. Left out of the card so that the same
#: training gives a byte-identical checkpoint folder (and DVC sees no change downstream).
_TIMING_KEYS = frozenset({"samples_per_s", "wall_time_s", "elapsed_s"})

#: What each kind of checkpoint is, and the Hub pipeline tag closest to it. MedViLL takes an
#: image *and* a text block, so no transformers ``pipeline()`` runs it as is: the tag only
#: files the model under the right task on the Hub.
_KINDS: dict[str, tuple[str, str]] = {
    "pretraining": (
        "MedViLL joint image-report encoder pretrained with masked language modelling and "
        "image-report matching",
        "feature-extraction",
    ),
    "contrastive_pretraining": (
        "Dual image and report encoders pretrained contrastively on image-report pairs "
        "(ConVIRT, CLIP or LoVT objective; see config.json's objective)",
        "feature-extraction",
    ),
    "contrastive_retrieval": (
        "Dual image and report encoders fine-tuned for image-report retrieval with their "
        "own contrastive loss (`medvill finetune-zoo`; see config.json's objective)",
        "feature-extraction",
    ),
    "xvl_pretraining": (
        "Medical X-VL (ViT image encoder, BERT text and cross-attention fusion layers) "
        "pretrained with image-report contrast against a momentum queue, image-report "
        "matching on hard negatives and masked language modelling with momentum distillation",
        "feature-extraction",
    ),
    "classification": (
        "MedViLL fine-tuned for multi-label diagnosis classification of the 14 CheXpert "
        "observations from an image-report pair",
        "image-classification",
    ),
    "retrieval": (
        "MedViLL fine-tuned for image-report retrieval (matched / not matched score of a pair)",
        "feature-extraction",
    ),
    "vqa": (
        "MedViLL fine-tuned for visual question answering on radiology images",
        "visual-question-answering",
    ),
    "generation": (
        "MedViLL fine-tuned for radiology report generation (sequence-to-sequence mask)",
        "image-to-text",
    ),
    "xvl_classification": (
        "Medical X-VL fine-tuned for multi-label diagnosis classification of the 14 CheXpert "
        "observations (from the image alone, or the image-report pair: config.json's "
        "classifier_input)",
        "image-classification",
    ),
    "xvl_retrieval": (
        "Medical X-VL fine-tuned for image-report retrieval (contrastive similarity, then the "
        "matching head re-ranks the top candidates)",
        "feature-extraction",
    ),
    "xvl_vqa": (
        "Medical X-VL fine-tuned for visual question answering on radiology images (answer "
        "classes over the training answer vocabulary)",
        "visual-question-answering",
    ),
}

#: What each task trains on, inside the prepared dataset.
_TASK_DATA: dict[str, str] = {
    "pretraining": "the `train` split of the WebDataset shards (image + chosen report text), "
    "with image-report matching negatives from `irm_negatives.parquet`",
    "classification": "the shards' `train` split with their 14 CheXpert label values; the "
    "decision threshold is chosen on `valid`",
    "retrieval": "`Train.jsonl` image-report pairs (negatives of a different label set)",
    "vqa": "the VQA `trainset.json` question-answer pairs and their images",
    "generation": "`Train.jsonl` reports and images",
    "xvl_classification": "the shards' `train` split with their 14 CheXpert label values; the "
    "decision threshold is chosen on `valid`",
    "xvl_retrieval": "`Train.jsonl` image-report pairs (contrast in the batch, matching "
    "negatives mined from it)",
    "xvl_vqa": "the VQA `trainset.json` question-answer pairs and their images",
    "contrastive_retrieval": "the `train` split of the WebDataset shards (image + whole report)",
}

#: A checkpoint kind's prefix → the model family named in the card's title (others: MedViLL).
_FAMILY_PREFIXES: dict[str, str] = {
    "xvl_": "Medical X-VL",
    "contrastive_": "Contrastive dual encoder",
}


def card_title(kind: str, dataset: str) -> str:
    """``<family> <what> — <dataset>``: X-VL and contrastive checkpoints are not MedViLL's."""
    for prefix, family in _FAMILY_PREFIXES.items():
        if kind.startswith(prefix):
            return f"{family} {kind.removeprefix(prefix)} — {dataset}"
    return f"MedViLL {kind} — {dataset}"


@dataclass(frozen=True)
class DataLicence:
    """The licence of a training dataset and what it implies for a checkpoint trained on it."""

    name: str  # human-readable dataset name
    hub_license: str  # the Hub's ``license`` field
    licence: str  # the licence, as its owner names it
    link: str
    implication: str  # what it means for sharing this checkpoint


_MIMIC = DataLicence(
    name="MIMIC-CXR / MIMIC-CXR-JPG (PhysioNet)",
    hub_license="other",
    licence="PhysioNet Credentialed Health Data License 1.5.0 and the PhysioNet Credentialed "
    "Health Data Use Agreement",
    link="https://physionet.org/content/mimic-cxr-jpg/",
    implication=(
        "Access to MIMIC-CXR is granted to each credentialed person under a data use agreement "
        "that is personal and not transferable: you may not share the data with anyone who has "
        "not been credentialed and signed it. A model trained on the reports can reproduce "
        "fragments of them, so treat this checkpoint as derived from credentialed data: do not "
        "publish it openly; share it only with people who hold MIMIC-CXR access, through a "
        "channel that enforces it (PhysioNet itself, or a gated/private repository). Read "
        "PhysioNet's guidelines for creating datasets and models from MIMIC before sharing."
    ),
)
_OPENI = DataLicence(
    name="Open-I Indiana University chest X-ray collection (NLM)",
    hub_license="other",
    licence="the terms of use of the NLM Open-i collection",
    link="https://openi.nlm.nih.gov/",
    implication=(
        "This toolkit does not record the collection's licence; check the Open-i terms of use "
        "for redistribution of models trained on it before sharing this checkpoint."
    ),
)
_VQA_RAD = DataLicence(
    name="VQA-RAD",
    hub_license="cc0-1.0",
    licence="CC0 1.0 (public domain dedication)",
    link="https://osf.io/89kps/",
    implication="The data places no restriction on sharing the checkpoint; cite its paper.",
)
_SAMPLE = DataLicence(
    name="medvill demo data (data/sample: NIH ChestX-ray14, Hannover COVID-19 CC BY 3.0, "
    "public report examples, synthetic reports)",
    hub_license="other",
    licence="per file, see data/sample/SOURCES.md in the medvill repository (attribution "
    "required for the Hannover images, CC BY 3.0)",
    link="data/sample/SOURCES.md",
    implication=(
        "The demo images may be redistributed with attribution, but their image-report "
        "pairings are constructed, not clinical: this checkpoint exists to exercise the code "
        "and has no scientific or clinical value."
    ),
)
_UNKNOWN = DataLicence(
    name="",
    hub_license="other",
    licence="not recorded by medvill",
    link="",
    implication=(
        "medvill does not know this dataset's licence. Find out what it allows before sharing "
        "this checkpoint: a model trained on restricted medical data is usually restricted too."
    ),
)


def data_licence(dataset: str) -> DataLicence:
    """The licence facts for a dataset name from params.yaml (``mimic_cxr``, ``openi``, …)."""
    key = dataset.lower()
    if "mimic" in key:
        return _MIMIC
    if "openi" in key or "open_i" in key or "iu_xray" in key:
        return _OPENI
    if "vqa_rad" in key or "vqarad" in key:
        return _VQA_RAD
    if key == "sample":
        return _SAMPLE
    return _UNKNOWN


@dataclass(frozen=True)
class CardFacts:
    """Everything a card says, gathered where the checkpoint is saved.

    ``kind`` is ``pretraining`` or a task name; ``model_class`` the saved class (``config.json``
    ``architectures``); ``architecture`` the config fields a reader needs (backbone, sizes,
    mask); ``params`` the training settings as used; ``split_counts`` samples per split of the
    prepared dataset and ``shards`` the number of shard files, when known; ``metrics`` numbers
    known at save time; ``initialised_from`` where the weights started; ``labels`` the output
    classes of a classifier, in output order; ``step`` set on an intermediate checkpoint.
    """

    kind: str
    dataset: str
    model_class: str
    architecture: dict[str, Any]
    params: dict[str, Any]
    split_counts: dict[str, int] = field(default_factory=dict)
    shards: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    initialised_from: dict[str, str] = field(default_factory=dict)
    base_model: str | None = None  # a Hub id, for the front matter's base_model
    labels: tuple[str, ...] = ()
    step: int | None = None
    model_module: str = ""  # where ``model_class`` is defined, for the loading example


#: Old Hub aliases → the repository id the Hub front matter's ``base_model`` links to.
_HUB_ALIASES: dict[str, str] = {"bert-base-uncased": "google-bert/bert-base-uncased"}


def bert_hub_id(initialised_from: dict[str, str]) -> str | None:
    """The Hub id the text weights came from (``base_model``), from the ``text`` entry that
    :func:`medvill.model.medvill.load_pretrained_parts` writes (``<id>@<commit> (n tensors)``);
    None for random or local weights."""
    text = initialised_from.get("text", "")
    if "@" not in text:
        return None
    repo_id = text.split("@", 1)[0]
    return _HUB_ALIASES.get(repo_id, repo_id)


def architecture_facts(config: Any) -> dict[str, Any]:
    """The fields of a :class:`~medvill.config.MedViLLConfig` that describe the network."""
    names = (
        "backbone", "image_size", "num_sampled_visual", "num_hidden_layers", "hidden_size",
        "num_attention_heads", "intermediate_size", "vocab_size", "max_text_tokens",
        "attention_mask_type", "visual_position",
    )  # fmt: skip
    return {name: getattr(config, name) for name in names if hasattr(config, name)}


def dataset_facts(index_path: Path) -> tuple[str, dict[str, int], int | None]:
    """(dataset name, samples per split, number of shards) from a shards ``index.json``.

    A missing or unreadable index gives the folder name and no counts: the card then says the
    counts are unknown rather than failing the save of a trained model.
    """
    index_path = Path(index_path)
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        splits = index["splits"]
        counts = {name: int(split["total"]) for name, split in splits.items()}
        shards = sum(len(split["shards"]) for split in splits.values())
        return str(index.get("dataset") or index_path.parent.name), counts, shards
    except (OSError, ValueError, KeyError, TypeError):
        return index_path.parent.name, {}, None


def checkpoint_facts(
    kind: str,
    model: Any,
    index_path: Path,
    params: dict[str, Any],
    **more: Any,
) -> CardFacts:
    """Facts for a model about to be saved: its class and config, the dataset's shard index
    (name and counts), the settings used; ``more`` fills the remaining :class:`CardFacts`."""
    dataset, counts, shards = dataset_facts(index_path)
    return CardFacts(
        kind=kind,
        dataset=dataset,
        model_class=type(model).__name__,
        model_module=type(model).__module__,
        architecture=architecture_facts(model.config),
        params=params,
        split_counts=counts,
        shards=shards,
        **more,
    )


def build_model_card(facts: CardFacts) -> str:
    """The model card text (YAML front matter + Markdown) for one checkpoint."""
    if facts.kind not in _KINDS:
        raise ValueError(f"unknown checkpoint kind {facts.kind!r}; known: {sorted(_KINDS)}")
    summary, pipeline_tag = _KINDS[facts.kind]
    licence = data_licence(facts.dataset)
    front: dict[str, Any] = {
        "library_name": "transformers",
        "pipeline_tag": pipeline_tag,
        "license": licence.hub_license,
        "tags": ["medvill", "medical", "radiology", "chest-x-ray", "vision-language", facts.kind],
        "datasets": [facts.dataset],
        "language": ["en"],
    }
    if licence.hub_license == "other":
        front["license_name"] = "see-model-card"
    if facts.base_model:
        front["base_model"] = facts.base_model
    title = card_title(facts.kind, facts.dataset)
    if facts.step is not None:
        title += f" (intermediate checkpoint, step {facts.step})"
    parts = [
        "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---",
        f"# {title}",
        f"{summary}. Written by the medvill toolkit when this checkpoint was saved.",
        _how_to_load(facts),
        "## Model\n\n" + _table(facts.architecture, ("field", "value")),
        _initialisation(facts),
        _data_section(facts, licence),
        "## Training parameters\n\n```json\n"
        + json.dumps(facts.params, indent=2, sort_keys=True, default=str)
        + "\n```",
        _metrics_section(facts),
    ]
    if facts.labels:
        rows = {str(i): name for i, name in enumerate(facts.labels)}
        parts.append("## Output labels (`id2label`)\n\n" + _table(rows, ("id", "label")))
    parts += [_INTENDED_USE, _licence_section(facts, licence)]
    return "\n\n".join(p for p in parts if p) + "\n"


def write_model_card(folder: Path, facts: CardFacts) -> Path:
    """Write ``folder/README.md``; returns its path."""
    path = Path(folder) / CARD_FILE
    path.write_text(build_model_card(facts), encoding="utf-8")
    return path


def _how_to_load(facts: CardFacts) -> str:
    lines = [
        "## How to load",
        "",
        "```python",
        "import medvill  # registers the MedViLL classes with transformers' Auto classes",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        'encoder = AutoModel.from_pretrained("path/to/this/folder")  # the joint encoder',
        'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")',
    ]
    if facts.model_module:
        lines += [
            f"from {facts.model_module} import {facts.model_class}",
            "",
            f'model = {facts.model_class}.from_pretrained("path/to/this/folder")  # with its heads',
        ]
    lines += [
        "```",
        "",
        f"The saved model is `{facts.model_class}` (`config.json` → `architectures`). It takes a "
        "normalised image tensor plus a tokenised text block, so transformers' `pipeline()` "
        "cannot drive it; use the `medvill` commands or classes.",
    ]
    return "\n".join(lines)


def _table(rows: dict[str, Any], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in rows.items()]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _initialisation(facts: CardFacts) -> str:
    if not facts.initialised_from:
        return ""
    return "## Initialisation\n\n" + _table(facts.initialised_from, ("part", "started from"))


def _data_section(facts: CardFacts, licence: DataLicence) -> str:
    lines = [
        "## Training data",
        "",
        f"Dataset `{facts.dataset}`" + (f" ({licence.name})" if licence.name else "") + ", "
        "prepared by the medvill pipeline (cropped 512² images, the chosen report section, "
        "CheXpert labels from the offline labeler, patient-level splits).",
        "",
        f"This checkpoint trained on {_TASK_DATA.get(facts.kind, 'the task files')}.",
    ]
    if facts.split_counts:
        counts = dict(facts.split_counts)
        if facts.shards is not None:
            counts["shard files"] = facts.shards
        lines += ["", "Prepared samples (images) per split:", "", _table(counts, ("split", "n"))]
    else:
        lines += ["", "Sample counts: unknown (no shard index was readable at save time)."]
    return "\n".join(lines)


def _metrics_where(kind: str, dataset: str) -> str:
    """Where a checkpoint's test results appear, per family's evaluation command."""
    if kind.endswith("pretraining"):
        return "`metrics.csv` beside the checkpoints"
    if kind.startswith("xvl_"):
        task = kind.removeprefix("xvl_")
        return f"`reports/{dataset}/xvl/{task}/metrics.json` after `medvill evaluate --model xvl`"
    if kind == "contrastive_retrieval":
        return f"`reports/{dataset}/zoo-<model>/metrics.json` after `medvill evaluate-zoo`"
    return f"`reports/{dataset}/{kind}/metrics.json` after `medvill evaluate`"


def _metrics_section(facts: CardFacts) -> str:
    if not facts.metrics:
        where = _metrics_where(facts.kind, facts.dataset)
        return f"## Metrics\n\nNone recorded at save time; see {where}."
    flat = {
        k: v
        for k, v in facts.metrics.items()
        if isinstance(v, int | float | str) and k not in _TIMING_KEYS
    }
    note = (
        "Training-time numbers (losses on the training data, validation scores used for "
        "model selection). Test-set results come from `medvill evaluate`; speed and wall "
        "time are in the run's `metrics.json`."
    )
    return "## Metrics\n\n" + note + "\n\n" + _table(flat, ("metric", "value"))


_INTENDED_USE = """## Intended use and limitations

* **Research only.** This model is for research on medical vision-language methods. It is not
  a medical device, has not been validated clinically and must not be used for diagnosis,
  triage, treatment decisions or any other clinical purpose.
* Trained on one dataset's chest X-rays and English reports; performance on other hospitals,
  scanners, populations, views or languages is unknown and likely lower.
* Labels come from an automatic rule-based CheXpert labeler on the report text, not from
  radiologists reading the images: they are noisy, and uncertain mentions follow the label
  policy in the parameters above.
* Generated text can be fluent and wrong; the model can reproduce phrases of its training
  reports and reflect the biases of the source population."""


def _licence_section(facts: CardFacts, licence: DataLicence) -> str:
    link = f" ({licence.link})" if licence.link else ""
    lines = [
        "## Licence notes",
        "",
        f"* **Training data:** {licence.licence}{link}. {licence.implication}",
        "* **Code:** the medvill toolkit is MIT-licensed.",
    ]
    if facts.base_model:
        lines.append(
            f"* **Text weights:** initialised from `{facts.base_model}` (for BERT: Apache-2.0); "
            "the commit is in the initialisation table above."
        )
    if facts.initialised_from.get("visual") == "imagenet":
        lines.append(
            "* **Image backbone:** initialised from torchvision's ImageNet ResNet weights "
            "(BSD-3-Clause code); ImageNet's terms of access cover non-commercial research and "
            "education, which may matter for uses beyond research."
        )
    return "\n".join(lines)
