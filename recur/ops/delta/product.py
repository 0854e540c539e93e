"""DeltaProduct: n_h delta-rule (generalised Householder) steps per token.

DeltaProduct: Improving State-Tracking in Linear RNNs via Householder Products (Siems,
Carstensen, Zela, Hutter, Pontil, Grazzi; arXiv:2502.10297):

    S_t = α_t Π_{j=n_h..1} (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) S_{t-1} + (writes of the n_h steps),
    o_t = scale · S_tᵀ q_t

Per token the state decays once by α_t = exp(g_t), then takes n_h delta-rule steps
S ← S + β_{t,j} k_{t,j} (v_{t,j} − Sᵀ k_{t,j})ᵀ, and the output is read after the last one.
The chunkwise form interleaves the micro-steps in time (gate on the first, query on the
last) and runs the delta rule over the T · n_h steps.
"""

from __future__ import annotations

import torch

from .chunk import chunk_delta_rule
from .naive import householder_loop


def naive_delta_product(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """DeltaProduct as a loop over tokens and, inside each token, over Householder steps.

    Args:
        q: queries [B, T, H, K].
        k: keys [B, T, n_h, H, K], one per Householder step (the layers L2-normalise them).
        v: values [B, T, n_h, H, V].
        beta: write strengths [B, T, n_h, H], in [0, 2] for eigenvalues in [−1, 1].
        g: log decay log α (<= 0), [B, T, H], applied once per token; None means no decay.
        scale: output scale; K ** -0.5 when None.
        initial_state: S_0, [B, H, K, V] ([N, H, K, V] with cu_seqlens), or None for zeros.
        output_final_state: also return S_T.
        cu_seqlens: [N + 1] token offsets of N sequences packed in a batch of one.

    Returns:
        (o [B, T, H, V] in v's dtype, final state [B, H, K, V] or [N, H, K, V], or None).
    """
    return householder_loop(q, k, v, beta, g, scale, initial_state)


def _interleaved(q, k, v, beta, g):
    """Micro-step sequences of length T · n_h: the gate on each token's first micro-step,
    its query on the last, zeros elsewhere (a zero gate is no decay)."""
    B, T, n_h, H, K = k.shape
    flat = lambda x: x.flatten(1, 2)  # noqa: E731
    q_steps = torch.cat([q.new_zeros(B, T, n_h - 1, H, K), q.unsqueeze(2)], dim=2)
    g_steps = None
    if g is not None:
        g_steps = torch.cat([g.unsqueeze(2), g.new_zeros(B, T, n_h - 1, H)], dim=2)
        g_steps = flat(g_steps)
    return flat(q_steps), flat(k), flat(v), flat(beta), g_steps


def chunk_delta_product(q, k, v, *, beta, g, scale, initial_state, cu_seqlens):
    """DeltaProduct, chunkwise over the interleaved micro-steps; the arguments of
    `naive_delta_product`, already checked."""
    n_h = k.shape[2]
    q_s, k_s, v_s, beta_s, g_s = _interleaved(q, k, v, beta, g)
    o, final_state = chunk_delta_rule(
        q_s, k_s, v_s, beta=beta_s, g=g_s, scale=scale, initial_state=initial_state,
        cu_seqlens=None if cu_seqlens is None else cu_seqlens * n_h,
    )
    # the output of each token is the one read at its last micro-step
    return o[:, n_h - 1 :: n_h], final_state
