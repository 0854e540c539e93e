"""The mLSTM family (xLSTM): exponential (or sigmoid) input gate, sigmoid forget gate, a
matrix memory C, a normaliser n and a max state m that keeps every exponent <= 0.

Forms: `naive_mlstm` (the spec), `chunk_mlstm` (chunkwise PyTorch, max state carried
across chunks), `parallel_mlstm` (the direct quadratic form, a check). `mlstm(..., impl=...)`
dispatches between the naive and chunk forms. `input_gate="sigmoid"` gives mLSTMsig.
"""

from __future__ import annotations

import torch

from ..dispatch import dispatch
from .chunk import chunk_mlstm
from .naive import State, naive_mlstm
from .parallel import parallel_mlstm

FORMS = {"naive": naive_mlstm, "chunk": chunk_mlstm}


def mlstm(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    i: torch.Tensor,
    f: torch.Tensor,
    scale: float | None = None,
    initial_state: State | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    eps: float = 1e-6,
    input_gate: str = "exp",
    impl: str = "auto",
) -> tuple[torch.Tensor, State | None]:
    """The stabilised mLSTM; `impl` is "auto", "naive" or "chunk" (and "triton" where the
    family has fused kernels). See `naive_mlstm` for the arguments."""
    form = dispatch("mlstm", FORMS, impl, q)
    return form(
        q, k, v, i=i, f=f, scale=scale, initial_state=initial_state,
        output_final_state=output_final_state, cu_seqlens=cu_seqlens, eps=eps, input_gate=input_gate,
    )


__all__ = ["FORMS", "State", "chunk_mlstm", "mlstm", "naive_mlstm", "parallel_mlstm"]
