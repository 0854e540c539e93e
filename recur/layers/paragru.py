"""ParaGRU: a GRU with diagonal recurrence, trainable in parallel over time by Newton.

ParaRNN: Unlocking Parallel Training of Nonlinear RNNs for Large Language Models
(Danieli, Rodríguez, Sarabia, Suau, Zappella; arXiv:2510.21450):

    z = σ(a_z ⊙ h + W_z x + b_z),  r = σ(a_r ⊙ h + W_r x + b_r),
    ĥ = tanh(a_h ⊙ (h ⊙ r) + W_h x + b_h),  h_t = z ⊙ ĥ + (1 − z) ⊙ h_{t-1}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..ops.newton import NEWTON
from ..ops.rnn import ParaGRU as ParaGRUCell
from .registry import register_mixer
from .rnn_common import RNNConfig, RNNLayer


@dataclass(kw_only=True)
class ParaRNNConfig(RNNConfig):
    # with impl="newton" (or "auto"): run the solver's whole-sequence work as
    # torch.compile'd fused loops (the op's `compile=True`); each new length compiles once
    compile: bool = False


class ParaRNNLayer(RNNLayer):
    """An RNN layer whose cell has a diagonal Jacobian, so Newton can train it in parallel."""

    family = NEWTON

    def op_options(self) -> dict:
        return {"compile": self.config.compile}

    def reset_parameters(self) -> None:
        """ParaRNN's init: diagonal weights N(0, (2/√(5d))²), input projection Xavier-uniform,
        biases zero except the first gate's, −linspace(0, 1) over the units."""
        d = self.hidden
        with torch.no_grad():
            for direction in self.directions:
                nn.init.normal_(direction.R, std=2 / (5 * d) ** 0.5)
                nn.init.xavier_uniform_(direction.in_proj.weight)
                direction.b.zero_()
                direction.b[0] = -torch.linspace(0, 1, d).reshape(self.heads, self.head_dim)


@dataclass(kw_only=True)
class ParaGRUConfig(ParaRNNConfig):
    """ParaGRU takes the options every RNN layer has (RNNConfig), and `compile`."""


@register_mixer("paragru")
class ParaGRU(ParaRNNLayer):
    Config = ParaGRUConfig
    cell_type = ParaGRUCell
