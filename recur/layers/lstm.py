"""LSTM: long short-term memory with torch.nn.LSTM's equations and weight layout.

Long Short-Term Memory (Hochreiter, Schmidhuber; Neural Computation 1997); the forget
gate of Gers et al. (2000); head-wise block-diagonal recurrence as in FlashRNN
(arXiv:2412.07752):

    c_t = σ(f_t) c_{t-1} + σ(i_t) tanh(g_t),   h_t = σ(o_t) tanh(c_t),
    [i, f, g, o]_t = W x_t + R h_{t-1} + b
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ops.rnn import LSTM as LSTMCell
from .registry import register_mixer
from .rnn_common import RNNConfig, RNNLayer


@dataclass(kw_only=True)
class LSTMConfig(RNNConfig):
    """LSTM takes the options every RNN layer has (RNNConfig), and no others."""


@register_mixer("lstm")
class LSTM(RNNLayer):
    """`load_torch(nn.LSTM(d_model, d_model, batch_first=True))` copies a torch LSTM
    (hidden d_model / 2 when bidirectional); the outputs are then identical. With one head
    and float32 / float64 it runs torch's own fused kernel (impl "auto" or "native")."""

    Config = LSTMConfig
    cell_type = LSTMCell
    native = "lstm"
