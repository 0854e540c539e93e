"""Gated DeltaProduct: n_h Householder (delta-rule) steps per token.

DeltaProduct: Improving State-Tracking in Linear RNNs via Householder Products (Siems,
Carstensen, Zela, Hutter, Pontil, Grazzi; arXiv:2502.10297):

    S_t = α_t Π_{j=n_h..1} (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) S_{t-1} + Σ_j (writes),   o_t = S_tᵀ q_t

with n_h keys, values and β per token (β = 2σ(·) by default: reflections allowed), the
Gated DeltaNet decay and output gate.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ops.delta import DELTA_PRODUCT
from .gated_deltanet import GatedDeltaNet, GatedDeltaNetConfig
from .registry import register_mixer


@dataclass(kw_only=True)
class DeltaProductConfig(GatedDeltaNetConfig):
    # Householder steps per token (n_h)
    num_householder: int = 2
    allow_neg_eigval: bool = True
    # the per-token decay α_t; False keeps α = 1 (DeltaProduct without forgetting)
    use_forget_gate: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.num_householder, int) or self.num_householder < 1:
            raise ValueError(f"num_householder must be a positive int; got {self.num_householder!r}")


@register_mixer("deltaproduct")
class DeltaProduct(GatedDeltaNet):
    Config = DeltaProductConfig
    family = DELTA_PRODUCT

    def _keys_per_token(self) -> int:
        return self.config.num_householder
