"""The stabilised mLSTM in chunkwise-parallel form (pure PyTorch, any device, autograd).

xLSTM (arXiv:2405.04517) and Tiled Flash Linear Attention (arXiv:2503.14376), §2–3:
C_t = f'_t C_{t-1} + i'_t k_t v_tᵀ, n_t = f'_t n_{t-1} + i'_t k_t, h_t = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, e^{−m_t}) + eps).

Inside a chunk, b_t is the log forget decay from the chunk start to step t. The chunk-end
states follow a loop over chunks that carries the max state m across them:

    m_k = max(b_C + m_{k-1}, max_t (b_C − b_t + log i_t))
    C_k = e^{b_C + m_{k-1} − m_k} C_{k-1} + Σ_t e^{b_C − b_t + log i_t − m_k} k_t v_tᵀ   (n_k likewise)

and every step then reads its own chunk's entering state and its chunk-local keys:

    m_t   = max(b_t + m_{k-1}, max_{s<=t} (b_t − b_s + log i_s))
    num_t = e^{b_t + m_{k-1} − m_t} q̂_tᵀ C_{k-1} + Σ_{s<=t} (q̂_t·k_s) e^{b_t − b_s + log i_s − m_t} v_s
    den_t = the same with n_{k-1} and 1 in place of C_{k-1} and v_s
    h_t   = num_t / (max(|den_t|, e^{−m_t}) + eps)

m_t here is exactly the recurrent stabiliser, so eps sits where the step form puts it and
the forms agree to rounding. With the sigmoid input gate the stabiliser never moves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import packed_to_padded, padded_to_packed, segsum, state_dtype
from ..common.segsum import suffix_sum_exclusive
from .checks import check_mlstm_inputs, log_gates
from .naive import State

CHUNK_SIZE = 64


def chunk_mlstm(
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
    """The stabilised mLSTM, chunkwise. Same arguments and results as `naive_mlstm`."""
    scale = check_mlstm_inputs(q, k, v, i, f, scale, initial_state, cu_seqlens, eps, input_gate)
    out_dtype = v.dtype
    dtype = state_dtype(q, v)
    log_i, log_f = log_gates(i, f, input_gate, dtype)
    if cu_seqlens is not None:
        # After each sequence: log f = 0 and log i = −inf leave C, n and m unchanged.
        valid = packed_to_padded(torch.ones_like(log_i), cu_seqlens).bool()
        q, k, v, log_f = (packed_to_padded(x, cu_seqlens) for x in (q, k, v, log_f))
        log_i = packed_to_padded(log_i, cu_seqlens).masked_fill(~valid, float("-inf"))
    h, final_state = _chunk_mlstm(q, k, v, log_i, log_f, scale, initial_state, eps, input_gate == "exp")
    if cu_seqlens is not None:
        h = padded_to_packed(h, cu_seqlens)
    return h.to(out_dtype), (final_state if output_final_state else None)


def _chunk_mlstm(q, k, v, log_i, log_f, scale, initial_state, eps, stabilise, chunk_size=CHUNK_SIZE):
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = state_dtype(q, v)
    C = chunk_size
    N = max(1, -(-T // C))
    pad = N * C - T

    def chunked(x, value=0.0):
        # [B, T, H, ...] -> [B, N, H, C, ...], padded at the end of time
        x = F.pad(x.to(dtype), (0, 0) * (x.dim() - 2) + (0, pad), value=value)
        return x.unflatten(1, (N, C)).transpose(2, 3)

    q, k, v = chunked(q * scale), chunked(k), chunked(v)
    # padded steps: log f = 0, log i = −inf (no change to the state). [B, N, H, C]
    log_f, log_i = chunked(log_f), chunked(log_i, float("-inf"))

    to_step = log_f.cumsum(-1)
    # log-weight of step s in its chunk-end state, and of s in step t's state (−inf for s > t)
    to_end = suffix_sum_exclusive(log_f, dim=-1) + log_i
    weights = segsum(log_f) + log_i[..., None, :]
    chunk_total = to_step[..., -1]

    if initial_state is None:
        C_state, n_state, m_state = q.new_zeros(B, H, K, V), q.new_zeros(B, H, K), q.new_zeros(B, H)
    else:
        C_state, n_state, m_state = (x.to(dtype) for x in initial_state)
    C_in, n_in, m_in = [], [], []
    for c in range(N):
        C_in.append(C_state)
        n_in.append(n_state)
        m_in.append(m_state)
        carried = chunk_total[:, c] + m_state
        m_new = torch.maximum(carried, to_end[:, c].amax(-1)) if stabilise else m_state
        decay = (carried - m_new).exp()
        # [B, H, C]: how much each step of the chunk writes, relative to exp(m_new)
        write = (to_end[:, c] - m_new[..., None]).exp()
        weighted_k = k[:, c] * write[..., None]
        C_state = decay[..., None, None] * C_state + weighted_k.transpose(-1, -2) @ v[:, c]
        n_state = decay[..., None] * n_state + weighted_k.sum(-2)
        m_state = m_new
    # states entering each chunk: [B, N, H, K, V], [B, N, H, K], [B, N, H]
    C_in, n_in, m_in = torch.stack(C_in, 1), torch.stack(n_in, 1), torch.stack(m_in, 1)

    from_state = to_step + m_in[..., None]
    m = torch.maximum(from_state, weights.amax(-1)) if stabilise else m_in[..., None].expand_as(from_state)
    inter = (from_state - m).exp()
    # [B, N, H, C, C]: stabilised decay-weighted attention scores
    scores = (q @ k.transpose(-1, -2)) * (weights - m[..., None]).exp()
    numerator = inter[..., None] * (q @ C_in) + scores @ v
    denominator = inter * (q @ n_in[..., None]).squeeze(-1) + scores.sum(-1)
    h = numerator / (torch.maximum(denominator.abs(), (-m).exp()) + eps)[..., None]
    # [B, N, H, C, V] -> [B, T, H, V]
    h = h.transpose(2, 3).flatten(1, 2)[:, :T]
    return h, (C_state, n_state, m_state)
