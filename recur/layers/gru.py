"""GRU: gated recurrent unit with torch.nn.GRU's equations and weight layout.

Learning Phrase Representations using RNN Encoder-Decoder for Statistical Machine
Translation (Cho et al.; arXiv:1406.1078); head-wise block-diagonal recurrence as in
FlashRNN (arXiv:2412.07752):

    h_t = (1 − z_t) n_t + z_t h_{t-1},   n_t = tanh(W_n x_t + b_in + r_t (R_n h_{t-1} + b_hn)),
    r_t, z_t = σ(W x_t + R h_{t-1} + b)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ops.rnn import GRU as GRUCell
from .registry import register_mixer
from .rnn_common import RNNConfig, RNNLayer


@dataclass(kw_only=True)
class GRUConfig(RNNConfig):
    """GRU takes the options every RNN layer has (RNNConfig), and no others."""


@register_mixer("gru")
class GRU(RNNLayer):
    """`load_torch(nn.GRU(d_model, d_model, batch_first=True))` copies a torch GRU
    (hidden d_model / 2 when bidirectional); the outputs are then identical. With one head
    and float32 / float64 it runs torch's own fused kernel (impl "auto" or "native")."""

    Config = GRUConfig
    cell_type = GRUCell
    native = "gru"
