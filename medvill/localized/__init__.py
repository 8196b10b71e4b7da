"""Localized downstream evaluation (LoVT's protocol): detection and segmentation heads on a
pretrained image encoder, trained on 1 %, 10 % and 100 % of a dataset's annotated training
images, scored by mAP and Dice with bootstrap intervals (``medvill localized-eval``).

One job per module: :mod:`targets` (shard ``regions`` → boxes and masks), :mod:`scores`
(mAP, Dice), :mod:`backbone` (the ResNet trunk of a checkpoint, ImageNet or random),
:mod:`heads` (Faster R-CNN with FPN, the FPN segmentation decoder), :mod:`experiment`
(fractions × seeds × initialisations), :mod:`results` (JSON, plot, summary rows).
"""
