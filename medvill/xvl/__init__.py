"""Medical X-VL beside MedViLL, on the same shards: a ViT image encoder, BERT text layers and
fusion layers that cross-attend to the image (the ALBEF split), pretrained with image–text
contrast (momentum encoders + feature queue), matching with mined hard negatives and masked
words with momentum distillation; and the cross-attention maps that show which image regions
a report's words look at. Importing it registers ``model_type: xvl`` with transformers' Auto
classes.
"""

import medvill.xvl.model  # noqa: F401 - registers "xvl" with the transformers Auto classes
