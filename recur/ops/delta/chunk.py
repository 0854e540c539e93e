"""The (gated) delta rule in chunkwise-parallel form (pure PyTorch, any device, autograd).

Parallelizing Linear Transformers with the Delta Rule over Sequence Length (arXiv:2406.06484),
§3; Gated Delta Networks (arXiv:2412.06464), §3.3:
S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ, o_t = scale · S_tᵀ q_t.

Within a chunk of C steps entered with state S, write γ_t for the decay from the chunk
start to step t and u_t = β_t (v_t − (α_t S_{t-1})ᵀ k_t) for the value step t writes. The
u_t solve one unit lower-triangular system (the UT transform of the WY representation):

    (I + A) U = β ⊙ V − (βγ ⊙ K) S,     A_ts = β_t (γ_t / γ_s) k_tᵀ k_s   (s < t)

so U = U_v − W S with U_v = (I + A)⁻¹ (β ⊙ V) and W = (I + A)⁻¹ (βγ ⊙ K), both independent
of S and computed for all chunks at once. Then

    o_t = scale · [γ_t q_tᵀ S + Σ_{s≤t} (γ_t / γ_s) (q_tᵀ k_s) u_s]
    S'  = γ_C S + Σ_s (γ_C / γ_s) k_s u_sᵀ = M S + N,

with the K × K chunk transition M = γ_C I − K_dᵀ W and N = K_dᵀ U_v. Only the loop
S ← M S + N runs over chunks. Every decay ratio is exp of a segment sum of log decays
that lies inside one chunk, so every exponent is <= 0. See README.md.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common import on_padded_batch, segsum, state_dtype
from ..common.segsum import suffix_sum_exclusive

CHUNK_SIZE = 64


def chunk_delta_rule(q, k, v, *, beta, g, scale, initial_state, cu_seqlens):
    """The (gated) delta rule, chunkwise; the arguments of `naive_delta_rule`, already checked."""
    # padding after each sequence with k = 0, beta = 0 and g = 0 leaves its state unchanged
    time_inputs = {"q": q, "k": k, "v": v, "beta": beta, "g": g}
    o, final_state = on_padded_batch(_chunk_delta_rule, cu_seqlens, time_inputs, scale=scale, initial_state=initial_state)
    return o.to(v.dtype), final_state


def _chunk_delta_rule(q, k, v, beta, g, scale, initial_state):
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype = state_dtype(q, v)
    C = CHUNK_SIZE
    N = max(1, -(-T // C))
    pad = N * C - T

    def chunked(x):
        # [B, T, H, ...] -> [B, N, H, C, ...], padded at the end of time with zeros
        # (k = 0, beta = 0, g = 0: the padded steps leave the state unchanged)
        x = x.to(dtype)
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad))
        return x.unflatten(1, (N, C)).transpose(2, 3)

    q, k, v, beta = chunked(q), chunked(k), chunked(v), chunked(beta)
    g = q.new_zeros(B, N, H, C) if g is None else chunked(g)
    # g, beta: [B, N, H, C]; q, k: [B, N, H, C, K]; v: [B, N, H, C, V]

    # γ_t / γ_s for s <= t (0 above the diagonal), γ_t, and γ_C / γ_t, all inside one chunk
    decay = segsum(g).exp()
    to_step = g.cumsum(dim=-1).exp()
    to_end = suffix_sum_exclusive(g, dim=-1).exp()
    chunk_decay = to_step[..., -1]

    # (I + A) with A_ts = β_t (γ_t/γ_s) k_tᵀ k_s below the diagonal: [B, N, H, C, C]
    strictly_lower = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)
    A = (beta[..., :, None] * (k @ k.transpose(-1, -2)) * decay).masked_fill(~strictly_lower, 0)
    system = A + torch.eye(C, dtype=dtype, device=q.device)
    # U_v = (I + A)⁻¹ (β ⊙ V) and W = (I + A)⁻¹ (βγ ⊙ K) in one triangular solve
    rhs = torch.cat([beta[..., None] * v, (beta * to_step)[..., None] * k], dim=-1)
    solved = torch.linalg.solve_triangular(system, rhs, upper=False, unitriangular=True)
    U_v, W = solved[..., :V], solved[..., V:]

    # Output: o = P U + (γ ⊙ Q) S with P_ts = (γ_t/γ_s) q_tᵀ k_s (s <= t) and U = U_v − W S,
    # i.e. o = P U_v + (γ ⊙ Q − P W) S.
    P = (q @ k.transpose(-1, -2)) * decay
    o_local = P @ U_v
    q_state = to_step[..., None] * q - P @ W

    # Chunk transitions S ← M S + N with M = γ_C I − K_dᵀ W and N = K_dᵀ U_v, K_d = (γ_C/γ_s) k_s.
    k_to_end = (to_end[..., None] * k).transpose(-1, -2)
    M = chunk_decay[..., None, None] * torch.eye(K, dtype=dtype, device=q.device) - k_to_end @ W
    N_write = k_to_end @ U_v

    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    states_in = []
    for n in range(N):
        states_in.append(S)
        S = torch.baddbmm(
            N_write[:, n].flatten(0, 1), M[:, n].flatten(0, 1), S.flatten(0, 1)
        ).view(B, H, K, V)
    # [B, N, H, K, V]: the state entering each chunk
    states_in = torch.stack(states_in, dim=1)

    o = (o_local + q_state @ states_in) * scale
    # [B, N, H, C, V] -> [B, T, H, V]
    o = o.transpose(2, 3).flatten(1, 2)[:, :T]
    return o, S
