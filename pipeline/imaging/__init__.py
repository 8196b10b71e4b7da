"""Pure image functions behind the ``images`` stage (no file-system or stage I/O here).

The stage is a chain of small functions so each step can be tested on its own:
``decode`` (bytes → grey array at a reduced scale), ``margins`` (grey array → crop box),
``resize`` (crop → resize → pad → encoded bytes) and ``montage`` (the DVC crop plot).
"""
