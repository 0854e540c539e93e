"""The memory model M_W and the pieces of its update that every form shares.

The memory is a linear map (depth 1) or an MLP of `depth` matrices with GELU between them,
optionally followed by a LayerNorm (no affine) of its output and a residual connection:
M(x) = x + LN(W_L σ(... σ(W_1 x))), written here with row vectors, x W. Its weights are the
recurrent state, so their gradients are written out (the forms differentiate them once more
when the layer trains).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

# Muon's quintic Newton–Schulz coefficients (used by ATLAS for its inner optimiser)
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)
# keeps the norms of LayerNorm, the ℓq normalisation and Newton–Schulz away from zero
EPS = 1e-6


@functools.cache
def memory_state_type(depth: int) -> type:
    """The state's named tuple for a memory of `depth` weight matrices: the weights W1..WL,
    the momenta S1..SL, the anchors A1..AL (the weights the current mini-batch takes its
    gradients at), the Omega rule's window of the last c − 1 keys, values and weights, and
    the position in the current mini-batch."""
    fields = [f"{kind}{layer}" for kind in "WSA" for layer in range(1, depth + 1)]
    fields += ["window_k", "window_v", "window_gamma", "phase"]
    state = NamedTuple(f"MemoryState{depth}", [(name, torch.Tensor) for name in fields])
    state.__doc__ = (
        f"State of a memory of depth {depth}: W1..W{depth} (weights, [B, H, in, out]), S (momenta), "
        "A (mini-batch anchors), window_k [B, H, c − 1, K], window_v [B, H, c − 1, V], "
        "window_gamma [B, H, c − 1], phase [B] (tokens into the current mini-batch)."
    )
    return state


def split_state(state, depth: int):
    """(W, S, A) as lists of `depth` tensors, then (window_k, window_v, window_gamma, phase)."""
    parts = list(state)
    return parts[:depth], parts[depth : 2 * depth], parts[2 * depth : 3 * depth], parts[3 * depth :]


def layer_widths(in_dim: int, out_dim: int, depth: int, hidden: int | None) -> list[tuple[int, int]]:
    """(in, out) of each weight matrix: in_dim -> hidden -> ... -> out_dim."""
    width = 4 * in_dim if hidden is None else hidden
    dims = [in_dim] + [width] * (depth - 1) + [out_dim]
    return list(zip(dims[:-1], dims[1:], strict=True))


def features(x: torch.Tensor, degree: int) -> torch.Tensor:
    """φ_p(x) = [x, x²/2!, ..., x^p/p!] (powers elementwise, concatenated on the last axis):
    the diagonal of ATLAS's polynomial map with its Taylor coefficients 1/i!."""
    if degree == 1:
        return x
    return torch.cat([x**i / math.factorial(i) for i in range(1, degree + 1)], dim=-1)


def gelu(z: torch.Tensor) -> torch.Tensor:
    return z * _normal_cdf(z)


def gelu_derivative(z: torch.Tensor) -> torch.Tensor:
    return _normal_cdf(z) + z * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))


class Forward(NamedTuple):
    """What the backward pass of the memory needs: each matrix's input [.., n, in], the
    hidden pre-activations, the normalised output and its inverse standard deviation."""

    inputs: list[torch.Tensor]
    hidden: list[torch.Tensor]
    normalised: torch.Tensor | None
    inv_std: torch.Tensor | None


def memory_output(
    x: torch.Tensor, apply: Callable[[int, torch.Tensor], torch.Tensor], depth: int, residual: bool, layer_norm: bool,
) -> tuple[torch.Tensor, Forward]:
    """M(x) for inputs x [B, H, n, in], where apply(l, u) multiplies u by the l-th matrix
    (per-token weights in the chunk form); returns (M(x) [B, H, n, out], the forward)."""
    inputs, hidden = [], []
    u = x
    for layer in range(depth):
        inputs.append(u)
        z = apply(layer, u)
        if layer < depth - 1:
            hidden.append(z)
            u = gelu(z)
    normalised = inv_std = None
    if layer_norm:
        centred = z - z.mean(-1, keepdim=True)
        inv_std = torch.rsqrt(centred.square().mean(-1, keepdim=True) + EPS)
        z = normalised = centred * inv_std
    return (x + z if residual else z), Forward(inputs, hidden, normalised, inv_std)


def memory_forward(weights: list[torch.Tensor], x: torch.Tensor, residual: bool, layer_norm: bool):
    """M_W(x) with one set of weights W_l [B, H, in, out] for all n inputs x [B, H, n, in]."""
    return memory_output(x, lambda layer, u: u @ weights[layer], len(weights), residual, layer_norm)


def memory_backward(weights: list[torch.Tensor], forward: Forward, dy: torch.Tensor) -> list[torch.Tensor]:
    """dℓ/dz_l [B, H, n, out_l] of every matrix's output, for dℓ/dM(x) = dy [B, H, n, out]; the
    gradient of matrix l for token i is the outer product inputs_l[i]ᵀ dz_l[i]."""
    dz = dy
    if forward.normalised is not None:
        y = forward.normalised
        dz = forward.inv_std * (dz - dz.mean(-1, keepdim=True) - y * (dz * y).mean(-1, keepdim=True))
    grads = [dz]
    for layer in range(len(weights) - 1, 0, -1):
        dz = (dz @ weights[layer].transpose(-1, -2)) * gelu_derivative(forward.hidden[layer - 1])
        grads.append(dz)
    return grads[::-1]


def objective_gradient(
    residual: torch.Tensor, objective: str, p: float, huber_threshold: torch.Tensor | None,
) -> torch.Tensor:
    """dℓ/dM(k) for the residual r = M(k) − v [B, H, n, V]: ℓ2 (½‖r‖²) -> r; ℓp (‖r‖_p^p / p)
    -> sign(r) |r|^{p−1}; Huber (Yaad) -> r where ‖r‖ ≤ δ, else δ sign(r) (δ [B, H, n])."""
    if objective == "l2":
        return residual
    if objective == "lp":
        return residual.sign() * residual.abs().pow(p - 1)
    delta = huber_threshold[..., None]
    small = residual.norm(dim=-1, keepdim=True) <= delta
    return torch.where(small, residual, delta * residual.sign())


def lq_normalised(W: torch.Tensor, q_norm: float) -> torch.Tensor:
    """Moneta's weights from its accumulator: W / ‖W‖_q^{q−2} (the norm over each head's
    matrix); the identity for q = 2."""
    if q_norm == 2:
        return W
    norm = (W.abs().pow(q_norm).sum((-2, -1), keepdim=True) + EPS) ** (1 / q_norm)
    return W / norm ** (q_norm - 2)


def newton_schulz(X: torch.Tensor, steps: int) -> torch.Tensor:
    """k steps of the quintic Newton–Schulz iteration towards the orthogonal factor of X
    [.., m, n] (Muon): X ← X / ‖X‖_F, then X ← aX + (b XXᵀ + c (XXᵀ)²) X. k = 0 is the
    identity. A tall X iterates on Xᵀ (X (XᵀX)^i = (XXᵀ)^i X): the Gram matrix is the
    smaller of m × m and n × n."""
    if steps == 0:
        return X
    if X.shape[-2] > X.shape[-1]:
        return newton_schulz(X.transpose(-1, -2), steps).transpose(-1, -2)
    a, b, c = NEWTON_SCHULZ
    # the norm's square root kept off zero: a zero step (an untrained memory's first) stays
    # zero with a finite gradient
    X = X * torch.rsqrt(X.square().sum((-2, -1), keepdim=True) + EPS**2)
    for _ in range(steps):
        gram = X @ X.transpose(-1, -2)
        X = a * X + (b * gram + c * gram @ gram) @ X
    return X
