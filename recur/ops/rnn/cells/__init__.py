"""The nonlinear cells, one per file, each registered in `CELLS` by name (AL-RNN, which
has an option of its own, is passed as an instance: `ALRNN(num_relu=P)`). `base.py` holds
what every cell is (`Cell`) and what the loops share (`Recurrence`, `Steps`)."""

from .alrnn import ALRNN
from .base import CELLS, Cell, Recurrence, Steps, resolve_cell
from .elman import Elman
from .gru import GRU
from .indrnn import IndRNN
from .lstm import LSTM
from .mgu import MGU
from .paragru import ParaGRU
from .paralstm import ParaLSTM
from .rhn import RHN
from .slstm import SLSTM

__all__ = [
    "ALRNN", "CELLS", "GRU", "LSTM", "MGU", "RHN", "SLSTM", "Cell", "Elman", "IndRNN", "ParaGRU", "ParaLSTM",
    "Recurrence", "Steps", "resolve_cell",
]
