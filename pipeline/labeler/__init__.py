"""Offline CheXpert-compatible report labeler (same labels as stanfordmlgroup/chexpert-labeler).

No Java, no downloads: the original's phrase and rule files (MIT, ``data/LICENSE``) run on our
own pattern matcher over spaCy parses converted to CoreNLP UD conventions. Entry points:
:func:`label_reports` (texts -> DataFrame of the 14 labels) and :func:`label_reports_csv`
(the ``label.py`` drop-in used by ``medvill-prep label-reports``).
"""

from pipeline.labeler.aggregate import format_labeled_csv, write_labeled_csv
from pipeline.labeler.api import Labeler, label_reports, label_reports_csv, read_reports_csv

__all__ = [
    "Labeler",
    "format_labeled_csv",
    "label_reports",
    "label_reports_csv",
    "read_reports_csv",
    "write_labeled_csv",
]
