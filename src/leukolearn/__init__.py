"""leukolearn: how many annotated images does a blast detector need?

A reproduction and extension of Schouten et al., "Tens of images can suffice to
train neural networks for malignant leukocyte detection", Sci Rep 11, 7995 (2021).
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("leukolearn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
