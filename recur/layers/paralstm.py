"""ParaLSTM: a coupled-gate LSTM with peepholes and diagonal recurrence, trainable in
parallel over time by Newton (2×2 blocks of diagonal Jacobians over (h, c)).

ParaRNN: Unlocking Parallel Training of Nonlinear RNNs for Large Language Models
(Danieli, Rodríguez, Sarabia, Suau, Zappella; arXiv:2510.21450):

    f = σ(a_f ⊙ h + W_f x + b_f + p_f ⊙ c),  c_t = f ⊙ c + (1 − f) ⊙ tanh(a_c ⊙ h + W_c x + b_c),
    o = σ(a_o ⊙ h + W_o x + b_o + p_o ⊙ c_t),  h_t = o ⊙ tanh(c_t)
"""

from __future__ import annotations

from dataclasses import dataclass

from ..ops.rnn import ParaLSTM as ParaLSTMCell
from .paragru import ParaRNNConfig, ParaRNNLayer
from .registry import register_mixer


@dataclass(kw_only=True)
class ParaLSTMConfig(ParaRNNConfig):
    """ParaLSTM takes the options every RNN layer has (RNNConfig), and `compile`."""


@register_mixer("paralstm")
class ParaLSTM(ParaRNNLayer):
    Config = ParaLSTMConfig
    cell_type = ParaLSTMCell
