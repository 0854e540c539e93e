"""shPLRNN: the shallow PLRNN, a diagonal linear part plus one hidden ReLU layer.

Generalized Teacher Forcing for Learning Chaotic Dynamics (Hess, Monfared, Brenner,
Durstewitz; ICML 2023, arXiv:2306.04406):

    z_t = A ⊙ z_{t-1} + W₁ ReLU(W₂ z_{t-1} + h₂) + h₁ + C x_t
    clipped: W₁ (ReLU(W₂ z_{t-1} + h₂) − ReLU(W₂ z_{t-1})) in place of W₁ ReLU(W₂ z_{t-1} + h₂)

The initialisation is the authors' code's (DurstewitzLab/GTF-shPLRNN, `shallow_plrnn.jl`):
A the diagonal of the PLRNN's normalised positive-definite matrix (`recur.layers.plrnn`),
h₁ = 0, W₁ ~ U(±1/√L), W₂ ~ U(±1/√M), h₂ = 0 (clipped: h₂ ~ U(±1/√L)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..ops.rnn import ShallowPLRNN as ShallowPLRNNCell
from .plrnn import PLRNNLayer, normalized_positive_definite
from .registry import register_mixer
from .rnn_common import RNNConfig, RNNLayer


@dataclass(kw_only=True)
class ShallowPLRNNConfig(RNNConfig):
    # L: hidden units of the ReLU layer, per head
    hidden_dim: int = 50
    # the clipped layer ReLU(W₂ z + h₂) − ReLU(W₂ z): bounded orbits when ‖A‖ < 1
    clipped: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.hidden_dim, int) or self.hidden_dim < 1:
            raise ValueError(f"hidden_dim must be a positive int; got {self.hidden_dim!r}")
        if not isinstance(self.clipped, bool):
            raise ValueError(f"clipped must be a bool; got {self.clipped!r}")


@register_mixer("shplrnn")
class ShallowPLRNN(PLRNNLayer):
    """R [2, heads, head_dim, L] holds (W₁, W₂ᵀ); b [1, heads, 2·head_dim + L] holds (A, h₁, h₂)."""

    Config = ShallowPLRNNConfig

    def make_cell(self, config):
        return ShallowPLRNNCell(config.hidden_dim, config.clipped)

    def reset_parameters(self) -> None:
        """A = diag(K) (K normalised positive definite), h₁ = 0; W₁ ~ U(±1/√L), W₂ ~ U(±1/√M);
        h₂ = 0, or U(±1/√L) when clipped."""
        RNNLayer.reset_parameters(self)
        M, L = self.head_dim, self.config.hidden_dim
        with torch.no_grad():
            for direction in self.directions:
                direction.b.zero_()
                for head in range(self.heads):
                    direction.b[0, head, :M] = normalized_positive_definite(M).diagonal().to(direction.b.dtype)
                nn.init.uniform_(direction.R[0], -1 / math.sqrt(L), 1 / math.sqrt(L))
                nn.init.uniform_(direction.R[1], -1 / math.sqrt(M), 1 / math.sqrt(M))
                if self.config.clipped:
                    nn.init.uniform_(direction.b[0, :, 2 * M :], -1 / math.sqrt(L), 1 / math.sqrt(L))
