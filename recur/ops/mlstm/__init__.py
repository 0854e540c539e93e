"""The mLSTM family (xLSTM): exponential (or sigmoid) input gate, sigmoid forget gate, a
matrix memory C, a normaliser n and a max state m that keeps every exponent <= 0.

`mlstm(q, k, v, i=..., f=..., impl=...)` runs the form `impl` names: "naive" (the spec, a
loop over time), "chunk" (chunkwise PyTorch, the max state carried across chunks) or
"parallel" (the direct T × T form, a check on the others) or "triton" (fused GPU kernels,
chunkwise with two levels of tiles, optional). Each form is also a function of its own
(`naive_mlstm`, `chunk_mlstm`, `parallel_mlstm`, `triton_mlstm`) with the same arguments;
`MLSTM.step(...)` is one decoding step. `input_gate="sigmoid"` gives mLSTMsig. The state is
an `MLSTMState` (C, n, m), batch first.
"""

from __future__ import annotations

import torch

from ..common.examples import RandomInputs, check_case
from ..family import Example, Family, Form, StateLayout, register_family, triton_form
from .checks import check_mlstm_inputs
from .chunk import chunk_mlstm as _chunk
from .naive import MLSTMState
from .naive import naive_mlstm as _spec
from .parallel import parallel_mlstm as _parallel


def example_inputs(
    T: int, *, batch: int = 2, case: str = "exp", dtype=torch.float64, device=None, seed: int = 0,
    heads: int = 3, key_dim: int = 16, value_dim: int = 8,
) -> Example:
    """q, k [B, T, H, K], v [B, T, H, V], gate pre-activations i, f [B, T, H] of the kind
    `case` names and a random initial `MLSTMState`; every input requires grad."""
    draw = RandomInputs(seed, dtype, device)
    B, H, K, V = batch, heads, key_dim, value_dim
    q, k, v = draw.normal(B, T, H, K), draw.normal(B, T, H, K), draw.normal(B, T, H, V)
    cases = {
        # input pre-activations of a few units, forgets mostly near 1 (σ(2 ± 3))
        "exp": lambda: (draw.normal(B, T, H, std=3.0), 2.0 + draw.normal(B, T, H, std=3.0)),
        "sigmoid": lambda: (draw.normal(B, T, H, std=3.0), 2.0 + draw.normal(B, T, H, std=3.0)),
        # forgets near 0 (log f about −20 per step): the stabiliser moves at almost every step
        "strong_forget": lambda: (draw.normal(B, T, H, std=3.0), draw.normal(B, T, H, std=3.0) - 20.0),
    }
    check_case(case, cases)
    i, f = (x.detach().requires_grad_() for x in cases[case]())
    # m_0 of a few units either way: the stabiliser starts anywhere
    state = MLSTMState(draw.normal(B, H, K, V), draw.normal(B, H, K), draw.normal(B, H, std=2.0))
    kwargs = {"i": i, "f": f, "initial_state": state}
    if case == "sigmoid":
        kwargs["input_gate"] = "sigmoid"
    return Example((q, k, v), kwargs)


MLSTM = register_family(Family(
    name="mlstm",
    paper="xLSTM: Extended Long Short-Term Memory (Beck et al., arXiv:2405.04517)",
    recurrence=(
        "Stabilised mLSTM: m_t = max(log f_t + m_{t-1}, log i_t), C_t = f'_t C_{t-1} + i'_t k_t v_tᵀ, "
        "n_t = f'_t n_{t-1} + i'_t k_t, h_t = C_tᵀ q̂_t / (max(|n_tᵀ q̂_t|, e^{−m_t}) + eps)"
    ),
    spec=_spec,
    forms={
        "chunk": Form(_chunk, packed=True, summary="chunkwise-parallel PyTorch, the max state carried across chunks"),
        "parallel": Form(_parallel, packed=True, summary="the direct T × T form, quadratic in T: a check"),
        "triton": triton_form("recur.ops.mlstm.triton:triton_mlstm"),
    },
    check=check_mlstm_inputs,
    state=StateLayout({"C": "[B, H, K, V]", "n": "[B, H, K]", "m": "[B, H]"}, MLSTMState),
    time_inputs=("q", "k", "v", "i", "f"),
    # ĩ = -inf writes nothing, f̃ = -inf forgets everything
    log_gates=("i", "f"),
    example_inputs=example_inputs,
    cases=("exp", "sigmoid", "strong_forget"),
))

mlstm, naive_mlstm, chunk_mlstm, parallel_mlstm, triton_mlstm = MLSTM.functions(
    "naive", "chunk", "parallel", "triton"
)

__all__ = ["MLSTM", "MLSTMState", "chunk_mlstm", "mlstm", "naive_mlstm", "parallel_mlstm", "triton_mlstm"]
