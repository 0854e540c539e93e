"""A recurrent model trained as a dynamical system: teacher forcing and free generation.

Dynamical-systems reconstruction (DSR) trains a map z_t = F(z_{t-1}) whose free-running
trajectories reproduce the system's attractor. Training rolls the model out and pulls it
back to the data (sparse teacher forcing, Mikhaeil, Monfared, Durstewitz, "On the
difficulty of learning chaotic dynamics with RNNs", NeurIPS 2022; generalised teacher
forcing, Hess et al., ICML 2023, arXiv:2306.04406):

    z_1 = force(L x_1)
    z_t = F(z_{t-1});  x̂_t = G(z_t);  z_t ← force(z_t, x_t) when (t − 1) mod τ = 0
    force(z, x): the latent's observed part ← α x + (1 − α) G(z)       (α = 1: sparse TF)
    loss = mean_t≥2 ‖x̂_t − x_t‖²   (x̂_t is read before the forcing)

Two kinds of F:
- "latent": one layer whose state is the latent map's z (a mixer with `latent_map`: the
  AL-RNN, Brenner et al., NeurIPS 2024, arXiv:2410.14240, z_t = A ⊙ z_{t-1} +
  W φ*(z_{t-1}) + h; the PLRNN, its dendritic and its shallow variant, `recur.layers.plrnn`,
  `dendplrnn`, `shplrnn`) of M = d_model units, run without input. The observation model G
  is the identity on the first N units (the papers') or a linear map
  C z; forcing overwrites the first N units, or moves z by C⁺ α (x − C z) (the smallest
  change that gives C z the forced value). Between forcings the layer runs its op on
  whole τ-step segments.
- "feedback" (any registered mixer with a step): the backbone reads its own last
  prediction, x̂_{t+1} = u_t + readout(backbone.step(encode(u_t))), u_t = x̂_t, and forcing
  sets u_t ← α x_t + (1 − α) x̂_t. With τ = 1 this is ordinary one-step prediction.

`training` mode runs the forced rollout; `eval` mode generates freely from x_1 (what a
reconstruction is judged by), so the trainer's evaluation scores free trajectories.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..layers import MIXERS, build_mixer
from ..models.lm import Backbone, LMConfig
from ..models.sequence import ModelOutput

OBSERVATIONS = ("identity", "linear")


@dataclass(kw_only=True)
class Forcing:
    # τ: force every τ steps (1 = one-step prediction)
    interval: int = 16
    # α of generalised teacher forcing (1 = sparse teacher forcing)
    alpha: float = 1.0
    # G: "identity" (the first N latent units; latent models only) or "linear"
    observation: str = "identity"

    def __post_init__(self) -> None:
        if not isinstance(self.interval, int) or self.interval < 1:
            raise ValueError(f"forcing interval τ must be an int >= 1; got {self.interval!r}")
        if not 0 <= self.alpha <= 1:
            raise ValueError(f"forcing alpha must be in [0, 1]; got {self.alpha!r}")
        if self.observation not in OBSERVATIONS:
            raise ValueError(f"observation must be one of {list(OBSERVATIONS)}; got {self.observation!r}")


def is_latent(config: LMConfig) -> bool:
    """Whether the backbone is one layer of a latent map (AL-RNN, a PLRNN), trained as such."""
    mixers = config.layer_mixers()
    return len(mixers) == 1 and getattr(MIXERS.get(mixers[0]), "latent_map", False)


class DSRModel(nn.Module):
    """x [B, T, N] -> x̂ [B, T, N]: the forced rollout in training mode, the free one from
    x_1 in eval mode. `generate(x1, steps)` runs it freely; `transition` / `flat_state` /
    `unflatten` expose the map for Lyapunov exponents."""

    def __init__(self, config: LMConfig, observations: int, forcing: Forcing) -> None:
        super().__init__()
        if not isinstance(observations, int) or observations < 1:
            raise ValueError(f"observations must be a positive int; got {observations!r}")
        self.config, self.forcing, self.N = config, forcing, observations
        self.latent = is_latent(config)
        M = config.d_model
        if self.latent:
            if forcing.observation == "identity" and M < observations:
                raise ValueError(f"an identity observation model reads N = {observations} of the d_model latent units; "
                                 f"d_model must be at least N, got {M}")
            name, options = config.layer_options()[0]
            options = dict(options)
            if options.get("num_heads", 1) != 1:
                raise ValueError(f"the {name} latent map is dense: num_heads must be 1; got {options['num_heads']}")
            self.layer = build_mixer(name, M, **options)
            # the map runs without input: B x_t is zero, so in_proj is no parameter of it
            self.layer.directions[0].in_proj.weight.requires_grad_(False)
            # z_1 = L x_1 before forcing; the tutorial's U(±1/√N)
            self.lift = nn.Linear(observations, M, bias=False)
            nn.init.uniform_(self.lift.weight, -1 / math.sqrt(observations), 1 / math.sqrt(observations))
            self.readout = nn.Linear(M, observations, bias=False) if forcing.observation == "linear" else None
        else:
            if forcing.observation != "linear":
                raise ValueError(f"a {'+'.join(config.layer_mixers())} backbone reads its observations back as inputs "
                                 f"and needs observation 'linear'; got {forcing.observation!r}")
            self.encoder = nn.Linear(observations, M)
            self.backbone = Backbone(config)
            self.readout = nn.Linear(M, observations)
            # the rollout starts at "no change": x̂_{t+1} = u_t
            nn.init.zeros_(self.readout.weight)
            nn.init.zeros_(self.readout.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def state_size(self) -> int:
        if self.latent:
            return self.layer.state_size()
        return sum(block.mixer.state_size() for block in self.backbone.blocks)

    def forward(self, inputs: torch.Tensor, state=None, labels: torch.Tensor | None = None) -> ModelOutput:
        if inputs.dim() != 3 or inputs.shape[-1] != self.N or not inputs.is_floating_point():
            raise ValueError(f"inputs must be observations [B, T, {self.N}] (floating point); got {list(inputs.shape)} {inputs.dtype}")
        x = inputs.to(self.dtype)
        predicted = self.rollout(x) if self.training else self.generate(x[:, 0], x.shape[1])
        loss = None
        if labels is not None:
            loss = (predicted[:, 1:] - labels[:, 1:].to(predicted.dtype)).square().mean()
        return ModelOutput(predicted, loss, [])

    @property
    def dtype(self) -> torch.dtype:
        return self.lift.weight.dtype if self.latent else self.encoder.weight.dtype

    def rollout(self, x: torch.Tensor) -> torch.Tensor:
        """The forced rollout over x [B, T, N]: x̂ [B, T, N], x̂_1 the forced start."""
        tau, T = self.forcing.interval, x.shape[1]
        state = self.start(x[:, 0])
        outputs = [self.observe(state)[:, None]]
        for s in range(0, T - 1, tau):
            n = min(tau, T - 1 - s)
            # n free steps from the state forced at s: observations of steps s+1 .. s+n
            observed, state = self.run(state, n)
            outputs.append(observed)
            if s + tau < T:
                state = self.force(state, x[:, s + tau], self.forcing.alpha)
        return torch.cat(outputs, dim=1)

    def generate(self, x1: torch.Tensor, steps: int) -> torch.Tensor:
        """Free generation from the observation x1 [B, N]: [B, steps, N], x̂_1 = G(force(x1))."""
        state = self.start(x1.to(self.dtype))
        first = self.observe(state)[:, None]
        if steps <= 1:
            return first[:, :steps]
        observed, _ = self.run(state, steps - 1)
        return torch.cat([first, observed], dim=1)

    def start(self, x1: torch.Tensor):
        """The state forced to the first observation (α = 1)."""
        if self.latent:
            return self.force(self.lift(x1), x1, 1.0)
        return (None, x1)

    def observe(self, state) -> torch.Tensor:
        """G: state -> [B, N]."""
        if self.latent:
            return state[:, : self.N] if self.readout is None else self.readout(state)
        return state[1]

    def force(self, state, x: torch.Tensor, alpha: float):
        """The state with its observed part moved to α x + (1 − α) G(state)."""
        if self.latent:
            z = state
            if self.readout is None:
                observed = alpha * x + (1 - alpha) * z[:, : self.N]
                return torch.cat([observed, z[:, self.N:]], dim=1)
            C = self.readout.weight
            return z + alpha * (x - z @ C.T) @ torch.linalg.pinv(C).T
        mixer_state, u = state
        return mixer_state, alpha * x + (1 - alpha) * u

    def run(self, state, steps: int):
        """`steps` free steps: (observations [B, steps, N], the last state)."""
        if self.latent:
            z = state
            zeros = z.new_zeros(z.shape[0], steps, z.shape[1])
            # the op runs the whole segment; its outputs are z_{t+1} .. z_{t+steps}
            latents, _ = self.layer(zeros, {"z": z[:, None]})
            last = latents[:, -1]
            observed = latents[..., : self.N] if self.readout is None else self.readout(latents)
            return observed, last
        outputs = []
        for _ in range(steps):
            state = self.transition(state)
            outputs.append(state[1])
        return torch.stack(outputs, dim=1), state

    def transition(self, state):
        """One free step of the map F."""
        if self.latent:
            return self.run(state, 1)[1]
        mixer_state, u = state
        hidden, mixer_state = self.backbone.step(self.encoder(u), mixer_state)
        return mixer_state, u + self.readout(hidden)

    def flat_state(self, state) -> tuple[torch.Tensor, list[tuple[int, str, torch.Size]]]:
        """The state as one tensor [B, S], and the layout that `unflatten` reads back."""
        if self.latent:
            return state, []
        mixer_state, u = state
        layout, parts = [], []
        for i, layer_state in enumerate(mixer_state or []):
            for name in sorted(layer_state):
                tensor = layer_state[name]
                layout.append((i, name, tensor.shape[1:]))
                parts.append(tensor.reshape(tensor.shape[0], -1).to(u.dtype))
        return torch.cat([*parts, u], dim=1), layout

    def unflatten(self, flat: torch.Tensor, layout: list[tuple[int, str, torch.Size]]):
        if self.latent:
            return flat
        B, states, at = flat.shape[0], [], 0
        for i, name, shape in layout:
            while len(states) <= i:
                states.append({})
            size = math.prod(shape)
            states[i][name] = flat[:, at: at + size].reshape(B, *shape)
            at += size
        return (states or None), flat[:, at:]


def largest_lyapunov_exponent(
    model: DSRModel, x1: torch.Tensor, *, steps: int = 1000, transient: int = 500, align: int = 100, dt: float = 1.0,
) -> torch.Tensor:
    """λ_max of the trained map, per unit of time (a step is `dt`): the QR method
    (`lyapunov_spectrum`) along the free trajectory from each x1 [B, N] after `transient`
    steps, with the Jacobians of `model.transition` by autograd; the first `align` of the
    `steps` Jacobian products turn the tangent vector into the fastest direction and do not
    count. [B], one per start."""
    from .systems import lyapunov_spectrum

    with torch.no_grad():
        state = model.start(x1.to(model.dtype))
        state = model.run(state, transient)[1] if transient else state
    flat, layout = model.flat_state(state)

    def step(s: torch.Tensor) -> torch.Tensor:
        return model.flat_state(model.transition(model.unflatten(s, layout)))[0]

    align = min(align, steps - 1)
    return lyapunov_spectrum(step, flat.detach(), steps - align, exponents=1, dt=dt, transient=align, renormalize_every=5)[:, 0]
