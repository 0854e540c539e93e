"""Gated DeltaNet: the delta rule with a Mamba-2 style decay gate and an output gate.

Gated Delta Networks: Improving Mamba2 with Delta Rule (Yang, Kautz, Hatamizadeh;
arXiv:2412.06464):

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,   α_t = exp(−exp(A) softplus(x_t W_a + dt_bias)),
    y_t = (RMSNorm(S_tᵀ q_t) ⊙ SiLU(x_t W_g)) W_o
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .deltanet import DeltaNet, DeltaNetConfig
from .parts import DecayGateConfig, GatedRMSNorm, decay_gate, decay_gate_parameters, split_heads
from .registry import register_mixer


@dataclass(kw_only=True)
class GatedDeltaNetConfig(DeltaNetConfig, DecayGateConfig):
    """DeltaNet's options and the decay gate's (a_min, a_max, dt_min, dt_max)."""


@register_mixer("gated_deltanet")
class GatedDeltaNet(DeltaNet):
    Config = GatedDeltaNetConfig

    def __init__(self, config: GatedDeltaNetConfig) -> None:
        super().__init__(config)
        self.use_forget_gate = getattr(config, "use_forget_gate", True)
        if self.use_forget_gate:
            gates = config.num_heads * self._decays_per_token()
            self.a_proj = nn.Linear(config.d_model, gates, bias=False)
            self.A_log, self.dt_bias = decay_gate_parameters(gates, config)

    def _decays_per_token(self) -> int:
        """Decay gates per token and head: one, which all keys of the token share."""
        return 1

    def _init_output(self) -> None:
        self.g_proj = nn.Linear(self.config.d_model, self.value_dim, bias=False)
        self.norm = GatedRMSNorm(self.head_v)

    def _log_decay(self, x: torch.Tensor) -> torch.Tensor | None:
        if not self.use_forget_gate:
            return None
        return decay_gate(self.a_proj(x), self.A_log, self.dt_bias)[0]

    def _output(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.norm(o, split_heads(self.g_proj(x), self.config.num_heads))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"no_decay": [self.A_log, self.dt_bias]} if self.use_forget_gate else {}
