"""MedViLL: the model half of the toolkit (model, masks, pretraining from WebDataset shards).

`pipeline/` prepares the data without torch; this package needs the ``train`` extra.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
