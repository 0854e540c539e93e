"""The PLRNNs as piecewise-affine maps: their linear subregions, fixed points and k-cycles
solved exactly, as for the AL-RNN (`recur.analysis.alrnn`).

Each PLRNN-style map (`recur.layers.plrnn`, `dendplrnn`, `shplrnn`) is one form:

    F(z) = A ⊙ z + W Σ_k α_k ⊙ ReLU(V z − θ_k) + h,   u = V z [L] the units that switch

- PLRNN (Schmidt et al., arXiv:1910.03471): V = I, one ramp, θ = 0, α = 1, W off-diagonal.
- dendPLRNN (Brenner et al., arXiv:2207.02542): V = I, ramps (α_b, θ_b) for the B bases;
  clipped: also (−α_b, 0) for each, from − α_b ReLU(z).
- shPLRNN (Hess et al., arXiv:2306.04406): V = W₂, W = W₁, θ = −h₂, α = 1; clipped: also
  (−1, 0), from − ReLU(W₂ z).

Unit l with K ramps is on level j ∈ {0, …, K} when u_l lies between its j-th and
(j+1)-th smallest threshold; the levels of all L units pick one of (K+1)^L regions, where
the map is affine: φ_l = s_l u_l + o_l with s_l the sum of the α of its j lowest ramps and
o_l = −Σ α θ over them, so F(z) = J z + c with J = diag(A) + W diag(s) V, c = h + W o.
Regions are numbered by their levels read as digits in base K + 1, the first unit the most
significant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .alrnn import Cycle, PiecewiseLinearMap, find_cycles


class PLRNNMap:
    """F(z) = A ⊙ z + W Σ_k α_k ⊙ ReLU(V z − θ_k) + h in float64: A [M], W [M, L], V [L, M],
    h [M], α and θ [K, L] (ramp k of hidden unit l)."""

    def __init__(self, A, W, V, h, alpha, theta) -> None:
        A, W, V, h, alpha, theta = (torch.as_tensor(t).detach().to(torch.float64).cpu() for t in (A, W, V, h, alpha, theta))
        M, L = W.shape
        if A.shape != (M,) or h.shape != (M,):
            raise ValueError(f"A and h must be vectors [M] = [{M}]; got {list(A.shape)} and {list(h.shape)}")
        if V.shape != (L, M):
            raise ValueError(f"V must have shape [L, M] = [{L}, {M}]; got {list(V.shape)}")
        if alpha.dim() != 2 or alpha.shape[1] != L or theta.shape != alpha.shape:
            raise ValueError(f"alpha and theta must have shape [K, L = {L}]; got {list(alpha.shape)} and {list(theta.shape)}")
        self.A, self.W, self.V, self.h = A, W, V, h
        # each unit's ramps sorted by threshold: level j has the j lowest on
        self.theta, order = theta.sort(dim=0)
        self.alpha = alpha.gather(0, order)

    @classmethod
    def from_layer(cls, layer: nn.Module, *, head: int = 0, input: torch.Tensor | None = None) -> PLRNNMap:
        """The map of one head of a `plrnn`, `dendplrnn` or `shplrnn` layer; a constant
        layer `input` [d_model] adds its projection C x to h (None: the autonomous map)."""
        name = getattr(layer, "name", None)
        if name not in ("plrnn", "dendplrnn", "shplrnn"):
            raise TypeError(f"layer must be a plrnn, dendplrnn or shplrnn layer; got {type(layer).__name__}")
        if not layer.causal:
            raise ValueError("layer is bidirectional: its backward direction is no map of the past")
        if not 0 <= head < layer.heads:
            raise ValueError(f"head must be in [0, {layer.heads}); got {head}")
        direction = layer.directions[0]
        R, b = (t.detach().to(torch.float64) for t in layer.op_weights(direction))
        M = layer.head_dim
        drive = torch.zeros(M, dtype=torch.float64)
        if input is not None:
            drive = layer.input_gates(direction, input.reshape(1, 1, -1).to(direction.in_proj.weight.dtype))[0, 0, 0, head]
        eye = torch.eye(M, dtype=torch.float64)
        if name == "shplrnn":
            A, h1, h2 = b[0, head, :M], b[0, head, M : 2 * M], b[0, head, 2 * M :]
            alpha, theta = torch.ones(1, h2.shape[0], dtype=torch.float64), -h2[None]
            if layer.cell.clipped:
                alpha, theta = torch.cat([alpha, -alpha]), torch.cat([theta, torch.zeros_like(theta)])
            return cls(A, R[0, head], R[1, head].T, h1 + drive, alpha, theta)
        W = R[0, head] * (1 - eye)
        if name == "plrnn":
            return cls(b[0, head], W, eye, b[1, head] + drive, torch.ones(1, M, dtype=torch.float64),
                       torch.zeros(1, M, dtype=torch.float64))
        B = layer.cell.num_bases
        alpha, theta = b[2 : 2 + B, head], b[2 + B :, head]
        if layer.cell.clipped:
            alpha, theta = torch.cat([alpha, -alpha]), torch.cat([theta, torch.zeros_like(theta)])
        return cls(b[0, head], W, eye, b[1, head] + drive, alpha, theta)

    @property
    def dim(self) -> int:
        return self.A.shape[0]

    @property
    def hidden(self) -> int:
        return self.V.shape[0]

    @property
    def levels(self) -> int:
        """K + 1: the levels of each switching unit."""
        return self.theta.shape[0] + 1

    @property
    def num_regions(self) -> int:
        return self.levels**self.hidden

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        """z [..., M] -> F(z) [..., M]."""
        u = z @ self.V.T
        phi = (self.alpha * torch.relu(u.unsqueeze(-2) - self.theta)).sum(-2)
        return self.A * z + phi @ self.W.T + self.h

    def trajectory(self, z0: torch.Tensor, steps: int) -> torch.Tensor:
        """[steps + 1, M]: z0 and the `steps` states the map takes it to."""
        z = torch.as_tensor(z0, dtype=torch.float64)
        states = [z]
        for _ in range(steps):
            z = self(z)
            states.append(z)
        return torch.stack(states)

    def unit_levels(self, z: torch.Tensor) -> torch.Tensor:
        """z [..., M] -> [..., L] int64: how many ramps of each unit are on."""
        return (z @ self.V.T).unsqueeze(-2).gt(self.theta).sum(-2)

    def regions(self, z: torch.Tensor) -> torch.Tensor:
        """z [..., M] -> [...] int64: the region code of each state (a trajectory's symbolic
        sequence for z [T, M])."""
        digits = self.levels ** torch.arange(self.hidden - 1, -1, -1)
        return (self.unit_levels(z) * digits).sum(-1)

    def code_levels(self, code: int) -> torch.Tensor:
        """[L] int64: the level of each unit in region `code`."""
        if not 0 <= code < self.num_regions:
            raise ValueError(f"region code must be in [0, {self.num_regions}); got {code}")
        digits = self.levels ** torch.arange(self.hidden - 1, -1, -1)
        return torch.div(code, digits, rounding_mode="floor") % self.levels

    def region_name(self, code: int) -> str:
        """The levels of region `code`, one digit per unit, the first unit first."""
        return "".join(str(int(j)) for j in self.code_levels(code))

    def affine(self, code: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(J, c) with F(z) = J z + c in region `code`: J = diag(A) + W diag(s) V, c = h + W o."""
        on = torch.arange(self.theta.shape[0])[:, None] < self.code_levels(code)
        slope = (self.alpha * on).sum(0)
        offset = -(self.alpha * self.theta * on).sum(0)
        return torch.diag(self.A) + self.W * slope @ self.V, self.h + self.W @ offset

    def in_region(self, z: torch.Tensor, code: int, tol: float = 0.0) -> bool:
        """Whether z lies in region `code`, a unit within `tol` of a threshold counting as
        either side (the map is continuous)."""
        u, level = z @ self.V.T, self.code_levels(code)
        K = self.theta.shape[0]
        columns = torch.arange(self.hidden)
        # above its level-th threshold and at most its (level+1)-th
        lower = torch.where(level > 0, self.theta[(level - 1).clamp(min=0), columns], -torch.inf)
        upper = torch.where(level < K, self.theta[level.clamp(max=K - 1), columns], torch.inf)
        return bool(((u >= lower - tol) & (u <= upper + tol)).all())

    def cycles(self, period: int, *, tol: float = 1e-10, max_words: int = 1 << 16,
               regions: Sequence[int] | None = None) -> list[Cycle]:
        """Every cycle of exactly `period` steps, solved per word of regions as
        `PiecewiseLinearMap.cycles` does; `regions` limits the words to those regions."""
        return find_cycles(self, period, tol=tol, max_words=max_words, regions=regions)

    def fixed_points(self, *, tol: float = 1e-10, regions: Sequence[int] | None = None) -> list[Cycle]:
        """The fixed points: the 1-cycles, at most one per region."""
        return self.cycles(1, tol=tol, regions=regions)


def piecewise_map(layer: nn.Module, *, head: int = 0, input: torch.Tensor | None = None):
    """The exact piecewise-affine map of an `alrnn`, `plrnn`, `dendplrnn` or `shplrnn` layer's
    head: a `PiecewiseLinearMap` or a `PLRNNMap`, both with `cycles` and `fixed_points`."""
    if getattr(layer, "name", None) == "alrnn":
        return PiecewiseLinearMap.from_layer(layer, head=head, input=input)
    return PLRNNMap.from_layer(layer, head=head, input=input)
