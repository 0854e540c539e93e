"""Passing states between chunks.

A chunkwise form splits time into chunks; with S_n the state after chunk n,

    S_n = exp(G_n) ⊙ S_{n-1} + U_n,

where G_n is the chunk's total log decay and U_n the state the chunk writes on its own.
There are few chunks (T / C) and each step is one fused multiply-add over a [K, V]
state, so a plain loop beats a log-depth scan here (the scan re-reads all states
log2(N) times). The backward pass is the same recurrence run backwards, so only the
states entering each chunk are stored.
"""

from __future__ import annotations

import torch

__all__ = ["chunk_state_passing"]


class _ChunkStatePassing(torch.autograd.Function):
    @staticmethod
    def forward(ctx, decay, chunk_states, initial_state):
        # decay: [B, N, H, K, 1] or [B, N, H, 1, 1]; chunk_states: [B, N, H, K, V]
        N = chunk_states.shape[1]
        states_in = torch.empty_like(chunk_states)
        S = torch.zeros_like(chunk_states[:, 0]) if initial_state is None else initial_state
        for n in range(N):
            states_in[:, n] = S
            S = torch.addcmul(chunk_states[:, n], decay[:, n], S)
        ctx.save_for_backward(decay, states_in)
        ctx.has_initial = initial_state is not None
        return states_in, S

    @staticmethod
    def backward(ctx, grad_states_in, grad_final):
        decay, states_in = ctx.saved_tensors
        N = states_in.shape[1]
        grad_chunk_states = torch.empty_like(states_in)
        grad_decay = torch.empty_like(decay)
        reduce_dims = [d for d in (2, 3) if decay.shape[d + 1] == 1 and states_in.shape[d + 1] != 1]
        # dS_n: gradient reaching the state after chunk n
        dS = torch.zeros_like(states_in[:, 0]) if grad_final is None else grad_final.clone()
        for n in range(N - 1, -1, -1):
            grad_chunk_states[:, n] = dS
            product = dS * states_in[:, n]
            grad_decay[:, n] = product.sum(dim=reduce_dims, keepdim=True) if reduce_dims else product
            dS = torch.addcmul(grad_states_in[:, n], decay[:, n], dS)
        grad_initial = dS if ctx.has_initial else None
        return grad_decay, grad_chunk_states, grad_initial


def chunk_state_passing(
    chunk_log_decay: torch.Tensor,
    chunk_states: torch.Tensor,
    initial_state: torch.Tensor | None,
    chunk_sign: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """States entering every chunk and the final state.

    Args:
        chunk_log_decay: G_n, [B, N, H, K] (per key channel) or [B, N, H] (per head).
        chunk_states: U_n, [B, N, H, K, V].
        initial_state: S_0, [B, H, K, V] or None.
        chunk_sign: ±1 with chunk_log_decay's shape for signed decays
            (S_n = sign_n exp(G_n) S_{n-1} + U_n), or None.

    Returns:
        (states_in [B, N, H, K, V], the state entering chunk n; final_state [B, H, K, V]).
    """
    decay = chunk_log_decay.exp()
    if chunk_sign is not None:
        decay = decay * chunk_sign
    decay = decay[..., None] if decay.dim() == 4 else decay[..., None, None]
    return _ChunkStatePassing.apply(decay.contiguous(), chunk_states.contiguous(), initial_state)
