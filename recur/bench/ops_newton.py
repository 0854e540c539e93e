"""Benchmark cases of ParaRNN's Newton solver against the sequential loop."""

from __future__ import annotations

import torch

from ..ops.newton import newton_solve
from ..ops.rnn import CELLS, sequential_rnn
from .ops import OpCase, register_op_bench

B, HIDDEN = 1, 256


def _cases(cell_name: str, T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    cell = CELLS[cell_name]
    gen = torch.Generator(device="cpu").manual_seed(0)

    def tensor(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device=device, dtype=dtype).requires_grad_()

    x = tensor(B, T, cell.input_gates, 1, HIDDEN)
    # ParaRNN's init scale for the diagonal recurrent weights
    R = tensor(cell.recurrent_gates, 1, HIDDEN, scale=2 / (5 * HIDDEN) ** 0.5)
    b = tensor(cell.bias_gates, 1, HIDDEN, scale=0.1)
    return [
        OpCase(f"sequential ({cell_name})", lambda: sequential_rnn(x, R, b, cell=cell)[0], [x, R, b]),
        OpCase(f"newton ({cell_name})", lambda: newton_solve(x, R, b, cell=cell, on_failure="raise")[0], [x, R, b]),
        OpCase(
            f"newton, compiled ({cell_name})",
            lambda: newton_solve(x, R, b, cell=cell, on_failure="raise", compile=True)[0], [x, R, b],
        ),
    ]


@register_op_bench("newton", f"ParaGRU, B={B}, hidden {HIDDEN} (diagonal recurrence), ParaRNN init; Newton to the float32 tolerance 1e-5 (3 iterations here), baseline the sequential form.")
def paragru_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    return _cases("paragru", T, device, dtype)


@register_op_bench("newton_paralstm", f"ParaLSTM (2×2 block Jacobians), B={B}, hidden {HIDDEN}, ParaRNN init; Newton to tolerance 1e-5, baseline the sequential form.")
def paralstm_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    return _cases("paralstm", T, device, dtype)
