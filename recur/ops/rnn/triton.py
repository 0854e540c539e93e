"""Head-wise LSTM, GRU and sLSTM in fused Triton kernels: the autograd Function, the launch
settings and the form (the kernels and their derivation are in kernels.py).

FlashRNN: Optimizing Traditional RNNs on Modern Hardware (Pöppel, Beck, Hochreiter;
arXiv:2412.07752): g_t = x_t + R h_{t-1} + b (R block-diagonal over heads), s_t = P(s_{t-1}, g_t).

Legend: B batch, T time, G gates, H heads, D head width, S state components.
"""

from __future__ import annotations

import torch
import triton

from ..common import launch, packed_to_padded, padded_to_packed
from . import kernels
from .cells import GRU, LSTM, SLSTM
from .checks import triton_refusal

# the kernels' cell codes (kernels.LSTM, GRU, SLSTM), by the cell's exact type
CELL_CODES = {LSTM: 0, GRU: 1, SLSTM: 2}
# batch rows per program: tl.dot takes 16 rows at the least
BATCH_BLOCK = 16
# float32 inputs take IEEE products
FLOAT32_PRODUCTS = "ieee"
# warps per program (fixed: no autotuning at the first call). Compiled for sm_90 at heads of
# 64 (tests/ops/test_rnn_triton.py): with 8 warps the LSTM and GRU forwards keep their
# blocks in registers without spilling and the sLSTM's spills 32 bytes per thread (4 warps
# spill 40 bytes), the backward spills 8-56 bytes (16 warps cap registers at 128 and spill
# more).
WARPS = {"forward": 8, "backward": 8}


def _settings(x: torch.Tensor, D: int) -> dict:
    return {
        "BD": launch.pow2(D), "BB": BATCH_BLOCK,
        "PRECISION": launch.precision(x.dtype, FLOAT32_PRODUCTS),
    }


class _HeadwiseRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, code, S, x, R, b, s0, lengths):
        B, T, G, H, D = x.shape
        save = any(ctx.needs_input_grad)
        out = torch.empty(B, T, H, D, device=x.device, dtype=x.dtype)
        final = torch.empty(B, S, H, D, device=x.device, dtype=torch.float32)
        states = torch.empty(B, T, S, H, D, device=x.device, dtype=torch.float32) if save else final
        gates = torch.empty(B, T, 4, H, D, device=x.device, dtype=torch.float32) if save else final
        cfg = _settings(x, D)
        grid = (triton.cdiv(B, cfg["BB"]), H)
        kernels.forward[grid](
            x, R, b, s0 if s0 is not None else final, lengths if lengths is not None else final,
            out, states, gates, final, B, T, H=H, D=D, G=G, S=S, CELL=code, HAS_S0=s0 is not None,
            VARLEN=lengths is not None, SAVE=save, num_warps=WARPS["forward"], **cfg,
        )
        if save:
            ctx.save_for_backward(x, R, b, s0, lengths, states, gates)
        ctx.code, ctx.S = code, S
        return out, final

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, dfinal):
        x, R, b, s0, lengths, states, gates = ctx.saved_tensors
        B, T, G, H, D = x.shape
        cfg = _settings(x, D)
        blocks = triton.cdiv(B, cfg["BB"])
        dout = torch.zeros(B, T, H, D, device=x.device, dtype=torch.float32) if dout is None else dout.contiguous()
        dx = torch.empty(B, T, G, H, D, device=x.device, dtype=torch.float32)
        dR = torch.empty(blocks, 4, H, D, D, device=x.device, dtype=torch.float32)
        db = torch.empty(blocks, 4, H, D, device=x.device, dtype=torch.float32)
        ds0 = torch.empty(B, ctx.S, H, D, device=x.device, dtype=torch.float32)
        kernels.backward[(blocks, H)](
            R, s0 if s0 is not None else ds0, lengths if lengths is not None else ds0, states, gates, dout,
            dfinal.contiguous() if dfinal is not None else ds0, dx, dR, db, ds0, B, T,
            H=H, D=D, G=G, S=ctx.S, CELL=ctx.code, HAS_S0=s0 is not None, HAS_DFINAL=dfinal is not None,
            VARLEN=lengths is not None, num_warps=WARPS["backward"], **cfg,
        )
        dR = dR.sum(0)[: R.shape[0]].to(R.dtype)
        db = db.sum(0).to(b.dtype)
        return None, None, dx.to(x.dtype), dR, db, (ds0.to(s0.dtype) if s0 is not None else None), None


def triton_rnn(x_proj, R, b, *, cell, initial_state, cu_seqlens):
    """Head-wise LSTM, GRU or sLSTM in fused Triton kernels (forward and backward); the
    arguments of `naive_rnn`, already checked, with head width <= TRITON_MAX_HEAD_DIM (64). States are float32
    (float64 for float64 inputs, which the kernels round to float32 on the way in)."""
    refusal = triton_refusal(x_proj, cell=cell)
    if refusal is not None:
        raise ValueError(refusal)
    wide = torch.float64 in (x_proj.dtype, R.dtype, b.dtype) or (
        initial_state is not None and initial_state.dtype == torch.float64
    )
    out_dtype = x_proj.dtype
    x = x_proj.float() if x_proj.dtype == torch.float64 else x_proj
    R = R.float() if R.dtype == torch.float64 else R
    b = b.float() if b.dtype == torch.float64 else b
    s0 = None if initial_state is None else initial_state.float()
    lengths = None
    if cu_seqlens is not None:
        # one padded row per sequence; steps past a row's length leave its state as it is
        x = packed_to_padded(x, cu_seqlens)
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).to(torch.int32)
    out, final = _HeadwiseRNN.apply(
        CELL_CODES[type(cell)], cell.num_states, x.contiguous(), R.contiguous(), b.contiguous(),
        None if s0 is None else s0.contiguous(), lengths,
    )
    if cu_seqlens is not None:
        out = padded_to_packed(out, cu_seqlens)
    return out.to(out_dtype), (final.double() if wide else final)
