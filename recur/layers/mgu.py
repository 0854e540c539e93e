"""MGU: the minimal gated unit, one gate for forgetting and writing.

Minimal Gated Unit for Recurrent Neural Networks (Zhou, Wu, Zhang, Zhou; arXiv:1603.09420):

    f_t = σ(W_f x_t + R_f h_{t-1} + b_f),   h̃_t = tanh(W_h x_t + R_h (f_t ⊙ h_{t-1}) + b_h),
    h_t = (1 − f_t) h_{t-1} + f_t h̃_t
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ops.rnn import MGU as MGUCell
from .registry import register_mixer
from .rnn_common import RNNConfig, RNNLayer


@dataclass(kw_only=True)
class MGUConfig(RNNConfig):
    """MGU takes the options every RNN layer has (RNNConfig), and no others."""


@register_mixer("mgu")
class MGU(RNNLayer):
    Config = MGUConfig
    cell_type = MGUCell
