"""MedViLL: the model half of the toolkit (model, masks, pretraining from WebDataset shards).

`pipeline/` prepares the data without torch; this package needs the ``train`` extra.
Importing it registers the model with transformers' Auto classes (``AutoConfig``,
``AutoModel``, ``AutoModelForPreTraining``), so a checkpoint folder loads the way any Hub
model does: ``import medvill; AutoModel.from_pretrained("models/sample/pretrain/final")``.
"""

import medvill.contrastive.model  # registers "medvill_contrastive" with the Auto classes too
import medvill.model.medvill  # noqa: F401 - registers "medvill" with the transformers Auto classes

__all__ = ["__version__"]

__version__ = "0.1.0"
