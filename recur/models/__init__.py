"""Generic models over the mixer registry: one block, one backbone, one LM."""

from .block import Block, SwiGLU
from .heads import HeadOutput, SequenceClassifier, SequenceRegressor
from .lm import LM, Backbone, LMConfig, LMOutput

__all__ = [
    "LM",
    "Backbone",
    "Block",
    "HeadOutput",
    "LMConfig",
    "LMOutput",
    "SequenceClassifier",
    "SequenceRegressor",
    "SwiGLU",
]
