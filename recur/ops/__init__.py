"""Ops: pure functions, one family per recurrence.

Every family is a `Family` in `FAMILIES`: its spec (the naive form), its other forms, its
single step, its checks, its state layout and example inputs. Each has one public function
(`recur.ops.gla.gla`, ...) whose `impl` argument picks the form.
"""

from . import delta, gla, grid, memory, mlstm, newton, rnn, ssm
from .family import FAMILIES, Example, Family, Form, StateLayout

__all__ = ["FAMILIES", "Example", "Family", "Form", "StateLayout", "delta", "gla", "grid", "memory", "mlstm", "newton", "rnn", "ssm"]
