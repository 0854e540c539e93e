"""dendPLRNN: the dendritic PLRNN, each unit's nonlinearity a weighted sum of thresholded ReLUs.

Tractable Dendritic RNNs for Reconstructing Nonlinear Dynamical Systems (Brenner, Hess,
Mikhaeil, Bereska, Monfared, Kuo, Durstewitz; ICML 2022, arXiv:2207.02542):

    z_t = A ⊙ z_{t-1} + W Σ_b α_b ReLU(z_{t-1} − θ_b) + h₀ + C x_t,   W off-diagonal
    clipped: α_b (ReLU(z − θ_b) − ReLU(z)) in place of α_b ReLU(z − θ_b)

The initialisation is the authors' code's (DurstewitzLab/GTF-shPLRNN, `dendritic_plrnn.jl`):
A, W, h₀ as the PLRNN's (`recur.layers.plrnn`), α ~ U(±1/√B), θ ~ N(0, 1) (the code's
option without data; with data it spreads θ over the data's range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..ops.rnn import DendPLRNN as DendPLRNNCell
from .plrnn import PLRNNLayer
from .registry import register_mixer
from .rnn_common import RNNConfig


@dataclass(kw_only=True)
class DendPLRNNConfig(RNNConfig):
    # B: the thresholded ReLU bases of each unit's nonlinearity
    num_bases: int = 5
    # the clipped bases α_b (ReLU(z − θ_b) − ReLU(z)): bounded orbits when ‖A‖ < 1
    clipped: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.num_bases, int) or self.num_bases < 1:
            raise ValueError(f"num_bases must be a positive int; got {self.num_bases!r}")
        if not isinstance(self.clipped, bool):
            raise ValueError(f"clipped must be a bool; got {self.clipped!r}")


@register_mixer("dendplrnn")
class DendPLRNN(PLRNNLayer):
    """b holds (A, h₀, θ_1 … θ_B) per unit; α [B] is one number per basis (the paper's),
    given to the op as the same value for every unit."""

    Config = DendPLRNNConfig

    def make_cell(self, config):
        return DendPLRNNCell(config.num_bases, config.clipped)

    def weight_shapes(self, config):
        B = config.num_bases
        return {"R": (1, self.heads, self.head_dim, self.head_dim), "b": (2 + B, self.heads, self.head_dim), "alpha": (B,)}

    def op_weights(self, direction):
        B = self.config.num_bases
        alpha = direction.alpha[:, None, None].expand(B, self.heads, self.head_dim)
        return direction.R, torch.cat([direction.b[:2], alpha.to(direction.b.dtype), direction.b[2:]])

    def reset_parameters(self) -> None:
        """A, W, h₀ as the PLRNN's; α ~ U(±1/√B), θ ~ N(0, 1)."""
        super().reset_parameters()
        B = self.config.num_bases
        with torch.no_grad():
            for direction in self.directions:
                nn.init.uniform_(direction.alpha, -1 / math.sqrt(B), 1 / math.sqrt(B))
                nn.init.normal_(direction.b[2:])
