"""MedViLL-compatible task files built by the ``pairs`` stage.

One module per file family, so each format can be read next to its section in
``docs/formats.md``: ``common`` (the task record and the label string), ``jsonl`` (report/
image JSONL, §1), ``irm`` (IRM negatives, §3), ``retrieval`` (I2T/T2I blocks, §2) and ``r2gen``
(R2Gen ``annotation.json``, §5). The stage itself (joining inputs, rejects, stats) is
``pipeline.pairs``.
"""
