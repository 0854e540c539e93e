"""Generic models over the mixer registry: one block, one backbone, input adapters and heads
around it, the LM, and the encoder–decoder."""

from .block import Block, SwiGLU
from .heads import Head, HeadConfig
from .inputs import ImageInput, InputConfig, PointInput, TokenInput, VectorInput
from .lm import LM, Backbone, LMConfig, LMOutput
from .seq2seq import EncoderDecoder, Seq2SeqConfig, Seq2SeqOutput
from .sequence import ModelOutput, SequenceModel

__all__ = [
    "LM",
    "Backbone",
    "Block",
    "EncoderDecoder",
    "Head",
    "HeadConfig",
    "ImageInput",
    "InputConfig",
    "LMConfig",
    "LMOutput",
    "ModelOutput",
    "PointInput",
    "Seq2SeqConfig",
    "Seq2SeqOutput",
    "SequenceModel",
    "SwiGLU",
    "TokenInput",
    "VectorInput",
]
