"""Benchmark cases of the nonlinear RNN family: our LSTM layer's forms (the naive loop, the
sequential loop with its hand-written backward, torch's fused kernel that "auto" picks)
against torch.nn.LSTM."""

from __future__ import annotations

import torch
from torch import nn

from ..layers import build_mixer
from .ops import OpCase, register_op_bench

B, HIDDEN = 16, 256


@register_op_bench("rnn", f"LSTM layer, B={B}, d_model = hidden = {HIDDEN}, one head: impl naive, sequential (hand-written backward through time), native (torch's fused kernel on the layer's own parameters, what impl='auto' picks here); torch.nn.LSTM with the same weights (its CPU kernel, or cuDNN on CUDA); sLSTM with 4 heads (sequential).")
def rnn_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    torch.manual_seed(0)
    reference = nn.LSTM(HIDDEN, HIDDEN, batch_first=True).to(device=device, dtype=dtype)
    ours = build_mixer("lstm", HIDDEN).to(device=device, dtype=dtype)
    ours.load_torch(reference)
    slstm = build_mixer("slstm", HIDDEN, num_heads=4).to(device=device, dtype=dtype)
    x = torch.randn(B, T, HIDDEN, generator=torch.Generator().manual_seed(1)).to(device, dtype).requires_grad_()
    mixer_inputs = [x, *ours.parameters()]
    return [
        OpCase("naive (lstm layer)", lambda: ours.with_impl("naive")(x)[0], mixer_inputs),
        OpCase("sequential (lstm layer)", lambda: ours.with_impl("sequential")(x)[0], mixer_inputs),
        OpCase("native (lstm layer; = auto)", lambda: ours.with_impl("native")(x)[0], mixer_inputs),
        OpCase("torch.nn.LSTM", lambda: reference(x)[0], [x, *reference.parameters()]),
        OpCase("sequential (slstm layer, 4 heads)", lambda: slstm(x)[0], [x, *slstm.parameters()]),
    ]
