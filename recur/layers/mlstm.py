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
from torch import nn

from ..ops.mlstm import MLSTM as MLSTM_FAMILY
from ..ops.mlstm import MLSTMState, mlstm
from ..ops.mlstm.checks import INPUT_GATES
from .base import MixerConfig, RecurrentMixer, State
from .parts import RMSNorm, merge_heads, split_heads, state_dtype
from .registry import register_mixer


@dataclass(kw_only=True)
class MLSTMCellConfig(MixerConfig):
    """The options of the mLSTM cell, which the mlstm and xlstm layers share."""

    num_heads: int = 4
    # "exp" (mLSTM) or "sigmoid" (mLSTMsig)
    input_gate: str = "exp"
    eps: float = 1e-6

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.input_gate not in INPUT_GATES:
            raise ValueError(f"input_gate must be one of {list(INPUT_GATES)}; got {self.input_gate!r}")


@dataclass(kw_only=True)
class MLSTMConfig(MLSTMCellConfig):
    # query/key width and value width as multiples of d_model (xLSTM 7B: 0.5 and 1)
    expand_k: float = 0.5
    expand_v: float = 1.0
    # gate pre-activations pass through cap · tanh(x / cap); 0 turns the cap off
    gate_soft_cap: float = 15.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.width("expand_k", "num_heads")
        self.width("expand_v", "num_heads")
        if self.gate_soft_cap < 0:
            raise ValueError(f"gate_soft_cap must be >= 0; got {self.gate_soft_cap}")


def soft_cap(x: torch.Tensor, cap: float) -> torch.Tensor:
    return cap * torch.tanh(x / cap) if cap > 0 else x


class MLSTMMixer(RecurrentMixer):
    """What the mlstm and xlstm layers share: the input and forget gates, the state
    {C, n, m}, and the cell's call."""

    family = MLSTM_FAMILY

    def _init_gates(self, d_in: int) -> None:
        """Gates start near "keep everything": forget biases spread over [3, 6] across heads,
        input biases small, weights zero (xLSTM)."""
        H = self.config.num_heads
        self.igate = nn.Linear(d_in, H, bias=True)
        self.fgate = nn.Linear(d_in, H, bias=True)
        nn.init.zeros_(self.igate.weight)
        nn.init.zeros_(self.fgate.weight)
        nn.init.normal_(self.igate.bias, std=0.1)
        with torch.no_grad():
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, H))

    def init_state(self, batch_size: int, device: torch.device | None = None) -> State:
        H, dtype = self.config.num_heads, state_dtype(self)
        return {
            "C": torch.zeros(batch_size, H, self.head_k, self.head_v, device=device, dtype=dtype),
            "n": torch.zeros(batch_size, H, self.head_k, device=device, dtype=dtype),
            "m": torch.zeros(batch_size, H, device=device, dtype=dtype),
        }

    def _cell(self, q, k, v, i, f, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        """q, k [B, T, H·K], v [B, T, H·V], gates [B, T, H] -> (h [B, T, H, V], new {C, n, m})."""
        H = self.config.num_heads
        h, final = mlstm(
            split_heads(q, H), split_heads(k, H), split_heads(v, H), i=i, f=f,
            initial_state=None if state is None else MLSTMState(state["C"], state["n"], state["m"]),
            output_final_state=True, eps=self.config.eps, input_gate=self.config.input_gate, impl=impl,
        )
        return h, {"C": final.C, "n": final.n, "m": final.m}


@register_mixer("mlstm")
class MLSTM(MLSTMMixer):
    Config = MLSTMConfig

    def __init__(self, config: MLSTMConfig) -> None:
        super().__init__(config)
        D, H = config.d_model, config.num_heads
        key_dim, value_dim = config.width("expand_k", "num_heads"), config.width("expand_v", "num_heads")
        self.head_k, self.head_v = key_dim // H, value_dim // H
        self.q_proj = nn.Linear(D, key_dim, bias=False)
        self.k_proj = nn.Linear(D, key_dim, bias=False)
        self.v_proj = nn.Linear(D, value_dim, bias=False)
        self.o_proj = nn.Linear(D, value_dim, bias=False)
        self._init_gates(D)
        self.norm = RMSNorm(self.head_v)
        self.out_proj = nn.Linear(value_dim, D, bias=False)

    def _mix(self, x: torch.Tensor, state: State | None, impl: str) -> tuple[torch.Tensor, State]:
        cap = self.config.gate_soft_cap
        i, f = soft_cap(self.igate(x), cap), soft_cap(self.fgate(x), cap)
        h, new_state = self._cell(self.q_proj(x), self.k_proj(x), self.v_proj(x), i, f, state, impl)
        h = torch.sigmoid(split_heads(self.o_proj(x), self.config.num_heads)) * self.norm(h)
        return self.out_proj(merge_heads(h)), new_state
