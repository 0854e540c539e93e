"""Benchmark cases of the mLSTM family."""

from __future__ import annotations

import torch

from ..ops.mlstm import chunk_mlstm, naive_mlstm
from .ops import OpCase, register_op_bench

B, H, K, V = 2, 4, 64, 64


@register_op_bench(
    "mlstm",
    f"B={B}, H={H}, K=V={K}, exponential input gate (mLSTM) and sigmoid input gate (mLSTMsig), forget pre-activations N(3, 1).",
)
def mlstm_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    gen = torch.Generator(device="cpu").manual_seed(0)

    def tensor(*shape, shift=0.0):
        return (torch.randn(*shape, generator=gen) + shift).to(device=device, dtype=dtype).requires_grad_()

    q, k, v = tensor(B, T, H, K), tensor(B, T, H, K), tensor(B, T, H, V)
    i, f = tensor(B, T, H), tensor(B, T, H, shift=3.0)
    inputs = [q, k, v, i, f]
    return [
        OpCase("naive (mLSTM)", lambda: naive_mlstm(q, k, v, i=i, f=f)[0], inputs),
        OpCase("chunk (mLSTM)", lambda: chunk_mlstm(q, k, v, i=i, f=f)[0], inputs),
        OpCase("chunk (mLSTMsig)", lambda: chunk_mlstm(q, k, v, i=i, f=f, input_gate="sigmoid")[0], inputs),
    ]
