"""The stabilised mLSTM in chunkwise-parallel form (pure PyTorch, any device, autograd).

xLSTM (arXiv:2405.04517) and Tiled Flash Linear Attention (arXiv:2503.14376), §2–3:
C_t = f'_t C_{t-1} + i'_t k_t v_tᵀ, n_t = f'_t n_{t-1} + i'_t k_t, h_t = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, e^{−m_t}) + eps).

Inside chunk k (L steps), b_t is the log forget decay from the chunk start to step t, G_k = b_L
the whole chunk's and a_s = b_L − b_s + log i_s the log-weight of step s in the chunk-end
state. The max state after every chunk comes first, on [B, N, H] tensors:

    m_k = max(G_k + m_{k-1}, max_s a_s) = max_{j <= k} (G_{j+1} + ... + G_k + a'_j)

(a'_0 = m_0, a'_j = max_s a_s of chunk j), then the chunk-end states, a scan over chunks
of one multiply-add each:

    C_k = e^{G_k + m_{k-1} − m_k} C_{k-1} + Σ_s e^{a_s − m_k} k_s v_sᵀ   (n_k likewise)

and every step reads its own chunk's entering state and the chunk's keys:

    m_t   = max(b_t + m_{k-1}, max_{s<=t} (b_t − b_s + log i_s))
    num_t = e^{b_t + m_{k-1} − m_t} q̂_tᵀ C_{k-1} + Σ_{s<=t} (q̂_t·k_s) e^{b_t − b_s + log i_s − m_t} v_s
    den_t = the same with n_{k-1} and 1 in place of C_{k-1} and v_s
    h_t   = num_t / (max(|den_t|, e^{−m_t}) + eps)

m_t here is exactly the recurrent stabiliser, so eps sits where the step form puts it and
the forms agree to rounding. With the sigmoid input gate the stabiliser never moves. C and n
pass between chunks side by side, one [K, V + 1] state; the per-step part is one autograd
Function whose gradient is written out (README.md says why and how).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import chunk_state_passing, packed_to_padded, padded_to_packed, segsum, state_dtype
from ..common.segsum import suffix_sum_exclusive
from .naive import MLSTMState, log_gates

CHUNK_SIZE = 64


def chunk_mlstm(q, k, v, *, i, f, scale, initial_state, cu_seqlens, eps, input_gate):
    """The stabilised mLSTM, chunkwise; the arguments of `naive_mlstm`, already checked."""
    out_dtype = v.dtype
    dtype = state_dtype(q, v)
    log_i, log_f = log_gates(i, f, input_gate, dtype)
    if cu_seqlens is not None:
        # After each sequence: log f = 0 and log i = −inf leave C, n and m unchanged.
        valid = packed_to_padded(torch.ones_like(log_i), cu_seqlens).bool()
        q, k, v, log_f = (packed_to_padded(x, cu_seqlens) for x in (q, k, v, log_f))
        log_i = packed_to_padded(log_i, cu_seqlens).masked_fill(~valid, float("-inf"))
    h, (C, n, m) = _chunk_mlstm(q, k, v, log_i, log_f, scale, initial_state, eps, input_gate == "exp")
    if cu_seqlens is not None:
        h = padded_to_packed(h, cu_seqlens)
    return h.to(out_dtype), MLSTMState(C, n, m)


def _chunk_mlstm(q, k, v, log_i, log_f, scale, initial_state, eps, stabilise, chunk_size=CHUNK_SIZE):
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = state_dtype(q, v)
    L = chunk_size
    N = max(1, -(-T // L))

    # [B, T, H, ...] -> [B, N, H, L, ...]; padded steps have log f = 0 and log i = −inf, which
    # leave the state as it is
    q, k, v = (_chunked(x.to(dtype), L) for x in (q, k, v))
    log_f, log_i = _chunked(log_f, L), _chunked(log_i, L, value=float("-inf"))

    # [B, N, H, L]: log decay from the chunk start to step t; log-weight of step s at the chunk end
    chunk_total = log_f.sum(-1)
    to_end = suffix_sum_exclusive(log_f, dim=-1) + log_i
    if initial_state is None:
        C0, n0, m0 = q.new_zeros(B, H, K, V), q.new_zeros(B, H, K), q.new_zeros(B, H)
    else:
        C0, n0, m0 = (x.to(dtype) for x in initial_state)

    # 1. The max state after every chunk, [B, N + 1, H] (m_0 first).
    if stabilise:
        entry = torch.cat([m0[:, None], to_end.amax(-1)], dim=1)
        totals = F.pad(chunk_total, (0, 0, 1, 0))
        # m_k = max_j (b_{j+1} + ... + b_k + entry_j): segment sums over whole chunks, [B, H, N + 1, N + 1]
        spans = segsum(totals.transpose(1, 2)) + entry.transpose(1, 2)[..., None, :]
        m_all = spans.amax(-1).transpose(1, 2)
    else:
        m_all = m0[:, None].expand(B, N + 1, H)
    m_in, m_out = m_all[:, :-1], m_all[:, 1:]

    # 2. Chunk-end states, C and n side by side ([B, N, H, K, V + 1]): each chunk's own
    # writes, then the scan over chunks.
    written = k * (to_end - m_out[..., None]).exp()[..., None]
    local_states = torch.cat([written.transpose(-1, -2) @ v, written.sum(-2)[..., None]], dim=-1)
    initial = torch.cat([C0, n0[..., None]], dim=-1)
    states_in, final = chunk_state_passing(chunk_total + m_in - m_out, local_states, initial)

    # 3. Every step: its chunk's entering state and the chunk's own keys; h comes out in the
    # [B, T, H, V] layout (padded to N · L steps).
    h = _ChunkOutputs.apply(q, k, v, log_f, log_i, m_in, states_in, scale, eps, stabilise)
    h = h.transpose(2, 3).flatten(1, 2)[:, :T]
    C_final, n_final = final.split([V, 1], dim=-1)
    return h, (C_final, n_final.squeeze(-1), m_all[:, -1])


class _ChunkOutputs(torch.autograd.Function):
    """h_t from the state entering its chunk and the chunk's keys up to t, with the gradient
    written out: autograd would keep and revisit several more [L, L] tensors per chunk.

    Inputs: q, k [B, N, H, L, K]; v [B, N, H, L, V]; log f, log i [B, N, H, L]; m_in [B, N, H];
    the entering states C and n side by side, [C | n] [B, N, H, K, V + 1]. Output: h [B, N, H, L, V],
    a view of a tensor laid out as [B, N, L, H, V], so that [B, T, H, V] is a view of it.
    """

    @staticmethod
    def forward(ctx, q, k, v, log_f, log_i, m_in, states_in, scale, eps, stabilise):
        B, N, H, L, V = v.shape
        # log-weight of the entering state at step t: b_t + m_in, [B, N, H, L]
        from_state = log_f.cumsum(-1) + m_in[..., None]
        # log-weight of step s at step t, log f_{s+1} + ... + log f_t + log i_s: log f_t below the
        # diagonal and log i_s on it, summed down each column (never a difference of prefix
        # sums, which would lose digits under strong gates); −inf above the diagonal
        log_weights = log_f[..., :, None].expand(*log_f.shape, L).tril(-1)
        log_weights.diagonal(dim1=-2, dim2=-1).copy_(log_i)
        above = torch.full((L, L), float("-inf"), dtype=q.dtype, device=q.device).triu(1)
        log_weights = log_weights.cumsum_(-2).add_(above)
        if stabilise:
            # the stabiliser m_t: the largest log-weight at step t
            largest, argmax = log_weights.max(-1)
            m = torch.maximum(from_state, largest)
        else:
            largest = argmax = None
            m = m_in[..., None].expand_as(from_state)
        # [B, N, H, L, L]: P = exp(log-weight − m_t), scores A = (scale · q kᵀ) ⊙ P
        P = log_weights.sub_(m[..., None]).exp_()
        A = _bmm(q, k.transpose(-1, -2), alpha=scale).mul_(P)
        # the entering state's part [q C_in | q n_in], weighted by scale · e^{b_t + m_in − m_t}
        state_weight = (from_state - m).exp_().mul_(scale)
        inter = _bmm(q, states_in)
        numerator = _bmm(A, v).addcmul_(inter[..., :-1], state_weight[..., None])
        denominator = A.sum(-1).addcmul_(inter[..., -1], state_weight)
        floor = (-m).exp()
        z = torch.maximum(denominator.abs(), floor) + eps
        h = q.new_empty(B, N, L, H, V).transpose(2, 3)
        torch.div(numerator, z[..., None], out=h)
        ctx.save_for_backward(
            q, k, v, states_in, P, A, inter, h, denominator, floor, z, state_weight, from_state, largest, argmax
        )
        ctx.scale, ctx.stabilise = scale, stabilise
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dh):
        q, k, v, states_in, P, A, inter, h, denominator, floor, z, state_weight, from_state, largest, argmax = (
            ctx.saved_tensors
        )
        scale = ctx.scale
        # h = numerator / z, z = max(|denominator|, e^{−m}) + eps
        dz = -(dh * h).sum(-1) / z
        on_floor = floor > denominator.abs()
        d_denominator = torch.where(on_floor, 0.0, dz * denominator.sign())
        dm = torch.where(on_floor, -dz * floor, 0.0)
        # written contiguous whatever dh's layout, for the products below
        d_numerator = torch.div(dh, z[..., None], out=torch.empty_like(v))
        # [numerator | denominator] = A [v | 1] + state_weight · q [C_in | n_in]
        d_inter = torch.cat([d_numerator, d_denominator[..., None]], dim=-1).mul_(state_weight[..., None])
        # the gradient of from_state − m, through state_weight = scale · e^{from_state − m}
        d_exponent = (d_inter * inter).sum(-1)
        d_states_in = _bmm(q.transpose(-1, -2), d_inter)
        dq = _bmm(d_inter, states_in.transpose(-1, -2))
        dv = _bmm(A.transpose(-1, -2), d_numerator)
        dA = _bmm(d_numerator, v.transpose(-1, -2)).add_(d_denominator[..., None])
        # A = S ⊙ P with S = scale · q kᵀ, P = exp(log-weight − m)
        dS = dA * P
        d_log_weights = dA.mul_(A)
        dq.add_(_bmm(dS, k, alpha=scale))
        dk = _bmm(dS.transpose(-1, -2), q, alpha=scale)
        dm = dm - d_exponent - d_log_weights.sum(-1)
        d_from_state = d_exponent
        if ctx.stabilise:
            # m = max(from_state, largest log-weight): its gradient goes to the term that won
            from_state_won = from_state >= largest
            d_from_state = d_from_state + torch.where(from_state_won, dm, 0.0)
            d_largest = torch.where(from_state_won, 0.0, dm)
            d_log_weights.scatter_add_(-1, argmax[..., None], d_largest[..., None])
            dm_in = d_from_state.sum(-1)
        else:
            dm_in = d_from_state.sum(-1) + dm.sum(-1)
        # log-weight[t, s] = log f_{s+1} + ... + log f_t + log i_s: log i_s gets its column's sum,
        # log f_r the sum over t >= r and s < r
        d_log_i = d_log_weights.sum(-2)
        past = d_log_weights.cumsum_(-1).tril_(-1).sum(-2)
        # from_state = b_t + m_in with b_t = log f_1 + ... + log f_t
        d_log_f = F.pad(past[..., :-1], (1, 0)) + d_from_state.flip(-1).cumsum(-1).flip(-1)
        return dq, dk, dv, d_log_f, d_log_i, dm_in, d_states_in, None, None, None


def _bmm(a: torch.Tensor, b: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """alpha · a @ b over any leading dims, as one batched product."""
    out_shape = (*a.shape[:-1], b.shape[-1])
    a3, b3 = a.reshape(-1, *a.shape[-2:]), b.reshape(-1, *b.shape[-2:])
    if alpha == 1.0:
        return torch.bmm(a3, b3).view(out_shape)
    return torch.baddbmm(a3.new_empty(()), a3, b3, beta=0.0, alpha=alpha).view(out_shape)


def _chunked(x: torch.Tensor, chunk_size: int, value: float = 0.0) -> torch.Tensor:
    """[B, T, H, ...] -> [B, N, H, L, ...], padded with `value` at the end of time."""
    T = x.shape[1]
    N = max(1, -(-T // chunk_size))
    if N * chunk_size != T:
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, N * chunk_size - T), value=value)
    # one copy into the chunked layout here saves one inside every matrix product below
    return x.unflatten(1, (N, chunk_size)).transpose(2, 3).contiguous()
