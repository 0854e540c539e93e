"""Benchmark cases of the mLSTM family."""

from __future__ import annotations

import torch

from ..ops.mlstm import MLSTM, chunk_mlstm, naive_mlstm
from .ops import OpCase, register_op_bench

B, H, K, V = 2, 4, 64, 64
# mlstm_kernels' pure-PyTorch chunkwise form takes whole chunks of this many steps
TFLA_CHUNK = 64


@register_op_bench(
    "mlstm",
    f"B={B}, H={H}, K=V={K}, the family's example inputs (random initial state) with the exponential "
    "input gate (mLSTM, input pre-activations N(0, 9), forget N(2, 9)) and the sigmoid input gate "
    "(mLSTMsig). Where the mlstm_kernels package is installed, its pure-PyTorch chunkwise form with "
    "its own backward runs on the same mLSTM inputs.",
)
def mlstm_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase]:
    sizes = {"batch": B, "heads": H, "key_dim": K, "value_dim": V, "dtype": dtype, "device": device}
    exp, sigmoid = (MLSTM.example_inputs(T, case=case, **sizes) for case in ("exp", "sigmoid"))

    def case(form: str, fn, example) -> OpCase:
        return OpCase(form, lambda: fn(*example.args, **example.kwargs)[0], list(example.leaves().values()))

    cases = [
        case("naive (mLSTM)", naive_mlstm, exp),
        case("chunk (mLSTM)", chunk_mlstm, exp),
        case("chunk (mLSTMsig)", chunk_mlstm, sigmoid),
    ]
    tfla = _tfla_case(exp)
    return cases + ([tfla] if tfla is not None and T % TFLA_CHUNK == 0 else [])


def _tfla_case(example) -> OpCase | None:
    """mlstm_kernels' native chunkwise form (TFLA, arXiv:2503.14376) on the same inputs, as
    leaves of its own in its [B, H, T, ...] layout; None where the package is not installed.
    Its backward leaves out the normaliser's and the max state's parts of the gradient."""
    try:
        from mlstm_kernels.torch.chunkwise.native import mlstm_chunkwise__native_custbw
    except ImportError:
        return None
    q, k, v = (x.detach().transpose(1, 2).contiguous().requires_grad_() for x in example.args)
    i, f = (example.kwargs[name].detach().transpose(1, 2).contiguous().requires_grad_() for name in ("i", "f"))
    C0, n0, m0 = (s.detach().clone().requires_grad_() for s in example.kwargs["initial_state"])

    def run():
        return mlstm_chunkwise__native_custbw(
            q, k, v, i, f, c_initial=C0, n_initial=n0, m_initial=m0[..., None], chunk_size=TFLA_CHUNK
        )

    return OpCase("mlstm_kernels chunkwise, native torch (mLSTM)", run, [q, k, v, i, f, C0, n0, m0])
