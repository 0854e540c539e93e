"""Generic models over the mixer registry: one block, one backbone, one LM."""

from .block import Block, SwiGLU
from .lm import LM, Backbone, LMConfig, LMOutput

__all__ = ["LM", "Backbone", "Block", "LMConfig", "LMOutput", "SwiGLU"]
