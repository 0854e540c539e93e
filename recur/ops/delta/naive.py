"""The delta rule, step by step: the executable spec of the family.

Parallelizing Linear Transformers with the Delta Rule over Sequence Length (Yang, Wang,
Zhang, Shen, Kim; arXiv:2406.06484); Gated Delta Networks: Improving Mamba2 with Delta Rule
(Yang, Kautz, Hatamizadeh; arXiv:2412.06464); Unlocking State-Tracking in Linear RNNs
Through Negative Eigenvalues (Grazzi et al.; arXiv:2411.12537):

    S_t = α_t (I − β_t k_t k_tᵀ) S_{t-1} + β_t k_t v_tᵀ,      o_t = scale · S_tᵀ q_t

with α_t = exp(g_t). For a unit key the transition has eigenvalue α_t (1 − β_t) along k_t
and α_t elsewhere, so β in [0, 2] keeps every eigenvalue in [−1, 1].
"""

from __future__ import annotations

import torch

from ..common.spec import matrix_spec_start


def naive_delta_rule(
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
    """The (gated) delta rule as a loop over time.

    Args:
        q, k: queries and keys [B, T, H, K] (the layers L2-normalise them).
        v: values [B, T, H, V].
        beta: write strength [B, T, H], in [0, 2] for eigenvalues in [−1, 1].
        g: log decay log α (<= 0), [B, T, H]; -inf resets the state; None means no decay
            (DeltaNet).
        scale: output scale; K ** -0.5 when None.
        initial_state: S_0, [B, H, K, V] ([N, H, K, V] with cu_seqlens), or None for zeros.
        output_final_state: also return S_T.
        cu_seqlens: [N + 1] offsets of N sequences packed in a batch of one.

    Returns:
        (o [B, T, H, V] in v's dtype, final state [B, H, K, V] or [N, H, K, V], or None).
    """
    # one delta-rule step per token: DeltaProduct's loop with n_h = 1
    return householder_loop(q, k.unsqueeze(2), v.unsqueeze(2), beta.unsqueeze(2), g, scale, initial_state)


def householder_loop(q, k, v, beta, g, scale, initial_state):
    """Per token: the decay α_t = exp(g_t) once, n_h delta-rule (generalised Householder)
    steps, then the read o_t = scale · S_tᵀ q_t. q [B, T, H, K], k [B, T, n_h, H, K],
    v [B, T, n_h, H, V], beta [B, T, n_h, H], g [B, T, H] or None: n_h = 1 is the delta
    rule, n_h > 1 DeltaProduct. Returns (o [B, T, H, V], S_T)."""
    B, T, H, _ = q.shape
    # S: [B, H, K, V]
    scale, dtype, S = matrix_spec_start(q, v, scale, initial_state)
    out_dtype = v.dtype
    q, k, v, beta = q.to(dtype), k.to(dtype), v.to(dtype), beta.to(dtype)
    log_decay = q.new_zeros(B, T, H) if g is None else g.to(dtype)
    outputs = []
    # unbind once: indexing x[:, t] inside the loop would make every step's backward
    # write a full-length gradient, O(T²) work
    for q_t, k_t, v_t, beta_t, g_t in zip(*(x.unbind(1) for x in (q, k, v, beta, log_decay)), strict=True):
        if g is not None:
            # decay once per token: S ← α_t S, [B, H, 1, 1]
            S = g_t.exp()[..., None, None] * S
        for k_j, v_j, beta_j in zip(k_t.unbind(1), v_t.unbind(1), beta_t.unbind(1), strict=True):
            # step j, on the decayed state: (I − β k kᵀ) S + β k vᵀ = S + k (β (v − Sᵀ k))ᵀ,
            # the state's prediction for k replaced by v at rate β. [B, H, V]
            new_value = beta_j[..., None] * (v_j - torch.einsum("bhk,bhkv->bhv", k_j, S))
            S = S + k_j[..., :, None] * new_value[..., None, :]
        # read after the last step: o_t = scale · S_tᵀ q_t, [B, H, V]
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", q_t, S))
    o = torch.stack(outputs, dim=1) if outputs else v.new_zeros(B, 0, H, v.shape[-1])
    return o.to(out_dtype), S
