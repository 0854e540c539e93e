"""Gated linear attention, step by step: the executable spec of the family.

Gated Linear Attention Transformers with Hardware-Efficient Training
(Yang, Wang, Shen, Panda, Kim; arXiv:2312.06635):

    S_t = diag(exp g_t) S_{t-1} + k_t v_tᵀ,      o_t = scale · S_tᵀ q_t

The decay is applied before the write and the output is read after it. A scalar gate per
head ([B, T, H]) gives RetNet and Mamba-2 (SSD); no gate gives linear attention.
"""

from __future__ import annotations

import torch

from ..common.spec import matrix_spec_start


def naive_gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    g: torch.Tensor | None = None,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    decay_sign: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated linear attention as a loop over time.

    Args:
        q, k: queries and keys [B, T, H, K].
        v: values [B, T, H, V].
        g: log decay (<= 0), [B, T, H] (one per head) or [B, T, H, K] (one per key
            channel); -inf resets the state; None means no decay.
        scale: output scale; K ** -0.5 when None.
        initial_state: S_0, [B, H, K, V] ([N, H, K, V] with cu_seqlens), or None for zeros.
        output_final_state: also return S_T.
        cu_seqlens: [N + 1] offsets of N sequences packed in a batch of one.
        decay_sign: ±1, [B, T, H], for signed per-head decays a_t = decay_sign_t · exp(g_t)
            in (-1, 1) (negative eigenvalues, arXiv:2411.12537); None means positive.

    Returns:
        (o [B, T, H, V] in v's dtype, final state [B, H, K, V] or [N, H, K, V], or None).
    """
    B, T, H, _ = q.shape
    # S: [B, H, K, V]
    scale, dtype, S = matrix_spec_start(q, v, scale, initial_state)
    out_dtype = v.dtype
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    # one slice per step, taken once: indexing inside the loop would make backward quadratic in T
    steps = [x.unbind(1) if x is not None else [None] * T for x in (q, k, v, g, decay_sign)]
    outputs = []
    for q_t, k_t, v_t, g_t, sign_t in zip(*steps, strict=True):
        if g_t is not None:
            # decay: [B, H, 1, 1] per head or [B, H, K, 1] per key channel
            decay = g_t.to(dtype).exp()
            if sign_t is not None:
                decay = decay * sign_t.to(dtype)
            decay = decay[..., None, None] if decay.dim() == 2 else decay[..., None]
            S = decay * S
        # write: S += k_t v_tᵀ, [B, H, K, V]
        S = S + k_t[:, :, :, None] * v_t[:, :, None, :]
        # read: o_t = scale · S_tᵀ q_t, [B, H, V]
        outputs.append(scale * torch.einsum("bhk,bhkv->bhv", q_t, S))
    o = torch.stack(outputs, dim=1) if outputs else v.new_zeros(B, 0, H, v.shape[-1])
    return o.to(out_dtype), S

