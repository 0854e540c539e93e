"""AL-RNN: almost-linear RNN, linear units plus a few ReLU units, for dynamical systems.

Almost-Linear RNNs Yield Highly Interpretable Symbolic Codes in Dynamical Systems
Reconstruction (Brenner, Hemmer, Monfared, Durstewitz; NeurIPS 2024, arXiv:2410.14240):

    z_t = A ⊙ z_{t-1} + W φ*(z_{t-1}) + h + B x_t,   φ* = ReLU on the last P units, identity elsewhere
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops.rnn import ALRNN as ALRNNCell
from .registry import register_mixer
from .rnn_common import RNNConfig, RNNLayer


@dataclass(kw_only=True)
class ALRNNConfig(RNNConfig):
    # P: ReLU units per head (the rest are linear); 2^P linear subregions per head
    num_relu: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        hidden = self.d_model // 2 if self.bidirectional else self.d_model
        if not isinstance(self.num_relu, int) or not 0 <= self.num_relu <= hidden // self.num_heads:
            raise ValueError(f"num_relu must be an int in [0, head size {hidden // self.num_heads}]; got {self.num_relu!r}")


@register_mixer("alrnn")
class ALRNN(RNNLayer):
    Config = ALRNNConfig
    latent_map = True

    def make_cell(self, config):
        return ALRNNCell(config.num_relu)

    def reset_parameters(self) -> None:
        """The paper's init: A = diag(K) / λmax(K) with K = RᵀR/M + I, R ~ N(0, 1);
        W ~ N(0, 0.01²); h = 0."""
        super().reset_parameters()
        M = self.head_dim
        with torch.no_grad():
            for direction in self.directions:
                for head in range(self.heads):
                    R = torch.randn(M, M, dtype=torch.float64)
                    K = R.T @ R / M + torch.eye(M, dtype=torch.float64)
                    direction.b[0, head] = (K.diagonal() / torch.linalg.eigvalsh(K).max()).to(direction.b.dtype)
                direction.b[1].zero_()
                nn.init.normal_(direction.R, std=0.01)
