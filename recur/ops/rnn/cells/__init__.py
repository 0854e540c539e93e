"""The nonlinear cells, one per file, each registered in `CELLS` by name (AL-RNN, the
dendritic and the shallow PLRNN, which have options of their own, are passed as instances:
`ALRNN(num_relu=P)`, `DendPLRNN(num_bases=B)`, `ShallowPLRNN(hidden=L)`). `base.py` holds
what every cell is (`Cell`) and what the loops share (`Recurrence`, `Steps`)."""

from .alrnn import ALRNN
from .base import CELLS, Cell, Recurrence, Steps, resolve_cell
from .dendplrnn import DendPLRNN
from .elman import Elman
from .gru import GRU
from .indrnn import IndRNN
from .lstm import LSTM
from .mgu import MGU
from .paragru import ParaGRU
from .paralstm import ParaLSTM
from .plrnn import PLRNN
from .rhn import RHN
from .shplrnn import ShallowPLRNN
from .slstm import SLSTM

__all__ = [
    "ALRNN", "CELLS", "GRU", "LSTM", "MGU", "PLRNN", "RHN", "SLSTM", "Cell", "DendPLRNN", "Elman", "IndRNN", "ParaGRU",
    "ParaLSTM", "Recurrence", "ShallowPLRNN", "Steps", "resolve_cell",
]
