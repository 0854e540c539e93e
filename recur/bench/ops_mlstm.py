"""Benchmark cases of the mLSTM family, and its peers: mlstm_kernels' pure-PyTorch forms
(TFLA, arXiv:2503.14376)."""

from __future__ import annotations

import torch

from ..ops.mlstm import MLSTM, chunk_mlstm, naive_mlstm
from .ops import MissingPeer, OpCase, peer_case, register_op_bench

B, H, K, V = 1, 4, 64, 64
# mlstm_kernels' chunkwise forms take whole chunks of this many steps
TFLA_CHUNK = 64
# its sigmoid-input-gate form is the T × T parallel one: quadratic memory
SIGMOID_PEER_MAX_T = 4096
EXP, SIGMOID = "mLSTM", "mLSTMsig"


@register_op_bench(
    "mlstm",
    f"B={B}, H={H}, K=V={K}, the family's example inputs with the exponential input gate (mLSTM, "
    "input pre-activations N(0, 9), forget N(2, 9)) from their random initial state, and with the "
    "sigmoid input gate (mLSTMsig) from a zero state. Peers from mlstm_kernels (pure PyTorch, chunks "
    f"of {TFLA_CHUNK}): chunkwise native_autograd (the same function, through autograd), chunkwise "
    "native_custbw (its own backward, which treats the normaliser max(|nᵀq|, e^(−m)) as a constant: "
    "the gradients of q, k and the gates differ from the exact ones, n_0 and m_0 get none), and for "
    "mLSTMsig the parallel native_siging_autograd (T × T; it takes no initial state, hence the zero "
    f"state; run up to T = {SIGMOID_PEER_MAX_T}).",
)
def mlstm_cases(T: int, device: torch.device, dtype: torch.dtype) -> list[OpCase | MissingPeer]:
    sizes = {"batch": B, "heads": H, "key_dim": K, "value_dim": V, "dtype": dtype, "device": device}
    exp, sigmoid = (MLSTM.example_inputs(T, case=case, **sizes) for case in ("exp", "sigmoid"))
    sigmoid.kwargs["initial_state"] = None

    def case(form: str, fn, example, computes: str) -> OpCase:
        run = lambda: fn(*example.args, **example.kwargs)[0]  # noqa: E731
        return OpCase(form, run, list(example.leaves().values()), computes=computes)

    cases = [
        case("naive (mLSTM)", naive_mlstm, exp, EXP),
        case("chunk (mLSTM)", chunk_mlstm, exp, EXP),
        case("chunk (mLSTMsig, zero initial state)", chunk_mlstm, sigmoid, SIGMOID),
    ]
    return cases + tfla_peers(exp, sigmoid, T)


def _heads_first(example) -> list[torch.Tensor]:
    """q, k, v, i, f as leaves of their own in mlstm_kernels' [B, H, T, ...] layout."""
    tensors = [*example.args, example.kwargs["i"], example.kwargs["f"]]
    return [x.detach().transpose(1, 2).contiguous().requires_grad_() for x in tensors]


def tfla_peers(exp, sigmoid, T: int) -> list[OpCase | MissingPeer]:
    """mlstm_kernels' native PyTorch forms on the same values; a `MissingPeer` for each that
    cannot run here."""
    chunkwise = {
        "native_autograd": "mlstm_kernels.torch.chunkwise.native:mlstm_chunkwise__native_autograd",
        "native_custbw": "mlstm_kernels.torch.chunkwise.native:mlstm_chunkwise__native_custbw",
    }
    peers = []
    for name, target in chunkwise.items():
        form = f"mlstm_kernels chunkwise {name} (mLSTM)"
        if T % TFLA_CHUNK:
            peers.append(MissingPeer(form, f"T = {T} is not a multiple of its chunk size {TFLA_CHUNK}"))
            continue
        q, k, v, i, f = _heads_first(exp)
        C0, n0, m0 = (s.detach().clone().requires_grad_() for s in exp.kwargs["initial_state"])

        def make(fn, q=q, k=k, v=v, i=i, f=f, C0=C0, n0=n0, m0=m0):
            def run():
                # its max state is [B, H, 1]
                return fn(q, k, v, i, f, c_initial=C0, n_initial=n0, m_initial=m0[..., None], chunk_size=TFLA_CHUNK)

            return run, [q, k, v, i, f, C0, n0, m0]

        peers.append(peer_case(form, target, "mlstm_kernels", make, computes=EXP))
    form = "mlstm_kernels parallel native_siging_autograd (mLSTMsig)"
    if T > SIGMOID_PEER_MAX_T:
        return [*peers, MissingPeer(form, f"T × T form, run up to T = {SIGMOID_PEER_MAX_T}")]
    q, k, v, i, f = _heads_first(sigmoid)
    peers.append(peer_case(
        form, "mlstm_kernels.torch.parallel.native_siging:mlstm_siging_parallel__native_autograd",
        "mlstm_kernels", lambda fn: (lambda: fn(q, k, v, i, f), [q, k, v, i, f]), computes=SIGMOID,
    ))
    return peers
