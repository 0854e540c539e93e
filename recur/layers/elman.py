"""Elman RNN: the simple recurrent network, tanh or ReLU.

Finding Structure in Time (Elman; Cognitive Science 1990); torch.nn.RNN's layout:

    h_t = φ(W x_t + R h_{t-1} + b),   φ = tanh or ReLU
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ops.rnn import Elman as ElmanCell
from .registry import register_mixer
from .rnn_common import RNNConfig, RNNLayer


@dataclass(kw_only=True)
class ElmanConfig(RNNConfig):
    # "tanh" or "relu"
    activation: str = "tanh"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.activation not in ("tanh", "relu"):
            raise ValueError(f"activation must be 'tanh' or 'relu'; got {self.activation!r}")


@register_mixer("elman")
class Elman(RNNLayer):
    Config = ElmanConfig

    def make_cell(self, config):
        return ElmanCell(config.activation)
