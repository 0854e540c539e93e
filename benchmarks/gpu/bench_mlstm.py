"""The mLSTM family on a CUDA device: recur's Triton kernels (two levels of tiles) against
recur's chunk form (PyTorch) and mlstm_kernels' chunkwise Triton kernels (TFLA's own, when
importable), forward and forward+backward, in one process.

Shapes as bench.py: bf16, H = 16 heads of K = V = 128, B·T = 32768 tokens, T in
2048/8192/32768; inputs from `MLSTM.example_inputs` without an initial state (mlstm_kernels
is called without one too). Both input gates: mLSTM (exponential) and mLSTMsig (sigmoid,
against mlstm_kernels' `triton_xl_chunk_siging`). Rows go to --out as JSON lines with
what = "time" and family = "mlstm", which summary.py prints as their own table.

`--smoke` runs every code path on the CPU in Triton's interpreter at tiny sizes; its times
mean nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

import bench
import torch


def inputs(T: int, input_gate: str):
    """q, k, v, ĩ, f̃ [B, T, H, ...] in bf16 (float32 on the CPU: its interpreter has no bf16 products)."""
    from recur.ops.mlstm import MLSTM

    sizes = bench.SIZES
    dtype = torch.bfloat16 if sizes["device"] == "cuda" else torch.float32
    case = "exp" if input_gate == "exp" else "sigmoid"
    example = MLSTM.example_inputs(
        T, batch=bench.batch(T), case=case, dtype=dtype, device=sizes["device"],
        heads=sizes["H"], key_dim=sizes["K"], value_dim=sizes["V"],
    )
    q, k, v = example.args
    return q, k, v, example.kwargs["i"], example.kwargs["f"]


def mlstm_kernels_call(input_gate: str, q, k, v, i, f):
    """mlstm_kernels' chunkwise Triton kernel on the same inputs (its layout is [B, H, T, ...]),
    or None when the package is absent."""
    try:
        from mlstm_kernels.torch.chunkwise import registry
    except ImportError:
        return None
    name = "triton_xl_chunk" if input_gate == "exp" else "triton_xl_chunk_siging"
    if name not in registry:
        return None
    kernel = registry[name]
    heads_first = lambda x: x.transpose(1, 2)  # noqa: E731

    def call():
        h = kernel(heads_first(q), heads_first(k), heads_first(v), heads_first(i), heads_first(f), autocast_kernel_dtype=q.dtype)
        return h.transpose(1, 2)

    return call


def cases(T: int):
    from recur.ops.mlstm import MLSTM

    out = []
    for input_gate, label in (("exp", "mLSTM"), ("sigmoid", "mLSTMsig")):
        q, k, v, i, f = inputs(T, input_gate)
        leaves = [q, k, v, i, f]
        for impl in ("triton", "chunk"):
            out.append((
                f"recur {impl} ({label})",
                lambda impl=impl, q=q, k=k, v=v, i=i, f=f, g=input_gate: MLSTM.forms[impl](q, k, v, i=i, f=f, input_gate=g)[0],
                leaves,
            ))
        theirs = mlstm_kernels_call(input_gate, q, k, v, i, f)
        if theirs is not None:
            out.append((f"mlstm_kernels chunkwise triton ({label})", theirs, leaves))
    return out


def run(lengths, out_path: str) -> None:
    for T in lengths:
        for name, fn, leaves in cases(T):
            row = {"what": "time", "family": "mlstm", "T": T, "B": bench.batch(T), "form": name}
            try:
                with torch.no_grad():
                    row["fwd_ms"] = bench.milliseconds(fn)
            except Exception as e:  # a kernel that cannot run here is recorded, not fatal
                row["fwd_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            try:
                row["fwdbwd_ms"] = bench.milliseconds(bench.fwd_bwd(fn, leaves))
            except Exception as e:
                row["fwdbwd_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            bench.write(row, out_path)
            if bench.SIZES["device"] == "cuda":
                torch.cuda.empty_cache()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--T", type=int, nargs="+", default=[2048, 8192, 32768])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU in Triton's interpreter")
    args = parser.parse_args()
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
        bench.SIZES.update(bench.SMOKE_SIZES, tokens=128)
        args.T = [64]
    try:
        run(args.T, args.out)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
