"""HGRN-2: a gated linear RNN whose state is expanded by an outer product.

HGRN2: Gated Linear RNNs with State Expansion (Qin, Yang, Sun, Shen, Li, Sun, Zhong;
arXiv:2404.07904), §3:

    f_t = β + (1 - β) σ(x_t W_f),   S_t = diag(f_t) S_{t-1} + (1 - f_t) i_tᵀ,
    y_t = RMSNorm(S_tᵀ SiLU(x_t W_q)) W_o

The input gate is tied to the forget gate (1 - f), so the layer is GLA with key 1 - f
and log decay log f. β is the forget gate's lower bound. As in HGRN (Hierarchically Gated
Recurrent Neural Network for Sequence Modeling, Qin, Yang, Zhong; arXiv:2311.04823, §3.3),
the lower bounds of a model's L layers are learned jointly and rise with depth:

    P = softmax(Γ) over the layers,   β^l = Σ_{i<=l} P_i − P_0   (Γ ∈ R^{L×K}, per channel)

so the first layer has β = 0 and forgets freely, and each later layer keeps more of its
past. `lower_bound="fixed"` uses `forget_lower_bound` instead (which may itself rise with
depth through the model's per-layer options).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.gla import GLA, gla
from .base import MixerConfig, RecurrentMixer, State
from .parts import RMSNorm, merge_heads, split_heads, state_dtype
from .registry import register_mixer


@dataclass(kw_only=True)
class HGRN2Config(MixerConfig):
    num_heads: int = 4
    # state expansion, the paper's expand ratio: the key width per head, so that each head's
    # state is [d_state, d_model / num_heads] (as Mamba-2's is [d_state, head_dim])
    d_state: int = 8
    # "learned": HGRN's lower bounds, learned across the model's layers and rising with depth
    # (a layer on its own is the first layer: β = 0); "fixed": forget_lower_bound
    lower_bound: str = "learned"
    # β in [0, 1) for lower_bound="fixed"
    forget_lower_bound: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.heads(self.num_heads)
        if self.d_state <= 0:
            raise ValueError(f"d_state must be positive; got {self.d_state}")
        if self.lower_bound not in ("learned", "fixed"):
            raise ValueError(f"lower_bound must be 'learned' or 'fixed'; got {self.lower_bound!r}")
        if not 0.0 <= self.forget_lower_bound < 1.0:
            raise ValueError(f"forget_lower_bound must be in [0, 1); got {self.forget_lower_bound}")
        if self.lower_bound == "learned" and self.forget_lower_bound != 0.0:
            raise ValueError("forget_lower_bound is used with lower_bound='fixed'; set that too, or leave it at 0")


class DepthLowerBounds(nn.Module):
    """HGRN's lower bounds of L layers, [L, K]: β^l = cumsum(softmax(Γ))_l − softmax(Γ)_0.
    Γ starts at zero, so β^l starts at l / L."""

    def __init__(self, num_layers: int, width: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers, width))

    def forward(self, depth: int) -> torch.Tensor:
        p = self.logits.softmax(0)
        return p[1 : depth + 1].sum(0)


@register_mixer("hgrn2")
class HGRN2(RecurrentMixer):
    Config = HGRN2Config
    family = GLA

    def __init__(self, config: HGRN2Config) -> None:
        super().__init__(config)
        D, H = config.d_model, config.num_heads
        self.head_v = D // H
        self.key_dim = H * config.d_state
        self.q_proj = nn.Linear(D, self.key_dim, bias=False)
        self.f_proj = nn.Linear(D, self.key_dim, bias=False)
        self.i_proj = nn.Linear(D, D, bias=False)
        self.norm = RMSNorm(self.head_v)
        self.o_proj = nn.Linear(D, D, bias=False)

    @classmethod
    def shared_across_depth(cls, layers: list[HGRN2]) -> nn.Module | None:
        learned = [layer.config.lower_bound == "learned" for layer in layers]
        if not any(learned):
            return None
        widths = {layer.key_dim for layer in layers}
        if not all(learned) or len(widths) > 1:
            raise ValueError(
                "hgrn2 layers of one model share learned lower bounds: give them all lower_bound='learned' "
                f"and one key width; got lower_bound {[layer.config.lower_bound for layer in layers]}, widths {sorted(widths)}"
            )
        return DepthLowerBounds(len(layers), widths.pop())

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        H = self.config.num_heads
        S = torch.zeros(batch_size, H, self.config.d_state, self.head_v, device=device, dtype=state_dtype(self))
        return {"S": S}

    def lower_bound(self) -> float | torch.Tensor:
        """β: the fixed bound, or this layer's learned one [K] (0.0 at depth 0 or alone)."""
        shared = self.shared()
        if self.config.lower_bound == "fixed":
            return self.config.forget_lower_bound
        if shared is None or shared[1] == 0:
            return 0.0
        bounds, depth = shared
        return bounds(depth)

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        H = self.config.num_heads
        beta = self.lower_bound()
        f_logit = self.f_proj(x)
        # log f = log(β + (1 - β) σ(z)), computed stably for β = 0 as logsigmoid(z); β is 0
        # exactly (not merely small) only at depth 0 or when fixed at 0
        if isinstance(beta, float) and beta == 0.0:
            log_f = F.logsigmoid(f_logit)
        else:
            beta = beta if isinstance(beta, float) else beta.to(f_logit.dtype)
            log_f = torch.log(beta + (1 - beta) * torch.sigmoid(f_logit))
        # the input gate 1 - f, formed as -expm1(log f) for precision when f is near 1
        k = -torch.expm1(log_f)
        o, S = gla(
            split_heads(F.silu(self.q_proj(x)), H), split_heads(k, H), split_heads(self.i_proj(x), H),
            g=split_heads(log_f, H),
            initial_state=None if state is None else state["S"], output_final_state=True, impl=impl,
        )
        return self.o_proj(merge_heads(self.norm(o))), {"S": S}
