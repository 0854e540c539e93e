"""RHN: recurrent highway network, several highway micro-steps per token.

Recurrent Highway Networks (Zilly, Srivastava, Koutník, Schmidhuber; arXiv:1607.03474),
coupled carry gate c = 1 − t:

    s_l = tanh(W_H x_t [l = 1] + R_Hl s_{l-1} + b_Hl) ⊙ t_l + s_{l-1} ⊙ (1 − t_l),
    t_l = σ(W_T x_t [l = 1] + R_Tl s_{l-1} + b_Tl),   s_0 = h_{t-1},   h_t = s_L
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..ops.rnn import RHN as RHNCell
from .registry import register_mixer
from .rnn_common import RNNConfig, RNNLayer


@dataclass(kw_only=True)
class RHNConfig(RNNConfig):
    # recurrence depth L: highway micro-steps per token
    depth: int = 2
    # initial transform-gate bias: negative favours carrying the state (the paper's trick)
    transform_bias: float = -2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ValueError(f"depth must be a positive int; got {self.depth!r}")


@register_mixer("rhn")
class RHN(RNNLayer):
    Config = RHNConfig
    cell_type = RHNCell

    def gate_counts(self, config):
        return 2 * config.depth, 2 * config.depth

    def reset_parameters(self) -> None:
        super().reset_parameters()
        with torch.no_grad():
            for direction in self.directions:
                direction.b[1::2] = self.config.transform_bias
