"""Localized annotations (boxes and masks) of chest X-ray datasets.

Detection and segmentation datasets (RSNA Pneumonia, SIIM-ACR Pneumothorax, the NIH
ChestX-ray14 boxes, Object-CXR) and the synthetic corpus mark *where* a finding is. Their
adapters hand the annotations to the ingest stage in source pixels (``annotations.py``); the
``localized`` stage (``stage.py``) moves each one through the images stage's crop, resize and
pad (``geometry.py``) so that boxes and masks sit on the 512² training image, and stores masks
as run lengths (``rle.py``).
"""
