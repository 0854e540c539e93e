"""Any input, any head: an input adapter, the one `Backbone`, a head.

`SequenceModel(backbone, input, head)` covers every task that is not next-token language
modelling over ids (that is `LM`, which adds tied embeddings and generation): sequence
classification and regression, per-step regression, forecasting, dense outputs, over
token ids, real-valued vectors, images or point sets (a sequence of points, or LION's
groups of voxels: `input.point_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import State
from .heads import Head, HeadConfig
from .inputs import InputConfig, build_input
from .lion import LION, VoxelInput
from .lm import Backbone, LMConfig


@dataclass
class ModelOutput:
    # the head's outputs (class scores, predictions or means); see recur.models.heads
    logits: torch.Tensor
    loss: torch.Tensor | None
    state: list[State]
    # Gaussian heads: the predicted variance, else None
    variance: torch.Tensor | None = None


class SequenceModel(nn.Module):
    def __init__(self, config: LMConfig, input: InputConfig, head: HeadConfig) -> None:
        super().__init__()
        if head.kind == "lm" and input.kind != "tokens":
            raise ValueError(f"a language-model head needs token inputs; got input.kind {input.kind!r}")
        self.config, self.input_config, self.head_config = config, input, head
        if input.kind == "points" and input.point_model == "lion":
            if head.pooling == "cls":
                raise ValueError("LION pools the mean of its voxels: head.pooling must be 'last' or 'mean', not 'cls'")
            # voxels grouped per layer, the model's mixers run per group (recur.models.lion)
            self.input, self.backbone = VoxelInput(input, config.d_model), LION(config, input)
        else:
            self.input = build_input(input, config.d_model, config.vocab_size)
            self.backbone = Backbone(config)
        self.head = Head(head, config.d_model)

    def forward(self, inputs: torch.Tensor, state: list[State] | None = None, labels: torch.Tensor | None = None) -> ModelOutput:
        """inputs (ids [B, T], vectors [B, T, C], images [B, C, H, W] or points [B, N, C]) ->
        the head's outputs; with labels, also the loss."""
        x = self.input(inputs)
        if self.head.cls is not None:
            x = torch.cat([x, self.head.cls.to(x.dtype).expand(x.shape[0], 1, -1)], dim=1)
        hidden, state = self.backbone(x, state)
        outputs, variance = self.head(hidden)
        loss = None if labels is None else self.head.loss(outputs, variance, labels)
        return ModelOutput(outputs, loss, state, variance)

    def step(self, x: torch.Tensor, state: list[State] | None) -> tuple[torch.Tensor, list[State]]:
        """One time step of a per-step head: x [B] (an id) or [B, C] -> (output [B, ...], state)."""
        if self.head_config.kind not in ("lm", "step_regress", "dense"):
            raise ValueError(f"step runs per-step heads (lm, step_regress, dense); this model has a {self.head_config.kind!r} head")
        if not hasattr(self.input, "step"):
            raise ValueError(f"step needs one token per time step; {self.input_config.kind!r} inputs are not")
        hidden, state = self.backbone.step(self.input.step(x), state)
        outputs, _ = self.head(hidden.unsqueeze(1))
        return outputs.squeeze(1), state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def state_size(self) -> int:
        """Bytes of recurrent state per sequence (growing caches count per token)."""
        return sum(block.mixer.state_size() for block in self.backbone.blocks)

