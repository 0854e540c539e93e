"""The mLSTM, step by step: the executable spec of the family.

xLSTM: Extended Long Short-Term Memory (Beck et al.; arXiv:2405.04517), §2.3, with the
stabilisation and eps placement of the TFLA kernels (Tiled Flash Linear Attention, Beck,
Pöppel, Lippe, Hochreiter; arXiv:2503.14376):

    m_t = max(log f_t + m_{t-1}, log i_t),   C_t = f'_t C_{t-1} + i'_t k_t v_tᵀ,   n_t = f'_t n_{t-1} + i'_t k_t,
    h_t = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, exp(−m_t)) + eps),   q̂_t = scale · q_t

with f'_t = exp(log f_t + m_{t-1} − m_t), i'_t = exp(log i_t − m_t), f_t = σ(f̃_t) and the
exponential input gate i_t = exp(ĩ_t). C and n are the unstabilised state scaled by
exp(−m_t), so no exponent is ever positive. mLSTMsig (TFLA §3) takes i_t = σ(ĩ_t); every gate
is then <= 1 and the stabiliser stays where it started (m_t = m_{t-1}), which with m_0 = 0
gives h_t = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, 1) + eps).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F


class MLSTMState(NamedTuple):
    """The mLSTM state, batch first: the memory C [B, H, K, V], the normaliser n [B, H, K]
    and the max state m [B, H] (the log of the scale C and n are kept at)."""

    C: torch.Tensor
    n: torch.Tensor
    m: torch.Tensor


def naive_mlstm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    i: torch.Tensor,
    f: torch.Tensor,
    scale: float | None = None,
    initial_state: MLSTMState | tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    eps: float = 1e-6,
    input_gate: str = "exp",
) -> tuple[torch.Tensor, MLSTMState | None]:
    """The stabilised mLSTM as a loop over time.

    Args:
        q, k: queries and keys [B, T, H, K].
        v: values [B, T, H, V].
        i: input gate pre-activations ĩ [B, T, H].
        f: forget gate pre-activations f̃ [B, T, H] (f = σ(f̃)).
        scale: query scale; K ** -0.5 when None.
        initial_state: an `MLSTMState` (C [B, H, K, V], n [B, H, K], m [B, H]), or any tuple
            of those three tensors in that order ([N, ...] with cu_seqlens); None for zeros.
        output_final_state: also return the state after the last step.
        cu_seqlens: [N + 1] offsets of N sequences packed in a batch of one.
        eps: added to the normaliser after the max, as in the xLSTM kernels.
        input_gate: "exp" (mLSTM) or "sigmoid" (mLSTMsig).

    Returns:
        (h [B, T, H, V] in v's dtype, the final `MLSTMState` in float32 (float64 for float64
        inputs), or None).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    dtype = torch.float64 if torch.float64 in (q.dtype, v.dtype) else torch.float32
    out_dtype = v.dtype
    q, k, v = q.to(dtype) * scale, k.to(dtype), v.to(dtype)
    log_i, log_f = log_gates(i, f, input_gate, dtype)
    if initial_state is None:
        # C: [B, H, K, V], n: [B, H, K], m: [B, H]
        C, n, m = q.new_zeros(B, H, K, V), q.new_zeros(B, H, K), q.new_zeros(B, H)
    else:
        C, n, m = (x.to(dtype) for x in initial_state)
    outputs = []
    # unbind once: indexing x[:, t] inside the loop would make every step's backward
    # write a full-length gradient, O(T²) work
    for q_t, k_t, v_t, log_i_t, log_f_t in zip(*(x.unbind(1) for x in (q, k, v, log_i, log_f)), strict=True):
        # the stabiliser: the largest log-weight any term of the state carries
        m_new = torch.maximum(log_f_t + m, log_i_t) if input_gate == "exp" else m
        # the gates relative to it: f'_t, i'_t [B, H, 1]
        f_t = (log_f_t + m - m_new).exp()[..., None]
        i_t = (log_i_t - m_new).exp()[..., None]
        m = m_new
        # C_t = f'_t C_{t-1} + i'_t k_t v_tᵀ [B, H, K, V]; n_t = f'_t n_{t-1} + i'_t k_t [B, H, K]
        C = f_t[..., None] * C + i_t[..., None] * k_t[..., :, None] * v_t[..., None, :]
        n = f_t * n + i_t * k_t
        # h_t = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, exp(−m_t)) + eps); exp(−m_t) is 1 unstabilised
        numerator = torch.einsum("bhk,bhkv->bhv", q_t, C)
        denominator = torch.maximum((n * q_t).sum(-1).abs(), (-m).exp()) + eps
        outputs.append(numerator / denominator[..., None])
    h = torch.stack(outputs, dim=1) if outputs else v.new_zeros(B, 0, H, V)
    return h.to(out_dtype), MLSTMState(C, n, m)


def log_gates(i: torch.Tensor, f: torch.Tensor, input_gate: str, dtype: torch.dtype):
    """log i_t and log f_t from the pre-activations: i_t = exp(ĩ_t) or σ(ĩ_t), f_t = σ(f̃_t)."""
    i, f = i.to(dtype), f.to(dtype)
    log_i = i if input_gate == "exp" else F.logsigmoid(i)
    return log_i, F.logsigmoid(f)
