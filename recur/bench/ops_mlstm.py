"""Benchmark cases of the mLSTM family."""

from __future__ import annotations

import torch

from ..ops.mlstm import MLSTM, chunk_mlstm, naive_mlstm
from .ops import OpCase, register_op_bench

B, H, K, V = 2, 4, 64, 64


@register_op_bench(
    "mlstm",
    f"B={B}, H={H}, K=V={K}, the family's example inputs (random initial state) with the exponential "
    "input gate (mLSTM, input pre-activations N(0, 9), forget N(2, 9)) and the sigmoid input gate (mLSTMsig).",
)
def mlstm_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    sizes = {"batch": B, "heads": H, "key_dim": K, "value_dim": V, "dtype": dtype, "device": device}
    exp, sigmoid = (MLSTM.example_inputs(T, case=case, **sizes) for case in ("exp", "sigmoid"))

    def case(form: str, fn, example) -> OpCase:
        return OpCase(form, lambda: fn(*example.args, **example.kwargs)[0], list(example.leaves().values()))

    return [
        case("naive (mLSTM)", naive_mlstm, exp),
        case("chunk (mLSTM)", chunk_mlstm, exp),
        case("chunk (mLSTMsig)", chunk_mlstm, sigmoid),
    ]
