"""Benchmark cases of ParaRNN's Newton solver against the sequential loop."""

from __future__ import annotations

import torch

from ..ops.newton import NEWTON
from .ops import OpCase, register_op_bench

B, HIDDEN = 1, 256


def _cases(cell: str, T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    example = NEWTON.example_inputs(T, batch=B, case=cell, dtype=dtype, device=device, heads=1, head_dim=HIDDEN)
    x, R, b = example.args
    # ParaRNN's init scale for the diagonal recurrent weights (the examples draw std 0.5)
    R = (R.detach() * (2 / (5 * HIDDEN) ** 0.5 / 0.5)).requires_grad_()
    example.args = (x, R, b)
    leaves = list(example.leaves().values())

    def run(impl: str, **options):
        return lambda: NEWTON.call(impl, example.args, {**example.kwargs, **options})[0]

    return [
        OpCase(f"sequential ({cell})", run("sequential"), leaves),
        OpCase(f"newton ({cell})", run("newton", on_failure="raise"), leaves),
        OpCase(f"newton, compiled ({cell})", run("newton", on_failure="raise", compile=True), leaves),
    ]


@register_op_bench("newton", f"ParaGRU, B={B}, hidden {HIDDEN} (diagonal recurrence), ParaRNN init; Newton to the float32 tolerance 1e-5 (3 iterations here), baseline the sequential form.")
def paragru_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    return _cases("paragru", T, device, dtype)


@register_op_bench("newton_paralstm", f"ParaLSTM (2×2 block Jacobians), B={B}, hidden {HIDDEN}, ParaRNN init; Newton to tolerance 1e-5, baseline the sequential form.")
def paralstm_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    return _cases("paralstm", T, device, dtype)
