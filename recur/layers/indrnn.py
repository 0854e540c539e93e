"""IndRNN: independently recurrent units, one recurrent weight per unit.

Independently Recurrent Neural Network (IndRNN): Building A Longer and Deeper RNN
(Li, Li, Cook, Zhu, Gao; arXiv:1803.04831):

    h_t = ReLU(W x_t + u ⊙ h_{t-1} + b)

The Jacobian is diagonal, so the layer runs the newton family: Newton's method (ParaRNN)
by default, or the sequential loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops.newton import NEWTON
from ..ops.rnn import IndRNN as IndRNNCell
from .registry import register_mixer
from .rnn_common import RNNConfig, RNNLayer


@dataclass(kw_only=True)
class IndRNNConfig(RNNConfig):
    # |u| <= recurrent_max keeps h bounded; the paper ties it to the sequence length
    recurrent_max: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.recurrent_max > 0:
            raise ValueError(f"recurrent_max must be positive; got {self.recurrent_max}")


@register_mixer("indrnn")
class IndRNN(RNNLayer):
    Config = IndRNNConfig
    cell_type = IndRNNCell
    family = NEWTON

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            for direction in self.directions:
                # the paper's init: u uniform in [0, recurrent_max], biases zero
                nn.init.uniform_(direction.R, 0, min(self.config.recurrent_max, 1.0))
                direction.b.zero_()
