"""Fixed and slow points of any recurrent step, found numerically.

Opening the Black Box: Low-Dimensional Dynamics in High-Dimensional Recurrent Neural
Networks (Sussillo and Barak; Neural Computation 2013): with the input held at x*, the
state map F(s) = step(x*, s) has fixed points where

    q(s) = ½ ‖F(s) − s‖²

is 0, and slow points where q is small. Minimise q from many starts (states the network
visits), keep the minima, merge those that coincide, and linearise F there: the
eigenvalues of ∂F/∂s say whether a point attracts (every |λ| < 1), repels (every |λ| > 1)
or is a saddle.

`StateMap` turns any `step(x, state) -> (output, state)` (a layer's, or a model's such as
`LM.step`) into F on flat states [N, D]; the states may be nested dicts or lists of
batch-first tensors (an LSTM's h and c, one dict per layer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch


@dataclass
class FixedPoint:
    # [D]: the flat state
    state: torch.Tensor
    # q(s) = ½ ‖F(s) − s‖² there
    q: float
    # [D] complex: eigenvalues of the Jacobian ∂F/∂s there
    eigenvalues: torch.Tensor
    # "fixed" (q at most `fixed_q`) or "slow"
    speed: str

    @property
    def kind(self) -> str:
        """"stable" (every |λ| < 1), "unstable" (every |λ| > 1) or "saddle"."""
        moduli = self.eigenvalues.abs()
        if bool((moduli < 1).all()):
            return "stable"
        if bool((moduli > 1).all()):
            return "unstable"
        return "saddle"


def _flatten(state) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, Mapping):
        return [t for key in state for t in _flatten(state[key])]
    if isinstance(state, (list, tuple)):
        return [t for item in state for t in _flatten(item)]
    raise TypeError(f"a state must be tensors in dicts, lists and tuples; got a {type(state).__name__}")


def _rebuild(template, leaves: list[torch.Tensor]):
    """`template`'s structure with `leaves` in place of its tensors (consumed in order)."""
    if isinstance(template, torch.Tensor):
        return leaves.pop(0)
    if isinstance(template, Mapping):
        return {key: _rebuild(template[key], leaves) for key in template}
    return type(template)(_rebuild(item, leaves) for item in template)


class StateMap:
    """F(s) = the state after one `step` from s with the input held at `x`, on flat states.

    step: `step(x, state) -> (output, state)`, e.g. a layer's or `LM.step`.
    x: the input of one example (batch 1, e.g. a token `torch.tensor([3])` or a vector
    [1, d_model]); it is repeated over the batch of states.
    template: a state of batch 1 (e.g. `layer.init_state(1)`), whose structure, shapes and
    dtype the flat states take.
    """

    def __init__(self, step: Callable, x: torch.Tensor, template) -> None:
        leaves = _flatten(template)
        if not leaves or any(t.shape[0] != 1 for t in leaves):
            raise ValueError(f"template must be a state of batch 1; got leaves of shapes {[list(t.shape) for t in leaves]}")
        if x.shape[0] != 1:
            raise ValueError(f"x must be the input of one example (batch 1); got shape {list(x.shape)}")
        self.step, self.x, self.template = step, x, template
        self.shapes = [t.shape[1:] for t in leaves]
        self.sizes = [t[0].numel() for t in leaves]
        self.dtype = leaves[0].dtype

    @property
    def dim(self) -> int:
        return sum(self.sizes)

    def flatten(self, state) -> torch.Tensor:
        """A state of batch N -> [N, D]."""
        return torch.cat([t.reshape(t.shape[0], -1) for t in _flatten(state)], dim=1)

    def unflatten(self, s: torch.Tensor):
        """[N, D] -> the state of batch N, structured as the template."""
        parts = [part.reshape(len(s), *shape) for part, shape in zip(s.split(self.sizes, dim=1), self.shapes, strict=True)]
        return _rebuild(self.template, parts)

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        """s [N, D] -> F(s) [N, D]."""
        x = self.x.expand(len(s), *self.x.shape[1:])
        _, new = self.step(x, self.unflatten(s))
        return self.flatten(new)


def speeds(F: Callable, s: torch.Tensor) -> torch.Tensor:
    """[N]: q(s) = ½ ‖F(s) − s‖² of each state s [N, D]."""
    return 0.5 * (F(s) - s).pow(2).sum(-1)


def jacobians(F: Callable, s: torch.Tensor) -> torch.Tensor:
    """[N, D, D]: ∂F/∂s at each state s [N, D]. F maps rows independently, so row i of
    every Jacobian is the gradient of Σ_n F(s)[n, i]: the D backward passes run batched
    (vmap), or one by one where an op of F has no batching rule."""
    with torch.enable_grad():
        s = s.detach().requires_grad_()
        out = F(s)
        N, D = out.shape
        units = torch.eye(D, dtype=out.dtype, device=out.device).unsqueeze(1).expand(D, N, D)
        try:
            (rows,) = torch.autograd.grad(out, s, grad_outputs=units, is_grads_batched=True, retain_graph=True)
        except RuntimeError:
            rows = torch.stack([torch.autograd.grad(out[:, i].sum(), s, retain_graph=True)[0] for i in range(D)])
    return rows.transpose(0, 1)


def find_fixed_points(
    F: Callable,
    starts: torch.Tensor,
    *,
    steps: int = 1000,
    lr: float = 1e-2,
    newton_steps: int = 10,
    settle: int = 0,
    slow_q: float = 1e-4,
    fixed_q: float = 1e-12,
    distinct: float = 1e-3,
) -> list[FixedPoint]:
    """Fixed and slow points of F from the states `starts` [N, D].

    Minimises q by Adam (`steps` from learning rate `lr` down to 0 on a cosine, every
    start at once), then polishes each point by Newton's method on F(s) = s, a step kept
    only where it lowers q (near a fixed point it converges quadratically; at a slow point
    it is refused). Keeps the minima with q at most `slow_q`, labels those at most
    `fixed_q` "fixed", merges points closer than `distinct` (Euclidean) keeping the
    slowest, and returns them slowest first.

    With `settle` > 0 the starts also run `settle` steps of F and join the starts:
    Adam moves each coordinate by about `lr` per step, so an attractor far from the
    visited states (an LSTM cell integrating a held input grows far) is reached only
    this way, while the raw starts still find the repellers.
    """
    if starts.dim() != 2:
        raise ValueError(f"starts must have shape [N, D]; got {list(starts.shape)}")
    for name, value in (("steps", steps), ("newton_steps", newton_steps), ("settle", settle)):
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int; got {value!r}")
    s = starts.detach().clone()
    if settle:
        with torch.no_grad():
            settled = s
            for _ in range(settle):
                settled = F(settled)
        s = torch.cat([s, settled])
    s.requires_grad_()
    optimizer = torch.optim.Adam([s], lr=lr)
    # a cosine decay to 0: Adam's steps keep their size at a flat minimum (a slow point)
    # unless the rate falls
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 0.5 * (1 + math.cos(math.pi * k / max(steps, 1))))
    with torch.enable_grad():
        for _ in range(steps):
            # the gradient of each q with respect to its own state only: the model's
            # parameters are left alone
            (s.grad,) = torch.autograd.grad(speeds(F, s).sum(), s)
            optimizer.step()
            schedule.step()
    s = s.detach()
    with torch.no_grad():
        q = speeds(F, s)
    eye = torch.eye(s.shape[1], dtype=s.dtype, device=s.device)
    for _ in range(newton_steps):
        J = jacobians(F, s)
        with torch.no_grad():
            residual = F(s) - s
            solution = torch.linalg.lstsq(J - eye, -residual.unsqueeze(-1)).solution.squeeze(-1)
            candidate = s + solution
            q_candidate = speeds(F, candidate)
        better = q_candidate < q
        if not better.any():
            break
        s = torch.where(better[:, None], candidate, s)
        q = torch.where(better, q_candidate, q)
    kept = []
    for i in torch.argsort(q).tolist():
        if q[i] > slow_q or not torch.isfinite(q[i]):
            break
        if any(torch.linalg.vector_norm(s[i] - s[j]) < distinct for j in kept):
            continue
        kept.append(i)
    if not kept:
        return []
    eigenvalues = torch.linalg.eigvals(jacobians(F, s[kept]))
    return [
        FixedPoint(s[i], float(q[i]), eigenvalues[n], "fixed" if q[i] <= fixed_q else "slow")
        for n, i in enumerate(kept)
    ]
