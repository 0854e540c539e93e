"""PLRNN: the piecewise-linear RNN, a diagonal linear part plus ReLU units coupled off the diagonal.

Identifying nonlinear dynamical systems with multiple time scales and long-range
dependencies (Schmidt, Koppe, Monfared, Beutelspacher, Durstewitz; ICLR 2021,
arXiv:1910.03471):

    z_t = A ⊙ z_{t-1} + W ReLU(z_{t-1}) + h + C x_t,   A diagonal, W off-diagonal

The initialisation is the authors' code's (DurstewitzLab/GTF-shPLRNN, `initialization.jl`;
the same in the dendPLRNN's Python code): Talathi and Vartak's normalised positive-definite
matrix (arXiv:1511.03771), K = RᵀR/M + I with R ~ N(0, 1), divided by its largest
eigenvalue; A = diag(K), W = K off the diagonal, h = 0. C (the input projection; zero input
in reconstruction) keeps the RNN layers' default. The dendritic and shallow PLRNNs
(`dendplrnn`, `shplrnn`) build on this file.
"""

from __future__ import annotations

import torch

from ..ops.rnn import PLRNN as PLRNNCell
from .registry import register_mixer
from .rnn_common import RNNConfig, RNNLayer


def normalized_positive_definite(M: int) -> torch.Tensor:
    """K / λmax(K) with K = RᵀR/M + I, R ~ N(0, 1) [M, M] (float64): Talathi and Vartak's
    matrix, the PLRNN papers' A (its diagonal) and W (the rest)."""
    R = torch.randn(M, M, dtype=torch.float64)
    K = R.T @ R / M + torch.eye(M, dtype=torch.float64)
    return K / torch.linalg.eigvalsh(K).max()


class PLRNNLayer(RNNLayer):
    """What the three layers share: a latent z with a diagonal linear part A (b[0])."""

    latent_map = True

    def reset_parameters(self) -> None:
        """A = diag(K), W = K off the diagonal (K normalised positive definite); h = 0."""
        super().reset_parameters()
        with torch.no_grad():
            for direction in self.directions:
                direction.b.zero_()
                for head in range(self.heads):
                    K = normalized_positive_definite(self.head_dim)
                    direction.b[0, head] = K.diagonal().to(direction.b.dtype)
                    direction.R[0, head] = (K - torch.diag(K.diagonal())).to(direction.R.dtype)


@register_mixer("plrnn")
class PLRNN(PLRNNLayer):
    Config = RNNConfig
    cell_type = PLRNNCell
