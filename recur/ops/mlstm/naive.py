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

import torch

from .checks import check_mlstm_inputs, log_gates

State = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def naive_mlstm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    i: torch.Tensor,
    f: torch.Tensor,
    scale: float | None = None,
    initial_state: State | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    eps: float = 1e-6,
    input_gate: str = "exp",
) -> tuple[torch.Tensor, State | None]:
    """The stabilised mLSTM as a loop over time.

    Args:
        q, k: queries and keys [B, T, H, K].
        v: values [B, T, H, V].
        i: input gate pre-activations ĩ [B, T, H].
        f: forget gate pre-activations f̃ [B, T, H] (f = σ(f̃)).
        scale: query scale; K ** -0.5 when None.
        initial_state: (C [B, H, K, V], n [B, H, K], m [B, H]) ([N, ...] with cu_seqlens),
            or None for zeros.
        output_final_state: also return the state after the last step.
        cu_seqlens: [N + 1] offsets of N sequences packed in a batch of one.
        eps: added to the normaliser after the max, as in the xLSTM kernels.
        input_gate: "exp" (mLSTM) or "sigmoid" (mLSTMsig).

    Returns:
        (h [B, T, H, V] in v's dtype, final (C, n, m) in float32/float64, or None).
    """
    scale = check_mlstm_inputs(q, k, v, i, f, scale, initial_state, cu_seqlens, eps, input_gate)
    if cu_seqlens is not None:
        return _per_sequence(q, k, v, i, f, scale, initial_state, output_final_state, cu_seqlens, eps, input_gate)

    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = torch.float64 if torch.float64 in (q.dtype, v.dtype) else torch.float32
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
        f_t = (log_f_t + m - m_new).exp()[..., None]
        i_t = (log_i_t - m_new).exp()[..., None]
        m = m_new
        C = f_t[..., None] * C + i_t[..., None] * k_t[..., :, None] * v_t[..., None, :]
        n = f_t * n + i_t * k_t
        # h_t = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, exp(−m_t)) + eps); exp(−m_t) is 1 unstabilised
        numerator = torch.einsum("bhk,bhkv->bhv", q_t, C)
        denominator = torch.maximum((n * q_t).sum(-1).abs(), (-m).exp()) + eps
        outputs.append(numerator / denominator[..., None])
    h = torch.stack(outputs, dim=1) if outputs else v.new_zeros(B, 0, H, V, dtype=dtype)
    return h.to(v.dtype), ((C, n, m) if output_final_state else None)


def _per_sequence(q, k, v, i, f, scale, initial_state, output_final_state, cu_seqlens, eps, input_gate):
    """Packed batches: run every sequence on its own, from its own initial state."""
    outputs, finals = [], []
    for s in range(cu_seqlens.numel() - 1):
        start, end = int(cu_seqlens[s]), int(cu_seqlens[s + 1])
        h, state = naive_mlstm(
            q[:, start:end], k[:, start:end], v[:, start:end], i=i[:, start:end], f=f[:, start:end],
            scale=scale,
            initial_state=None if initial_state is None else tuple(x[s : s + 1] for x in initial_state),
            output_final_state=True, eps=eps, input_gate=input_gate,
        )
        outputs.append(h)
        finals.append(state)
    final = tuple(torch.cat(parts) for parts in zip(*finals, strict=True)) if output_final_state else None
    return torch.cat(outputs, dim=1), final
