"""A learnable synthetic chest X-ray corpus: images, reports, labels and VQA from a seed.

Users run it (``medvill-prep synthesize``) to check that a pipeline or model change still
*learns* before spending GPU time on MIMIC-CXR: every image shows the signs its report
describes, so a shuffled label, broken mask or misaligned pair shows up as lost accuracy.
Modules, one job each: ``findings`` (what a study shows), ``drawing`` (pixels), ``reports``
(text + ground truth), ``vqa`` (questions), ``writer`` (the raw tree), ``score`` (labeler F1).
numpy and Pillow only; nothing is downloaded.
"""

from pipeline.synthetic.writer import CorpusConfig, plan_corpus, read_ground_truth, write_corpus

__all__ = ["CorpusConfig", "plan_corpus", "read_ground_truth", "write_corpus"]
