"""Dynamical-systems reconstruction: learn a chaotic system's map from one long trajectory.

The system (`recur.dynamics.systems`: Lorenz-63, Rössler, Lorenz-96, Kuramoto–Sivashinsky)
is integrated in float64 from a seeded start, standardised with the training block's mean
and std, optionally observed with Gaussian noise, and split in time: the first
`train_length` samples train, the next `val_length` validate, the last `test_length` test.
A training example is a window of `seq_len` samples (plus Gaussian noise of std
`batch_noise` per batch, as the AL-RNN code adds); an evaluation example is a window of
`eval_length` samples of its block.

The task brings its own model (`build_model`): a `recur.dynamics.DSRModel` over the run's
backbone, trained by the task's loss, which drives it with sparse or generalised teacher
forcing (`forcing_interval` τ, `alpha`, `observation`); so the trainer's loop, run folders
and protocol (validation for choices, test once) are the ones every task uses. In
evaluation the model generates freely from each window's first state, and the scores are
the field's: D_stsp (state-space KL, the validation metric, lower is better) and D_H
(power-spectrum Hellinger distance) on the generated states after `transient` steps,
against the whole true window; and from the model itself, λ_max (per unit of time), the
prediction error PE_n at n = `prediction_steps` from many forced starts, and the valid
prediction time (in Lyapunov times of the true system).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch

from .base import Batch, Task, TaskConfig, register_task

# the true system's λ_max (per unit of time) that valid prediction times are counted in;
# Lorenz-63 and Rössler from the QR method at the standard parameters (0.906, 0.0714)
REFERENCE_LAMBDA = {"lorenz63": 0.906, "rossler": 0.0714}


@dataclass(kw_only=True)
class DynamicsConfig(TaskConfig):
    # lorenz63, rossler, lorenz96 or ks; dim sizes the last two (0 = 20 and 64)
    system: str = "lorenz63"
    dim: int = 0
    train_length: int = 20000
    val_length: int = 6000
    test_length: int = 6000
    # samples per training window
    seq_len: int = 200
    # std of Gaussian noise on every observation (units of the standardised data)
    observation_noise: float = 0.0
    # std of Gaussian noise added to each training batch
    batch_noise: float = 0.05
    data_seed: int = 0
    # teacher forcing: every τ steps, the forced part α x + (1 − α) x̂; observation model
    forcing_interval: int = 16
    alpha: float = 1.0
    observation: str = "identity"
    # evaluation windows per split, their length, and the generated steps D_stsp and D_H skip
    eval_examples: int = 2
    eval_length: int = 3000
    transient: int = 500
    # PE_n horizon, the valid prediction time's longest horizon, their forced starts per
    # window, and the Jacobian products for λ_max
    prediction_steps: int = 20
    vpt_horizon: int = 1000
    prediction_starts: int = 50
    lyapunov_steps: int = 500

    def __post_init__(self) -> None:
        super().__post_init__()
        from ..dynamics.model import Forcing
        from ..dynamics.systems import SYSTEMS

        if self.system not in SYSTEMS:
            raise ValueError(f"task.system must be one of {list(SYSTEMS)}; got {self.system!r}")
        for name in ("train_length", "val_length", "test_length", "seq_len", "eval_length", "prediction_steps",
                     "vpt_horizon", "prediction_starts", "lyapunov_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"task.{name} must be an int >= 2; got {value!r}")
        if self.seq_len > self.train_length:
            raise ValueError(f"task.seq_len = {self.seq_len} exceeds task.train_length = {self.train_length}")
        if self.eval_length > min(self.val_length, self.test_length):
            raise ValueError(f"task.eval_length = {self.eval_length} exceeds the val or test block "
                             f"({self.val_length}, {self.test_length})")
        if not 0 <= self.transient < self.eval_length - 1:
            raise ValueError(f"task.transient must be in [0, eval_length - 1); got {self.transient}")
        if max(self.prediction_steps, self.vpt_horizon) >= self.eval_length:
            raise ValueError(f"task.prediction_steps and task.vpt_horizon must be below task.eval_length "
                             f"{self.eval_length}; got {self.prediction_steps}, {self.vpt_horizon}")
        for name in ("observation_noise", "batch_noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"task.{name} must be >= 0; got {getattr(self, name)}")
        Forcing(interval=self.forcing_interval, alpha=self.alpha, observation=self.observation)


@register_task("dynamics")
class Dynamics(Task):
    """Dynamical-systems reconstruction of a chaotic system (D_stsp, D_H, λ_max of free runs)."""

    Config = DynamicsConfig
    input = "vectors"
    head = "step_regress"
    metric = "val/d_stsp"
    higher_is_better = False

    def __init__(self, config: DynamicsConfig) -> None:
        super().__init__(config)
        from ..dynamics.systems import build_system

        self.system = build_system(config.system, config.dim)
        self.features = self.num_outputs = self.system.dim

    @cached_property
    def blocks(self) -> dict[str, torch.Tensor]:
        """The standardised (and noisy) trajectory, float32, split in time."""
        from ..dynamics.systems import trajectory

        c = self.config
        x = trajectory(c.system, c.train_length + c.val_length + c.test_length, dim=c.dim, seed=c.data_seed)
        train = x[: c.train_length]
        x = (x - train.mean(0)) / train.std(0)
        if c.observation_noise:
            noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(c.data_seed + 1), dtype=x.dtype)
            x = x + c.observation_noise * noise
        x = x.float()
        val_end = c.train_length + c.val_length
        return {"train": x[: c.train_length], "val": x[c.train_length: val_end], "test": x[val_end:]}

    def sample(self, n: int, generator: torch.Generator, split: str = "train") -> Batch:
        """Training: n windows of seq_len at random starts, with batch noise. Val and test: n
        windows of eval_length spread evenly over the block (the same whatever the generator)."""
        c = self.config
        block = self.blocks[split]
        if split == "train":
            starts = torch.randint(0, len(block) - c.seq_len + 1, (n,), generator=generator)
            x = torch.stack([block[s: s + c.seq_len] for s in starts.tolist()])
            if c.batch_noise:
                x = x + c.batch_noise * torch.randn(x.shape, generator=generator)
        else:
            starts = torch.linspace(0, len(block) - c.eval_length, n).round().long()
            x = torch.stack([block[s: s + c.eval_length] for s in starts.tolist()])
        return {"inputs": x, "labels": x.clone()}

    def build_model(self, config):
        """A DSRModel over the run's backbone (`recur.dynamics.model`)."""
        from ..dynamics.model import DSRModel, Forcing

        c = self.config
        forcing = Forcing(interval=c.forcing_interval, alpha=c.alpha, observation=c.observation)
        return DSRModel(config.model, self.system.dim, forcing)

    def metrics(self, generated: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """D_stsp and D_H of the free runs [B, T, N] (from each window's first state) after the
        transient, against the true windows."""
        from ..dynamics.metrics import power_spectrum_distance, state_space_divergence

        skip = self.config.transient
        return {
            "d_stsp": state_space_divergence(labels, generated[:, skip:]),
            "d_h": power_spectrum_distance(labels[:, skip:], generated[:, skip:]),
        }

    def model_metrics(self, model, data: Batch) -> dict[str, float]:
        """What needs the model itself: λ_max of its map (per unit of time), PE_n from forced
        starts along the true windows, and the valid prediction time from them in Lyapunov
        times of the true system (in steps when the system has no reference value)."""
        from ..dynamics.metrics import prediction_error, valid_prediction_time
        from ..dynamics.model import largest_lyapunov_exponent

        c = self.config
        x = data["inputs"].to(next(model.parameters()).device)
        n, horizon = c.prediction_steps, max(c.prediction_steps, c.vpt_horizon)
        starts = torch.linspace(0, x.shape[1] - horizon - 1, c.prediction_starts).round().long()
        # [B · starts, horizon + 1, N] true continuations of each start
        windows = torch.stack([x[:, s: s + horizon + 1] for s in starts.tolist()], dim=1).flatten(0, 1)
        with torch.no_grad():
            predicted = model.generate(windows[:, 0], horizon + 1)
        error = prediction_error(predicted[:, 1: n + 1], windows[:, 1: n + 1])
        steps = valid_prediction_time(predicted, windows, threshold=0.5)
        lam = largest_lyapunov_exponent(model, x[:, 0], steps=c.lyapunov_steps, transient=c.transient, dt=self.system.dt)
        reference = REFERENCE_LAMBDA.get(c.system)
        vpt = float(steps.mean()) * self.system.dt * reference if reference else float(steps.mean())
        return {"lambda_max": float(lam.mean()), f"pe_{n}": float(error[-1]), "vpt": vpt}

    def tokens_per_example(self) -> int:
        return self.config.seq_len
