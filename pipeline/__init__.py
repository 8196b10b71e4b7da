"""medvill data preparation: raw chest X-rays + reports → clean, versioned training data.

This package never imports torch, so data machines without the deep-learning stack can run it.
"""

__version__ = "0.1.0"
