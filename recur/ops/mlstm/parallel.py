"""The stabilised mLSTM in its direct parallel (quadratic) form.

xLSTM (arXiv:2405.04517), §2.3 and appendix "parallel formulation":

    log D_ts = Σ_{j=s+1..t} log f_j + log i_s  (s <= t, else −inf),   m_t = max_s log D_ts,
    h_t = Σ_s (q̂_t·k_s) e^{log D_ts − m_t} v_s / (max(|Σ_s (q̂_t·k_s) e^{log D_ts − m_t}|, e^{−m_t}) + eps)

extended by the initial state as one more term with log-weight Σ_{j<=t} log f_j + m_0.
It builds the full T × T matrix, so it is a check on the other forms, not a fast path.
"""

from __future__ import annotations

import torch

from ..common import packed_to_padded, padded_to_packed, segsum, state_dtype
from .naive import MLSTMState, log_gates


def parallel_mlstm(q, k, v, *, i, f, scale, initial_state, cu_seqlens, eps, input_gate):
    """The stabilised mLSTM over the full causal matrix; the arguments of `naive_mlstm`,
    already checked. The final state is the decay-weighted sum written out directly."""
    out_dtype = v.dtype
    dtype = state_dtype(q, v)
    B, T, H, K = q.shape
    V = v.shape[-1]
    log_i, log_f = log_gates(i, f, input_gate, dtype)
    if cu_seqlens is not None:
        valid = packed_to_padded(torch.ones_like(log_i), cu_seqlens).bool()
        q, k, v, log_f = (packed_to_padded(x, cu_seqlens) for x in (q, k, v, log_f))
        log_i = packed_to_padded(log_i, cu_seqlens).masked_fill(~valid, float("-inf"))
        B, T = q.shape[:2]
    # [B, H, T, ...]
    q, k, v = (x.to(dtype).transpose(1, 2) for x in (q * scale, k, v))
    log_i, log_f = log_i.transpose(1, 2), log_f.transpose(1, 2)
    if initial_state is None:
        C0, n0, m0 = q.new_zeros(B, H, K, V), q.new_zeros(B, H, K), q.new_zeros(B, H)
    else:
        C0, n0, m0 = (x.to(dtype) for x in initial_state)

    # log D: [B, H, T, T]; log-weight of the initial state at t: [B, H, T]
    log_D = segsum(log_f) + log_i[..., None, :]
    log_init = log_f.cumsum(-1) + m0[..., None]
    if input_gate == "exp":
        m = torch.maximum(log_D.amax(-1), log_init)
    else:
        m = m0[..., None].expand_as(log_init)
    D = (log_D - m[..., None]).exp()
    init = (log_init - m).exp()
    scores = (q @ k.transpose(-1, -2)) * D
    numerator = scores @ v + init[..., None] * (q @ C0)
    denominator = scores.sum(-1) + init * (q @ n0[..., None]).squeeze(-1)
    h = numerator / (torch.maximum(denominator.abs(), (-m).exp()) + eps)[..., None]
    h = h.transpose(1, 2)
    if cu_seqlens is not None:
        h = padded_to_packed(h, cu_seqlens)

    # the last row of D and of the initial-state weights give the state after step T
    total = log_f.sum(-1)
    last = log_D[..., -1, :]
    m_T = torch.maximum(total + m0, last.amax(-1)) if input_gate == "exp" else m0
    w = (last - m_T[..., None]).exp()
    carried = (total + m0 - m_T).exp()
    C_T = carried[..., None, None] * C0 + (k * w[..., None]).transpose(-1, -2) @ v
    n_T = carried[..., None] * n0 + (k * w[..., None]).sum(-2)
    return h.to(out_dtype), MLSTMState(C_T, n_T, m_T)
