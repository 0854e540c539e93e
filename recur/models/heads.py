"""Heads: what turns the backbone's hidden states [B, T, D] into a task's outputs and loss.

| kind | output | labels | losses |
|---|---|---|---|
| "lm" | [B, T, V] next-token logits | [B, T] ids, -100 ignored | cross_entropy |
| "classify" | [B, C] class scores (pooled) | [B] class ids | cross_entropy, hinge, squared_hinge |
| "regress" | [B, C] (pooled) | [B, C] | mse, gaussian_nll |
| "step_regress" | [B, T, C] per step | [B, T, C], NaN ignored | mse, gaussian_nll |
| "forecast" | [B, H, C]: the next H steps from the last position | [B, H, C] | mse, gaussian_nll |
| "dense" | [B, T, C] per-position class scores | [B, T] ids, -100 ignored | cross_entropy |

Pooling (classify, regress) reads the last position (a causal model has read everything
there), the mean over positions, a learned class token appended after the sequence
("cls"), or, for images, the mean of the four corner patches ("corners", pLSTM's pooling:
each corner ends a scan direction); the model hands the head those four positions. The hinge losses are the multi-class SVM of Crammer and Singer (the GRU-SVM of
Agarap, arXiv:1709.03082, uses the squared one). Gaussian NLL predicts a mean and a
log-variance per output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

HEAD_KINDS = ("lm", "classify", "regress", "step_regress", "forecast", "dense")
POOLINGS = ("last", "mean", "cls", "corners")
LOSSES = {
    "lm": ("cross_entropy",),
    "classify": ("cross_entropy", "hinge", "squared_hinge"),
    "regress": ("mse", "gaussian_nll"),
    "step_regress": ("mse", "gaussian_nll"),
    "forecast": ("mse", "gaussian_nll"),
    "dense": ("cross_entropy",),
}
IGNORE = -100


@dataclass(kw_only=True)
class HeadConfig:
    """The head a task needs (`kind`, `num_outputs`, `horizon` are set by the task) and the
    choices left to the user: pooling and loss ("" = the kind's first loss)."""

    kind: str = "lm"
    # classes, or real-valued outputs per prediction; set by the task
    num_outputs: int = 0
    # forecast: how many steps ahead; set by the task
    horizon: int = 0
    # classify / regress: "last", "mean", "cls" (a learned token appended to the sequence) or
    # "corners" (images: the mean of the four corner patches)
    pooling: str = "last"
    loss: str = ""

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"head.kind must be one of {list(HEAD_KINDS)}; got {self.kind!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"head.pooling must be one of {list(POOLINGS)}; got {self.pooling!r}")
        known = sorted({loss for losses in LOSSES.values() for loss in losses})
        if self.loss and self.loss not in known:
            raise ValueError(f"head.loss must be one of {known} (or '' for the head's default); got {self.loss!r}")
        for name in ("num_outputs", "horizon"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"head.{name} must be a non-negative int; got {value!r}")

    def check_loss(self) -> None:
        """The loss suits the head's kind."""
        allowed = LOSSES[self.kind]
        if self.loss and self.loss not in allowed:
            raise ValueError(f"head.loss for a {self.kind!r} head must be one of {list(allowed)}; got {self.loss!r}")

    @property
    def loss_name(self) -> str:
        return self.loss or LOSSES[self.kind][0]

    @property
    def pooled(self) -> bool:
        return self.kind in ("classify", "regress")


def multiclass_hinge(scores: torch.Tensor, labels: torch.Tensor, margin: float = 1.0, squared: bool = False) -> torch.Tensor:
    """Crammer–Singer multi-class SVM loss: mean over the batch of
    max(0, margin + max_{j≠y} s_j - s_y) (squared for the L2-SVM)."""
    true = scores.gather(1, labels[:, None])
    others = scores.masked_fill(F.one_hot(labels, scores.shape[1]).bool(), float("-inf"))
    violation = (margin + others.max(1, keepdim=True).values - true).clamp_min(0)
    return (violation.square() if squared else violation).mean()


class Head(nn.Module):
    """hidden [B, T, D] -> (outputs, variance or None); `loss(outputs, variance, labels)`."""

    def __init__(self, config: HeadConfig, d_model: int) -> None:
        super().__init__()
        config.check_loss()
        if config.kind != "lm" and config.num_outputs <= 0:
            raise ValueError(f"head.num_outputs must be positive for a {config.kind!r} head; got {config.num_outputs}")
        if config.kind == "forecast" and config.horizon <= 0:
            raise ValueError(f"head.horizon must be positive for a forecast head; got {config.horizon}")
        self.config = config
        per_prediction = config.num_outputs * (2 if config.loss_name == "gaussian_nll" else 1)
        steps = config.horizon if config.kind == "forecast" else 1
        self.projection = nn.Linear(d_model, per_prediction * steps)
        # "cls" pooling: a learned token the model appends after the inputs
        self.cls = nn.Parameter(torch.zeros(d_model)) if config.pooled and config.pooling == "cls" else None

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        config = self.config
        if config.pooled:
            hidden = hidden.mean(1) if config.pooling in ("mean", "corners") else hidden[:, -1]
        elif config.kind == "forecast":
            hidden = hidden[:, -1]
        out = self.projection(hidden)
        if config.kind == "forecast":
            out = out.unflatten(-1, (config.horizon, -1))
        if config.loss_name != "gaussian_nll":
            return out, None
        mean, log_variance = out.chunk(2, dim=-1)
        # variances below e^-10 would let the loss run off to -inf on a fitted point
        return mean, log_variance.clamp(min=-10.0).exp()

    def loss(self, outputs: torch.Tensor, variance: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        config, name = self.config, self.config.loss_name
        # losses are taken in at least float32 whatever the compute dtype
        outputs = outputs if outputs.dtype in (torch.float32, torch.float64) else outputs.float()
        if config.kind in ("lm", "dense"):
            if labels.shape != outputs.shape[:-1]:
                raise ValueError(f"labels has shape {list(labels.shape)}; expected {list(outputs.shape[:-1])}")
            return F.cross_entropy(outputs.flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
        if config.kind == "classify":
            if labels.shape != outputs.shape[:1]:
                raise ValueError(f"labels has shape {list(labels.shape)}; expected [{outputs.shape[0]}] (one class per sequence)")
            if name == "cross_entropy":
                return F.cross_entropy(outputs, labels)
            return multiclass_hinge(outputs, labels, squared=name == "squared_hinge")
        if labels.shape != outputs.shape:
            raise ValueError(f"labels has shape {list(labels.shape)}; expected {list(outputs.shape)}")
        # NaN targets (missing values, padding) are not scored
        scored = ~torch.isnan(labels)
        target = torch.where(scored, labels, torch.zeros_like(labels)).to(outputs.dtype)
        if name == "mse":
            error = (outputs - target).square()
        else:
            error = F.gaussian_nll_loss(outputs, target, variance.to(outputs.dtype), reduction="none", full=True)
        return (error * scored).sum() / scored.sum().clamp_min(1)
