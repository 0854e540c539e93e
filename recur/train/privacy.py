"""Differentially private training: DP-SGD and input perturbation, for any model `recur train` builds.

DP-SGD, Deep Learning with Differential Privacy (Abadi et al.; arXiv:1607.00133). Each step
draws a Poisson sample B of the private training set (every example independently with
probability q = batch_size / dataset_size), and updates with

    g̃ = (Σ_{i ∈ B} g_i · min(1, C / ‖g_i‖) + N(0, σ² C² I)) / (q · dataset_size),

g_i the gradient of example i's loss over all parameters, C = privacy.max_grad_norm, σ =
privacy.noise_multiplier; the optimiser (AdamW, the schedule, train.grad_clip) only
post-processes g̃. `recur.train.accountant` turns (σ, q, steps) into ε at privacy.delta.

Input perturbation, as compared with DP-SGD in Differentially Private Multivariate Time
Series Forecasting of Aggregated Human Mobility With Deep Learning: Input or Gradient
Perturbation? (Arcolezi et al.; arXiv:2205.00436): every input value of the private set
is clipped to [low, high] and released once with Laplace noise of scale (high - low) / ε,
ε-DP for each value; training then reads only the noisy copy.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import nn

from . import accountant as accounting
from .config import PrivacyConfig, RunConfig

# the stream numbers of batch_generator that privacy draws from (the loop uses 0 to 2)
DATASET_STREAM, SAMPLE_STREAM, NOISE_STREAM = 5, 6, 7


class PrivacyError(ValueError):
    """A run whose options DP training cannot honour."""


def private_dataset(config: RunConfig, task, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The fixed private training set: privacy.dataset_size examples of the train split."""
    return task.sample(config.privacy.dataset_size, generator, "train")


def perturb_inputs(inputs: torch.Tensor, config: PrivacyConfig, generator: torch.Generator) -> torch.Tensor:
    """The Laplace mechanism on each value: clip to input_bounds, then add Laplace((high - low) / ε)."""
    if not inputs.is_floating_point():
        raise PrivacyError(f"privacy.method 'input' needs real-valued inputs; this task's are {inputs.dtype}")
    low, high = config.input_bounds
    scale = (high - low) / config.input_epsilon
    # Laplace(b) as the difference of two exponentials of mean b
    uniform = torch.rand((2, *inputs.shape), generator=generator, dtype=torch.float64)
    noise = scale * (torch.log(uniform[0]) - torch.log(uniform[1]))
    return (inputs.double().clamp(low, high) + noise).to(inputs.dtype)


def per_sample_gradients(model: nn.Module, inputs: torch.Tensor, extras: dict[str, torch.Tensor],
                         method: str, loss_of=None) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """({parameter name: [b, *shape]} each example's gradient, [b] each example's loss) of the
    model's loss on every row of `inputs` alone (with the same rows of `extras`, e.g. the
    labels). "vmap": torch.func over the whole model; "loop": one backward per example.
    `loss_of(output) -> scalar` defaults to `output.loss`."""
    loss_of = loss_of or (lambda out: out.loss)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    if method == "vmap":
        from torch.func import functional_call, grad_and_value, vmap

        params = {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}
        buffers = dict(model.named_buffers())

        def example_loss(params, x, extra):
            out = functional_call(model, (params, buffers), (x[None],), {k: v[None] for k, v in extra.items()})
            return loss_of(out)

        with warnings.catch_warnings():
            # torch's fused RNN kernels have no batching rule: vmap loops over the examples there
            warnings.filterwarnings("ignore", message="There is a performance drop")
            grads, losses = vmap(grad_and_value(example_loss), in_dims=(None, 0, 0), randomness="different")(
                params, inputs, extras
            )
        return {name: grads[name] for name in names}, losses.detach()
    if method == "loop":
        params = [p for p in model.parameters() if p.requires_grad]
        rows, losses = [], []
        for i in range(len(inputs)):
            loss = loss_of(model(inputs[i:i + 1], **{k: v[i:i + 1] for k, v in extras.items()}))
            rows.append(torch.autograd.grad(loss, params, allow_unused=True))
            losses.append(loss.detach())
        grads = {
            name: torch.stack([g if g is not None else torch.zeros_like(p) for g in column])
            for name, p, column in zip(names, params, zip(*rows, strict=True), strict=True)
        }
        return grads, torch.stack(losses) if losses else torch.zeros(0)
    raise ValueError(f"method must be 'vmap' or 'loop'; got {method!r}")


def clip_per_sample(grads: dict[str, torch.Tensor], max_norm: float) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(Σ_i g_i · min(1, C / ‖g_i‖) for each parameter, [b] the norms ‖g_i‖ before clipping),
    the norm of example i over all parameters together."""
    norms = torch.stack([g.flatten(1).double().square().sum(1) for g in grads.values()]).sum(0).sqrt()
    factor = (max_norm / (norms + 1e-12)).clamp(max=1.0)
    return {name: torch.einsum("b,b...->...", factor.to(g.dtype), g) for name, g in grads.items()}, norms


class PrivateTraining:
    """What a private run adds to the loop: the private data set, the training step, and
    the accountant's state, saved in checkpoints and reported in result.json."""

    def __init__(self, config: RunConfig, task, context, batch_generator) -> None:
        self.config, self.pc, self.batch_generator = config, config.privacy, batch_generator
        tc, pc = config.train, config.privacy
        if context.world_size > 1:
            raise PrivacyError(f"privacy.method {pc.method!r} runs in one process; this run has {context.world_size}")
        if tc.batch_size > pc.dataset_size:
            raise PrivacyError(
                f"train.batch_size = {tc.batch_size} exceeds privacy.dataset_size = {pc.dataset_size}; "
                "the sampling rate batch_size / dataset_size must be at most 1"
            )
        if pc.method == "dp_sgd" and tc.compile:
            raise PrivacyError("privacy.method 'dp_sgd' computes per-example gradients eagerly; set train.compile false")
        self.data = private_dataset(config, task, batch_generator(tc.seed, -1, stream=DATASET_STREAM))
        self.sample_rate = tc.batch_size / pc.dataset_size
        self.micro_batch = tc.batch_size // tc.grad_accum
        self.method = pc.per_sample
        if pc.method == "input":
            self.data["inputs"] = perturb_inputs(self.data["inputs"], pc, batch_generator(tc.seed, -1, stream=NOISE_STREAM))
            self.noise_multiplier = 0.0
        elif pc.noise_multiplier is not None:
            self.noise_multiplier = pc.noise_multiplier
        else:
            self.noise_multiplier = accounting.noise_for_epsilon(
                pc.target_epsilon, self.sample_rate, tc.steps, pc.delta, pc.accountant
            )
        # the accountant's state: [σ, q, steps] runs of optimiser steps
        self.history: list[list[float]] = []

    def steps(self) -> int:
        return int(sum(steps for _, _, steps in self.history))

    def record(self) -> None:
        """Counts one more DP-SGD step."""
        if self.history and self.history[-1][:2] == [self.noise_multiplier, self.sample_rate]:
            self.history[-1][2] += 1
        else:
            self.history.append([self.noise_multiplier, self.sample_rate, 1])

    def epsilon(self) -> float:
        if self.pc.method == "input":
            return self.pc.input_epsilon
        return accounting.epsilon([tuple(h) for h in self.history], self.pc.delta, self.pc.accountant)

    def log(self) -> dict[str, float]:
        """The figure a logged training step carries."""
        return {"epsilon": self.epsilon()} if self.pc.method == "dp_sgd" else {}

    def report(self) -> dict[str, Any]:
        """What result.json says of the run's privacy."""
        pc = self.pc
        if pc.method == "input":
            values = self.data["inputs"][0].numel()
            low, high = pc.input_bounds
            return {
                "method": "input", "mechanism": "laplace", "dataset_size": pc.dataset_size,
                "sensitivity": high - low, "epsilon_per_value": pc.input_epsilon,
                # every value of an example is released, so ε composes over them
                "values_per_example": values, "epsilon_per_example": pc.input_epsilon * values,
            }
        return {
            "method": "dp_sgd", "accountant": pc.accountant, "epsilon": self.epsilon(), "delta": pc.delta,
            "noise_multiplier": self.noise_multiplier, "sample_rate": self.sample_rate,
            "max_grad_norm": pc.max_grad_norm, "dataset_size": pc.dataset_size, "steps": self.steps(),
            "sampling": "poisson", "per_sample": self.method,
        }

    def state(self) -> dict[str, Any]:
        """The accountant's state, as a checkpoint keeps it."""
        return {"noise_multiplier": self.noise_multiplier, "history": [list(h) for h in self.history]}

    def load_state(self, state: dict[str, Any] | None, steps: int, where: str) -> None:
        """The accountant as the checkpoint of step `steps` left it; σ stays the one the run
        started with, even when a resume adds steps (ε then grows past any target)."""
        if self.pc.method == "input":
            return
        if not isinstance(state, dict) or not isinstance(state.get("history"), list):
            raise PrivacyError(f"{where} holds no privacy accountant state; it was not saved by a private run")
        history = [list(map(float, h[:2])) + [int(h[2])] for h in state["history"]]
        if sum(h[2] for h in history) != steps:
            raise PrivacyError(f"{where}: the accountant counts {sum(h[2] for h in history)} steps, the checkpoint {steps}")
        self.history, self.noise_multiplier = history, float(state["noise_multiplier"])

    def step(self, run, step: int, plain_step):
        """One optimiser step on the private data: (loss, learning rate). Input perturbation
        runs the ordinary step (`plain_step(run, step, batch)`) on a uniform batch of the
        noisy set; DP-SGD runs `dp_sgd_step`."""
        tc = self.config.train
        generator = self.batch_generator(tc.seed, step, stream=SAMPLE_STREAM)
        if self.pc.method == "input":
            rows = torch.randint(0, self.pc.dataset_size, (tc.batch_size,), generator=generator)
            return plain_step(run, step, {k: v[rows] for k, v in self.data.items()})
        # Poisson sampling: each example independently, so the batch size varies
        rows = torch.nonzero(torch.rand(self.pc.dataset_size, generator=generator) < self.sample_rate)[:, 0]
        batch = {k: v[rows] for k, v in self.data.items()}
        noise = self.batch_generator(tc.seed, step, stream=NOISE_STREAM)
        loss = self.dp_sgd_step(run, step, batch, noise)
        self.record()
        return loss

    def dp_sgd_step(self, run, step: int, batch: dict[str, torch.Tensor], noise: torch.Generator):
        """Clipped per-example gradients of `batch`, summed, noised and averaged over the
        expected batch size, then the optimiser's step: (mean loss of the batch, lr)."""
        from .loop import auxiliary_loss
        from .optim import set_lr

        tc, pc = self.config.train, self.pc
        model = run.model
        lr = set_lr(run.optimizer, step, tc)
        params = {name: p for name, p in model.named_parameters() if p.requires_grad}
        summed = {name: torch.zeros_like(p) for name, p in params.items()}
        losses = []

        def loss_of(out):
            return out.loss + auxiliary_loss(model)

        for start in range(0, len(batch["inputs"]), self.micro_batch):
            rows = slice(start, start + self.micro_batch)
            inputs = batch["inputs"][rows].to(run.device)
            extras = {k: v[rows].to(run.device) for k, v in batch.items() if k != "inputs"}
            with run.autocast():
                grads, loss = self._per_sample(model, inputs, extras, loss_of)
            clipped, _ = clip_per_sample(grads, pc.max_grad_norm)
            for name in summed:
                summed[name] += clipped[name].to(summed[name].dtype)
            losses.append(loss.float())
        expected = self.sample_rate * pc.dataset_size
        std = self.noise_multiplier * pc.max_grad_norm
        for name, p in params.items():
            # the noise comes from the step's own generator, on the CPU, so a resumed run draws the same
            gaussian = torch.randn(p.shape, generator=noise, dtype=torch.float64).to(p.device, p.dtype)
            p.grad = (summed[name] + std * gaussian) / expected
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        sampled = sum(len(x) for x in losses)
        # a Poisson batch may be empty: the step then applies noise alone and has no loss
        loss_value = float(torch.cat(losses).mean()) if sampled else math.nan
        if sampled and not math.isfinite(loss_value):
            raise FloatingPointError(f"training loss became {loss_value} at step {step + 1}; lower train.lr or check the data")
        return loss_value, lr

    def _per_sample(self, model, inputs, extras, loss_of):
        """Per-example gradients by privacy.per_sample; "auto" settles on vmap or loop at
        its first use (vmap fails on ops with data-dependent checks)."""
        if self.method != "auto":
            return per_sample_gradients(model, inputs, extras, self.method, loss_of)
        try:
            result = per_sample_gradients(model, inputs, extras, "vmap", loss_of)
        except (RuntimeError, NotImplementedError) as error:
            warnings.warn(f"privacy.per_sample 'auto': vmap cannot run this model ({str(error).splitlines()[0][:120]}); "
                          "computing per-example gradients one example at a time", stacklevel=2)
            self.method = "loop"
            return per_sample_gradients(model, inputs, extras, "loop", loss_of)
        self.method = "vmap"
        return result
