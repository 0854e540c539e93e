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
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    dtype = torch.float64 if torch.float64 in (q.dtype, v.dtype) else torch.float32
    q, k, v, beta = q.to(dtype), k.to(dtype), v.to(dtype), beta.to(dtype)
    # S: [B, H, K, V]
    S = q.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    log_decay = q.new_zeros(B, T, H) if g is None else g.to(dtype)
    outputs = []
    # unbind once: indexing x[:, t] inside the loop would make every step's backward
    # write a full-length gradient, O(T²) work
    for q_t, k_t, v_t, beta_t, g_t in zip(*(x.unbind(1) for x in (q, k, v, beta, log_decay)), strict=True):
        if g is not None:
            # decay: S ← α_t S, [B, H, 1, 1]
            S = g_t.exp()[..., None, None] * S
        # α_t (I − β_t k kᵀ) S + β_t k vᵀ = α_t S + k (β_t (v_t − (α_t S)ᵀ k_t))ᵀ:
        # the state's prediction for k_t is replaced by v_t at rate β_t. [B, H, V]
        new_value = beta_t[..., None] * (v_t - torch.einsum("bhk,bhkv->bhv", k_t, S))
        S = S + k_t[..., :, None] * new_value[..., None, :]
        # read: o_t = scale · S_tᵀ q_t, [B, H, V]
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", q_t, S))
    o = torch.stack(outputs, dim=1) if outputs else v.new_zeros(B, 0, H, V, dtype=dtype)
    return o.to(v.dtype), S
