"""Head-wise LSTM, GRU and sLSTM on a CUDA device: recur's Triton kernels against recur's
sequential form (a PyTorch loop with a hand-written backward), torch.nn.LSTM / GRU (cuDNN)
with the same hidden size, and flashrnn's fused kernels (when importable), forward and
forward+backward, in one process.

Every row computes a layer from its input x [B, T, hidden]: the input projection (one
matrix product; torch.nn.LSTM makes it itself) and the recurrence, in bfloat16 with
float32 states. cuDNN's recurrence is dense (one head of `hidden` units: heads× the
recurrent products of the head-wise ones). Before timing, the Triton form's output is
compared with the sequential form's on the same inputs (`rel_err` in the row).

Rows are printed and appended as JSON lines to --out (family "rnn"), for summary.py.
`--smoke` runs every code path on the CPU in Triton's interpreter at tiny sizes, to check
the script itself; its times mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

SIZES = {"device": "cuda", "B": 16, "T": 1024, "layouts": [(4, 64), (16, 64)], "dtype": torch.bfloat16}
SMOKE_SIZES = {"device": "cpu", "B": 2, "T": 4, "layouts": [(2, 8)], "dtype": torch.bfloat16}
CELLS = ("lstm", "gru", "slstm")


def synchronize() -> None:
    if SIZES["device"] == "cuda":
        torch.cuda.synchronize()


def milliseconds(call) -> float:
    if SIZES["device"] == "cuda":
        import triton.testing

        return triton.testing.do_bench(call, warmup=10, rep=50, return_mode="median")
    # on the CPU (--smoke) one call checks the code path; the time means nothing
    synchronize()
    start = time.perf_counter()
    call()
    synchronize()
    return 1e3 * (time.perf_counter() - start)


def write(row: dict, out_path: str) -> None:
    print(json.dumps(row), flush=True)
    with open(out_path, "a") as f:
        f.write(json.dumps(row) + "\n")


def layer_inputs(cell: str, heads: int, head_dim: int):
    """x [B, T, hidden], W [G · hidden, hidden] and the family's example R, b (no initial
    state), as bfloat16 leaves."""
    from recur.ops.common.examples import RandomInputs
    from recur.ops.rnn import RNN

    B, T, dtype, device = SIZES["B"], SIZES["T"], SIZES["dtype"], SIZES["device"]
    example = RNN.example_inputs(1, batch=B, case=cell, dtype=torch.float32, device=device, heads=heads, head_dim=head_dim)
    _, R, b = example.args
    gates = example.args[0].shape[2]
    hidden = heads * head_dim
    draw = RandomInputs(seed=1, dtype=torch.float32, device=device)
    x, W = draw.normal(B, T, hidden), draw.normal(gates * hidden, hidden, std=hidden**-0.5)
    return [t.detach().to(dtype).requires_grad_() for t in (x, W, R, b)]


def recur_case(cell: str, impl: str, heads: int, head_dim: int):
    from recur.ops.rnn import RNN

    x, W, R, b = inputs = layer_inputs(cell, heads, head_dim)

    def run():
        x_proj = F.linear(x, W).unflatten(-1, (-1, heads, head_dim))
        return RNN.call(impl, (x_proj, R, b), {"cell": cell})[0]

    return run, inputs


def cudnn_case(cell: str, heads: int, head_dim: int):
    hidden = heads * head_dim
    module = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(hidden, hidden, batch_first=True)
    module = module.to(SIZES["device"], SIZES["dtype"])
    x = torch.randn(SIZES["B"], SIZES["T"], hidden, device=SIZES["device"], dtype=SIZES["dtype"], requires_grad=True)
    return (lambda: module(x)[0]), [x, *module.parameters()]


def flashrnn_case(cell: str, backend: str, heads: int, head_dim: int):
    """flashrnn's kernel with Wx = x Wᵀ in its layout [B, T, 4, heads, head_dim] (its LSTM
    and sLSTM take four gates)."""
    from flashrnn import flashrnn

    x, W, R, b = inputs = layer_inputs(cell, heads, head_dim)

    def run():
        Wx = F.linear(x, W).unflatten(-1, (-1, heads, head_dim))
        return flashrnn(Wx, R, b, function=cell, backend=backend, dtype="bfloat16")[0]

    return run, inputs


def fwd_bwd(fn, inputs):
    def call():
        for t in inputs:
            t.grad = None
        out = fn()
        out.backward(torch.ones_like(out))

    return call


def cases(cell: str, heads: int, head_dim: int):
    out = [
        ("recur triton", lambda: recur_case(cell, "triton", heads, head_dim)),
        ("recur sequential, PyTorch", lambda: recur_case(cell, "sequential", heads, head_dim)),
    ]
    if cell in ("lstm", "gru"):
        out.append((f"torch.nn.{cell.upper()} (cuDNN, dense {heads * head_dim})", lambda: cudnn_case(cell, heads, head_dim)))
    if cell in ("lstm", "slstm"):
        for backend in ("cuda_fused", "triton_fused"):
            out.append((f"flashrnn {backend}", lambda backend=backend: flashrnn_case(cell, backend, heads, head_dim)))
    return out


def agreement(cell: str, heads: int, head_dim: int) -> float:
    """Relative error of the Triton form's output against the sequential form's."""
    triton_run, _ = recur_case(cell, "triton", heads, head_dim)
    sequential_run, _ = recur_case(cell, "sequential", heads, head_dim)
    with torch.no_grad():
        a, b = triton_run().float(), sequential_run().float()
    return float((a - b).norm() / b.norm())


def bench(out_path: str) -> None:
    B, T = SIZES["B"], SIZES["T"]
    for cell in CELLS:
        for heads, head_dim in SIZES["layouts"]:
            layout = f"{cell}, {heads}×{head_dim}"
            try:
                rel_err = agreement(cell, heads, head_dim)
            except Exception as e:  # recorded: the timings below say more
                rel_err = f"{type(e).__name__}: {str(e)[:300]}"
            for name, build in cases(cell, heads, head_dim):
                row = {"what": "time", "family": "rnn", "T": T, "B": B, "form": f"{name} ({layout})"}
                if name == "recur triton":
                    row["rel_err"] = rel_err
                try:
                    fn, inputs = build()
                    with torch.no_grad():
                        row["fwd_ms"] = milliseconds(fn)
                    row["fwdbwd_ms"] = milliseconds(fwd_bwd(fn, inputs))
                except Exception as e:  # a peer that cannot run (flashrnn off CUDA) is recorded
                    row["fwdbwd_error"] = f"{type(e).__name__}: {str(e)[:300]}"
                write(row, out_path)
                if SIZES["device"] == "cuda":
                    torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU in Triton's interpreter")
    args = parser.parse_args()
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
        SIZES.update(SMOKE_SIZES)
    bench(args.out)


if __name__ == "__main__":
    main()
