"""AdamW parameter groups and the warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..layers import Mixer
from .config import TrainConfig

# the group names a mixer may return from `param_groups()` (see Mixer.param_groups)
GROUP_NAMES = ("no_decay", "ssm")


def parameter_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """AdamW groups: decay on matrices, none on biases, norms and vectors, none on
    parameters a mixer lists under "no_decay"; "ssm" parameters get no decay and
    lr × ssm_lr_scale (the SSM papers train A, Δ and B/C with a smaller rate)."""
    named: dict[int, str] = {}
    for module in model.modules():
        if isinstance(module, Mixer):
            for group, params in module.param_groups().items():
                if group not in GROUP_NAMES:
                    raise ValueError(
                        f"mixer {module.name!r} returns parameter group {group!r}; the trainer knows {list(GROUP_NAMES)}"
                    )
                for p in params:
                    named[id(p)] = group
    buckets: dict[tuple[float, float], list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        group = named.get(id(p))
        decay = config.weight_decay if (group is None and p.dim() >= 2) else 0.0
        scale = config.ssm_lr_scale if group == "ssm" else 1.0
        buckets.setdefault((decay, scale), []).append(p)
    return [
        {"params": params, "weight_decay": decay, "lr_scale": scale, "lr": config.lr * scale}
        for (decay, scale), params in sorted(buckets.items())
    ]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "radam":
        return torch.optim.RAdam(
            parameter_groups(model, config), lr=config.lr, betas=(config.beta1, config.beta2),
            weight_decay=config.weight_decay, decoupled_weight_decay=True,
        )
    return torch.optim.AdamW(
        parameter_groups(model, config), lr=config.lr, betas=(config.beta1, config.beta2),
        weight_decay=config.weight_decay,
    )


def lr_factor(step: int, config: TrainConfig) -> float:
    """Multiplier of the base rate at optimiser step `step` (0-based): linear warmup to 1
    over warmup_steps, then a cosine (or, with schedule "exponential", a geometric decay)
    down to min_lr_ratio at the last step."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    decay_steps = max(1, config.steps - config.warmup_steps - 1)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    if config.schedule == "exponential":
        return config.min_lr_ratio**progress
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, step: int, config: TrainConfig) -> float:
    factor = lr_factor(step, config)
    for group in optimizer.param_groups:
        group["lr"] = config.lr * group["lr_scale"] * factor
    return config.lr * factor
