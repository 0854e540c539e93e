"""mLSTM layer: the matrix-memory LSTM with exponential gating, as in xLSTM 7B.

xLSTM: Extended Long Short-Term Memory (Beck et al.; arXiv:2405.04517); xLSTM 7B
(Beck et al.; arXiv:2503.13427), §3:

    C_t = f_t C_{t-1} + i_t k_t v_tᵀ,  n_t = f_t n_{t-1} + i_t k_t,  h̃_t = C_tᵀ q_t / max(|n_tᵀ q_t|, 1),
    i_t = exp(ĩ_t), f_t = σ(f̃_t) (gate pre-activations soft-capped at ±15),
    y_t = (σ(x_t W_o) ⊙ RMSNorm(h̃_t)) W_out

(in the stabilised form of `recur.ops.mlstm`). `input_gate="sigmoid"` gives mLSTMsig (TFLA,
arXiv:2503.14376).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from torch import nn

from ..ops.mlstm import MLSTM as MLSTM_FAMILY
from ..ops.mlstm import MLSTMState, mlstm
from ..ops.mlstm.checks import INPUT_GATES
from .base import Mixer, MixerConfig, State
from .parts import RMSNorm
from .registry import register_mixer


@dataclass(kw_only=True)
class MLSTMConfig(MixerConfig):
    num_heads: int = 4
    # query/key width and value width as fractions of d_model (xLSTM 7B: 0.5 and 1)
    qk_dim_factor: float = 0.5
    v_dim_factor: float = 1.0
    # gate pre-activations pass through cap · tanh(x / cap); 0 turns the cap off
    gate_soft_cap: float = 15.0
    # "exp" (mLSTM) or "sigmoid" (mLSTMsig)
    input_gate: str = "exp"
    eps: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_heads <= 0:
            raise ValueError(f"num_heads must be positive; got {self.num_heads}")
        for name in ("qk_dim_factor", "v_dim_factor"):
            width = getattr(self, name) * self.d_model
            if width != int(width) or width <= 0 or int(width) % self.num_heads:
                raise ValueError(
                    f"{name} * d_model = {width} must be a positive multiple of num_heads = {self.num_heads}"
                )
        if self.input_gate not in INPUT_GATES:
            raise ValueError(f"input_gate must be one of {list(INPUT_GATES)}; got {self.input_gate!r}")
        if self.gate_soft_cap < 0:
            raise ValueError(f"gate_soft_cap must be >= 0; got {self.gate_soft_cap}")


def soft_cap(x: torch.Tensor, cap: float) -> torch.Tensor:
    return cap * torch.tanh(x / cap) if cap > 0 else x


def init_gates(igate: nn.Linear, fgate: nn.Linear) -> None:
    """Gates start near "keep everything": forget biases spread over [3, 6] across heads,
    input biases small, weights zero (xLSTM)."""
    nn.init.zeros_(igate.weight)
    nn.init.zeros_(fgate.weight)
    nn.init.normal_(igate.bias, std=0.1)
    with torch.no_grad():
        fgate.bias.copy_(torch.linspace(3.0, 6.0, fgate.bias.numel()))


def mlstm_state(batch_size: int, heads: int, head_k: int, head_v: int, device, dtype) -> State:
    wide = torch.promote_types(dtype, torch.float32)
    return {
        "C": torch.zeros(batch_size, heads, head_k, head_v, device=device, dtype=wide),
        "n": torch.zeros(batch_size, heads, head_k, device=device, dtype=wide),
        "m": torch.zeros(batch_size, heads, device=device, dtype=wide),
    }


@register_mixer("mlstm")
class MLSTM(Mixer):
    Config = MLSTMConfig
    family = MLSTM_FAMILY

    def __init__(self, config: MLSTMConfig) -> None:
        super().__init__(config)
        D, H = config.d_model, config.num_heads
        self.qk_dim, self.v_dim = int(D * config.qk_dim_factor), int(D * config.v_dim_factor)
        self.head_k, self.head_v = self.qk_dim // H, self.v_dim // H
        self.q_proj = nn.Linear(D, self.qk_dim, bias=False)
        self.k_proj = nn.Linear(D, self.qk_dim, bias=False)
        self.v_proj = nn.Linear(D, self.v_dim, bias=False)
        self.o_proj = nn.Linear(D, self.v_dim, bias=False)
        self.igate = nn.Linear(D, H, bias=True)
        self.fgate = nn.Linear(D, H, bias=True)
        init_gates(self.igate, self.fgate)
        self.norm = RMSNorm(self.head_v)
        self.out_proj = nn.Linear(self.v_dim, D, bias=False)

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        return mlstm_state(batch_size, self.config.num_heads, self.head_k, self.head_v, device, self.out_proj.weight.dtype)

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        return self._mix(x, state, self.config.impl)

    def step(self, x: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        y, state = self._mix(x.unsqueeze(1), state, "naive")
        return y.squeeze(1), state

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        cfg = self.config
        heads = lambda t: rearrange(t, "b t (h d) -> b t h d", h=cfg.num_heads)  # noqa: E731
        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        i = soft_cap(self.igate(x), cfg.gate_soft_cap)
        f = soft_cap(self.fgate(x), cfg.gate_soft_cap)
        h, final = mlstm(
            q, k, v, i=i, f=f, initial_state=None if state is None else MLSTMState(state["C"], state["n"], state["m"]),
            output_final_state=True, eps=cfg.eps, input_gate=cfg.input_gate, impl=impl,
        )
        h = torch.sigmoid(heads(self.o_proj(x))) * self.norm(h)
        return self.out_proj(rearrange(h, "b t h d -> b t (h d)")), {"C": final.C, "n": final.n, "m": final.m}
