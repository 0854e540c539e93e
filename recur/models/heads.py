"""Heads over the generic backbone: sequence classification and regression.

`SequenceClassifier` and `SequenceRegressor` embed token ids, run the same `Backbone` as
`LM` (any mixer or pattern) and pool the hidden states into one vector per sequence:
the last position (causal models have read everything there) or the mean. The
classifier trains with softmax cross-entropy or the multi-class hinge loss of
Crammer and Singer (the GRU-SVM of Agarap, arXiv:1709.03082, uses an L2-SVM); the
regressor with mean squared error.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import State
from .lm import Backbone, LMConfig

POOLINGS = ("last", "mean")
CLASSIFY_LOSSES = ("cross_entropy", "hinge", "squared_hinge")


@dataclass
class HeadOutput:
    # [B, num_outputs]: class scores or regression predictions
    logits: torch.Tensor
    loss: torch.Tensor | None
    state: list[State]


def multiclass_hinge(scores: torch.Tensor, labels: torch.Tensor, margin: float = 1.0, squared: bool = False) -> torch.Tensor:
    """Crammer–Singer multi-class SVM loss: mean over the batch of
    max(0, margin + max_{j≠y} s_j - s_y) (squared for the L2-SVM)."""
    true = scores.gather(1, labels[:, None])
    others = scores.masked_fill(F.one_hot(labels, scores.shape[1]).bool(), float("-inf"))
    violation = (margin + others.max(1, keepdim=True).values - true).clamp_min(0)
    return (violation.square() if squared else violation).mean()


class _PooledModel(nn.Module):
    def __init__(self, config: LMConfig, num_outputs: int, pooling: str) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}; got {pooling!r}")
        if not isinstance(num_outputs, int) or num_outputs <= 0:
            raise ValueError(f"num_outputs must be a positive int; got {num_outputs!r}")
        self.config, self.pooling, self.num_outputs = config, pooling, num_outputs
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.backbone = Backbone(config)
        self.head = nn.Linear(config.d_model, num_outputs)
        nn.init.normal_(self.embedding.weight, std=0.02)

    def pooled(self, ids: torch.Tensor, state: list[State] | None) -> tuple[torch.Tensor, list[State]]:
        if ids.dim() != 2:
            raise ValueError(f"ids must have shape [B, T]; got {list(ids.shape)}")
        hidden, state = self.backbone(self.embedding(ids), state)
        pooled = hidden[:, -1] if self.pooling == "last" else hidden.mean(1)
        return self.head(pooled), state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def state_size(self) -> int:
        return sum(block.mixer.state_size() for block in self.backbone.blocks)


class SequenceClassifier(_PooledModel):
    """ids [B, T] -> class scores [B, num_classes]; with labels [B], also the loss."""

    def __init__(self, config: LMConfig, num_classes: int, pooling: str = "last", loss: str = "cross_entropy") -> None:
        super().__init__(config, num_classes, pooling)
        if loss not in CLASSIFY_LOSSES:
            raise ValueError(f"classification loss must be one of {list(CLASSIFY_LOSSES)}; got {loss!r}")
        self.loss = loss

    def forward(self, ids: torch.Tensor, state: list[State] | None = None, labels: torch.Tensor | None = None) -> HeadOutput:
        scores, state = self.pooled(ids, state)
        loss = None
        if labels is not None:
            if labels.shape != ids.shape[:1]:
                raise ValueError(f"labels has shape {list(labels.shape)}; expected [{ids.shape[0]}] (one class per sequence)")
            if self.loss == "cross_entropy":
                loss = F.cross_entropy(scores.float(), labels)
            else:
                loss = multiclass_hinge(scores.float(), labels, squared=self.loss == "squared_hinge")
        return HeadOutput(scores, loss, state)


class SequenceRegressor(_PooledModel):
    """ids [B, T] -> predictions [B, num_outputs]; with float targets [B, num_outputs], the MSE."""

    def forward(self, ids: torch.Tensor, state: list[State] | None = None, labels: torch.Tensor | None = None) -> HeadOutput:
        predictions, state = self.pooled(ids, state)
        loss = None
        if labels is not None:
            if labels.shape != predictions.shape:
                raise ValueError(f"labels has shape {list(labels.shape)}; expected {list(predictions.shape)}")
            loss = F.mse_loss(predictions.float(), labels.float())
        return HeadOutput(predictions, loss, state)
