"""Test-time memorisation, token by token: the executable spec of the `memory` family.

Titans: Learning to Memorize at Test Time (Behrouz, Zhong, Mirrokni; arXiv:2501.00663);
It's All Connected: A Journey Through Test-Time Memorization, Attentional Bias, Retention,
and Online Optimization (Miras: Moneta, Yaad, Memora; Behrouz et al.; arXiv:2504.13173);
ATLAS: Learning to Optimally Memorize the Context at Test Time (Behrouz et al.;
arXiv:2505.23735); Learning to (Learn at Test Time): RNNs with Expressive Hidden States
(TTT; Sun et al.; arXiv:2407.04620). The state is the weights W of a memory M_W; per token

    G_t = Σ_{i=t−c+1..t} γ_i ∇_W ℓ(M_A(φ(k_i)), v_i)      (A: the weights the mini-batch began with)
    S_t = θ_t S_{t−1} − η_t G_t,   W_t = α_t W_{t−1} + S_t    (gd: θ = 0)
    y_t = M_{W_t}(φ(q_t))

ATLAS's optimiser instead takes S_t = θ_t S_{t−1} + G_t and W_t = α_t W_{t−1} − η_t NS_k(S_t);
Moneta keeps W as an accumulator read through W / ‖W‖_q^{q−2}; Memora replaces the retention
by W_t = c · softmax(α_t log W_{t−1} + S_t) along each row.
"""

from __future__ import annotations

import torch

from ..common.checks import state_dtype
from .model import (
    features,
    layer_widths,
    lq_normalised,
    memory_backward,
    memory_forward,
    memory_state_type,
    newton_schulz,
    objective_gradient,
    split_state,
)


def naive_memory(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    eta: torch.Tensor,
    g: torch.Tensor | None = None,
    theta: torch.Tensor | None = None,
    gamma: torch.Tensor | None = None,
    huber_threshold: torch.Tensor | None = None,
    depth: int = 1,
    hidden: int | None = None,
    residual: bool = False,
    layer_norm: bool = False,
    feature_degree: int = 1,
    objective: str = "l2",
    p: float = 2.0,
    retention: str = "l2",
    q_norm: float = 2.0,
    simplex_scale: float = 1.0,
    optimizer: str = "gd",
    ns_steps: int = 5,
    window: int = 1,
    minibatch: int = 1,
    initial_state: tuple | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple | None]:
    """The memory's update and read as a loop over time.

    Args:
        q, k: queries and keys [B, T, H, K] (the layers L2-normalise them).
        v: values [B, T, H, V].
        eta: learning rate η_t >= 0 of the inner step, [B, T, H].
        g: log retention log α_t (<= 0), [B, T, H]; None: α = 1 (no forgetting).
        theta: momentum θ_t in (0, 1], [B, T, H]; needed by optimizer "momentum", optional
            for "newton_schulz" (None: θ = 0); must be None for "gd".
        gamma: the Omega rule's weight γ_i >= 0 of token i in every window it is in,
            [B, T, H]; None: 1.
        huber_threshold: Yaad's δ_t > 0, [B, T, H]; needed by objective "huber" only.
        depth: weight matrices of the memory: 1 is a linear map, >= 2 an MLP (GELU between).
        hidden: the MLP's hidden width; 4 · (feature width) when None.
        residual: M(x) = x + f(x) (the feature width must equal V).
        layer_norm: a LayerNorm without affine on f(x) before the residual.
        feature_degree: p of the polynomial feature map φ(x) = [x, x²/2!, .., x^p/p!] on
            keys and queries (1: φ(x) = x); the feature width is p · K.
        objective: the attentional bias ℓ: "l2" (½‖M(k) − v‖²), "lp" (‖M(k) − v‖_p^p / p,
            Moneta), "huber" (Yaad: ℓ2 where ‖M(k) − v‖ <= δ_t, else δ_t · ℓ1).
        p: the exponent of "lp".
        retention: "l2" (W_t = α_t W_{t−1} + S_t), "lq" (the same on an accumulator read
            through W / ‖W‖_q^{q−2}, Moneta) or "kl" (W_t = c · softmax_rows(α_t log W_{t−1}
            + S_t), Memora; the weights must stay positive).
        q_norm: q of "lq".
        simplex_scale: c of "kl".
        optimizer: "gd" (S_t = −η_t G_t), "momentum" (S_t = θ_t S_{t−1} − η_t G_t, Titans)
            or "newton_schulz" (S_t = θ_t S_{t−1} + G_t, step −η_t NS_k(S_t), ATLAS).
        ns_steps: k, the Newton–Schulz iterations of "newton_schulz" (0: no orthogonalisation).
        window: c, the Omega rule's window (1: only the current token).
        minibatch: b, tokens per mini-batch: every gradient of a mini-batch is taken at the
            weights it started from (1: at the previous token's weights).
        initial_state: `memory_state_type(depth)` (W, S, A per matrix, the window, the phase)
            for B (or N with cu_seqlens) sequences; None: zeros (for "kl": c / out).
        output_final_state: also return the state after the last token.
        cu_seqlens: [N + 1] offsets of N sequences packed in a batch of one.

    Returns:
        (y [B, T, H, V] in v's dtype, final state or None).
    """
    B, T, H, K = q.shape
    V = v.shape[-1]
    dtype, out_dtype = state_dtype(q, v), v.dtype
    heads_first = lambda x: x.to(dtype).transpose(1, 2)  # noqa: E731  [B, T, H, ..] -> [B, H, T, ..]
    q, k, v = heads_first(q), heads_first(k), heads_first(v)
    eta, ones = heads_first(eta), q.new_ones(B, H, T)
    log_alpha = q.new_zeros(B, H, T) if g is None else heads_first(g)
    theta = q.new_zeros(B, H, T) if theta is None else heads_first(theta)
    gamma = ones if gamma is None else heads_first(gamma)
    delta = ones if huber_threshold is None else heads_first(huber_threshold)
    if initial_state is None:
        initial_state = zero_state(B, H, K, V, depth, hidden, feature_degree, window, retention, simplex_scale, q)
    W, S, A, (window_k, window_v, window_gamma, phase) = split_state(
        [s.to(dtype) for s in initial_state], depth
    )

    def weights(W):
        """The weights the memory reads with: Moneta's are the normalised accumulator."""
        return [lq_normalised(w, q_norm) for w in W] if retention == "lq" else W

    outputs = []
    for t in range(T):
        # a mini-batch starts at phase 0: its gradients are all taken at the weights it starts from
        starts = (phase == 0)[:, None, None, None]
        A = [torch.where(starts, w, a) for w, a in zip(W, A, strict=True)]
        # the window of the Omega rule, this token last: keys [B, H, c, K], values [B, H, c, V]
        keys = torch.cat([window_k, k[:, :, t : t + 1]], dim=2)
        values = torch.cat([window_v, v[:, :, t : t + 1]], dim=2)
        weights_in_window = torch.cat([window_gamma, gamma[:, :, t : t + 1]], dim=2)
        window_k, window_v, window_gamma = keys[:, :, 1:], values[:, :, 1:], weights_in_window[:, :, 1:]
        # the residuals at the anchor, r_i = M_A(φ(k_i)) − v_i, and γ_i dℓ/dM(k_i): [B, H, c, V]
        anchor = weights(A)
        predicted, forward = memory_forward(anchor, features(keys, feature_degree), residual, layer_norm)
        dy = objective_gradient(predicted - values, objective, p, delta[:, :, t, None])
        dy = weights_in_window[..., None] * dy
        # G_t = Σ_i γ_i ∇_W ℓ_i, for each matrix the sum of the outer products inputs_iᵀ dz_i
        G = [x.transpose(-1, -2) @ dz for x, dz in zip(forward.inputs, memory_backward(anchor, forward, dy), strict=True)]
        eta_t, theta_t = eta[:, :, t, None, None], theta[:, :, t, None, None]
        if optimizer == "newton_schulz":
            # ATLAS: momentum of the gradients, the step along their orthogonalised direction
            S = [theta_t * s + grad for s, grad in zip(S, G, strict=True)]
            step = [-eta_t * newton_schulz(s, ns_steps) for s in S]
        else:
            # Titans' surprise: S_t = θ_t S_{t−1} − η_t G_t (θ = 0: gradient descent)
            S = step = [theta_t * s - eta_t * grad for s, grad in zip(S, G, strict=True)]
        alpha_t = log_alpha[:, :, t, None, None]
        if retention == "kl":
            # Memora: a mirror step of KL retention, the weights on a scaled simplex per row
            # (log of at least the dtype's smallest normal: an entry that underflowed to 0
            # stays finite when α_t is 0 too)
            W = [
                simplex_scale * torch.softmax(alpha_t.exp() * w.clamp_min(torch.finfo(w.dtype).tiny).log() + u, dim=-1)
                for w, u in zip(W, step, strict=True)
            ]
        else:
            # weight decay as forgetting: W_t = α_t W_{t−1} + step
            W = [alpha_t.exp() * w + u for w, u in zip(W, step, strict=True)]
        # the read: y_t = M_{W_t}(φ(q_t)), [B, H, V]
        read, _ = memory_forward(weights(W), features(q[:, :, t : t + 1], feature_degree), residual, layer_norm)
        outputs.append(read[:, :, 0])
        phase = (phase + 1) % minibatch
    y = torch.stack(outputs, dim=1) if outputs else v.new_zeros(B, 0, H, V)
    state = memory_state_type(depth)(*W, *S, *A, window_k, window_v, window_gamma, phase)
    return y.to(out_dtype), state


def zero_state(B, H, K, V, depth, hidden, feature_degree, window, retention, simplex_scale, like):
    """The state before any token: zero weights (for "kl" the uniform c / out, the centre of
    its simplex), momenta, anchors and window, phase 0."""
    dtype = state_dtype(like)
    shapes = layer_widths(feature_degree * K, V, depth, hidden)
    fill = (lambda n_out: simplex_scale / n_out) if retention == "kl" else (lambda n_out: 0.0)
    W = [like.new_full((B, H, n_in, n_out), fill(n_out), dtype=dtype) for n_in, n_out in shapes]
    zeros = [like.new_zeros(B, H, n_in, n_out, dtype=dtype) for n_in, n_out in shapes]
    window_state = (
        like.new_zeros(B, H, window - 1, K, dtype=dtype),
        like.new_zeros(B, H, window - 1, V, dtype=dtype),
        like.new_zeros(B, H, window - 1, dtype=dtype),
    )
    return memory_state_type(depth)(*W, *zeros, *W, *window_state, like.new_zeros(B, dtype=dtype))
