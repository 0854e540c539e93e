"""GLA on a CUDA device: recur's Triton kernels against recur's chunk form (PyTorch), FLA's
chunk_gla (when importable) and torch SDPA causal, in one process.

Shapes follow DESIGN.md §6: bf16, H = 16 heads of K = V = 128, B·T = 32768 tokens.
`--first-call` measures, in a fresh process with an empty Triton cache, the wall time of the
first forward+backward call (compilation included) and exits. Otherwise every case is
timed with triton.testing.do_bench (median; fresh inputs per T) and the rows are printed
and written as JSON lines to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

import torch
import torch.nn.functional as F

H, K, V = 16, 128, 128
TOKENS = 32768


def make_inputs(T, gate, dtype=torch.bfloat16, requires_grad=True, seed=0):
    B = max(1, TOKENS // T)
    gen = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(B, T, H, K, device="cuda", generator=gen, dtype=dtype)
    k = torch.randn(B, T, H, K, device="cuda", generator=gen, dtype=dtype)
    v = torch.randn(B, T, H, V, device="cuda", generator=gen, dtype=dtype)
    shape = (B, T, H, K) if gate == "vector" else (B, T, H)
    # GLA's gates: log σ(x)/16 keeps decays near 1, as in the paper's parametrisation
    g = (F.logsigmoid(torch.randn(*shape, device="cuda", generator=gen)) / 16).to(dtype)
    tensors = [q, k, v, g]
    for x in tensors:
        x.requires_grad_(requires_grad)
    return tensors


def fwd_bwd(fn, inputs):
    def call():
        for x in inputs:
            x.grad = None
        out = fn()
        out.backward(torch.ones_like(out))

    return call


def wall_time(call) -> float:
    torch.cuda.synchronize()
    start = time.perf_counter()
    call()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def first_call(out_path: str) -> None:
    from recur.ops.gla.triton import triton_gla

    rows = []
    for gate in ("vector", "scalar"):
        q, k, v, g = make_inputs(2048, gate)
        call = fwd_bwd(lambda q=q, k=k, v=v, g=g: triton_gla(q, k, v, g=g)[0], [q, k, v, g])
        row = {"what": "first_call", "gate": gate, "first_s": wall_time(call), "second_s": wall_time(call)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    with open(out_path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


def cases(T, with_fla):
    from recur.ops.gla import chunk_gla
    from recur.ops.gla.triton import triton_gla

    out = []
    for gate in ("vector", "scalar"):
        q, k, v, g = make_inputs(T, gate)
        out.append((f"recur triton ({gate} gate)", lambda q=q, k=k, v=v, g=g: triton_gla(q, k, v, g=g)[0], [q, k, v, g]))
    q, k, v, g = make_inputs(T, "vector")
    out.append(("recur chunk, PyTorch (vector gate)", lambda: chunk_gla(q, k, v, g=g)[0], [q, k, v, g]))
    if with_fla:
        from fla.ops.gla import chunk_gla as fla_chunk_gla

        out.append(("FLA chunk_gla (vector gate)", lambda: fla_chunk_gla(q, k, v, g)[0], [q, k, v, g]))
    B = max(1, TOKENS // T)
    gen = torch.Generator(device="cuda").manual_seed(1)
    qs, ks, vs = (torch.randn(B, H, T, K, device="cuda", generator=gen, dtype=torch.bfloat16).requires_grad_() for _ in range(3))
    out.append(("torch SDPA causal", lambda: F.scaled_dot_product_attention(qs, ks, vs, is_causal=True), [qs, ks, vs]))
    return out


def bench(lengths, out_path, with_fla, forms):
    import triton.testing

    for T in lengths:
        for name, fn, inputs in cases(T, with_fla):
            if forms and not any(f in name for f in forms):
                continue
            row = {"what": "time", "T": T, "B": max(1, TOKENS // T), "form": name}
            if "FLA" in name and T == lengths[0]:
                try:
                    with torch.no_grad():
                        row["first_fwd_s"] = wall_time(fn)
                except Exception as e:
                    row["first_fwd_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            try:
                with torch.no_grad():
                    row["fwd_ms"] = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
            except Exception as e:  # a baseline that cannot run is recorded, not fatal
                row["fwd_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            try:
                row["fwdbwd_ms"] = triton.testing.do_bench(fwd_bwd(fn, inputs), warmup=25, rep=100, return_mode="median")
            except Exception as e:
                row["fwdbwd_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            print(json.dumps(row), flush=True)
            with open(out_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            torch.cuda.empty_cache()


def breakdown(out_path: str, T: int = 8192) -> None:
    """Times the stages that run as their own launches; the output kernel is the forward
    minus these, the backward kernel the rest of forward+backward."""
    import triton.testing

    from recur.ops.gla import triton as kernels

    for gate in ("vector", "scalar"):
        q, k, v, g = (x.detach() for x in make_inputs(T, gate))
        B = q.shape[0]
        T_pad = triton.cdiv(T, kernels.CHUNK) * kernels.CHUNK
        gc, sc, scalar_gate = kernels._gate_cumsum(g, None, B, T, T_pad, H, q.device)
        stages = {
            "gate cumsum": lambda g=g, B=B, T_pad=T_pad: kernels._gate_cumsum(g, None, B, T, T_pad, H, g.device),
            "chunk states": lambda k=k, v=v, gc=gc, sc=sc, T_pad=T_pad, s=scalar_gate: kernels._chunk_states(
                k, v, gc, sc, None, 1.0, T_pad, s, False, reverse=False, store_final=True, state_dtype=k.dtype),
            "adjoint states": lambda q=q, v=v, gc=gc, sc=sc, T_pad=T_pad, s=scalar_gate: kernels._chunk_states(
                q, v, gc, sc, None, 1.0, T_pad, s, False, reverse=True, store_final=True, state_dtype=q.dtype),
        }
        for name, fn in stages.items():
            row = {"what": "stage", "T": T, "gate": gate, "stage": name,
                   "ms": triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median")}
            print(json.dumps(row), flush=True)
            with open(out_path, "a") as f:
                f.write(json.dumps(row) + "\n")


# Alternatives to the launch settings of recur.ops.gla.triton, timed against the default in
# the same process; chosen from what the sm_90 machine code showed (registers, spills) when
# no device was at hand: see tests/ops/test_triton_compile.py.
VARIANTS = {
    "default": {},
    "4 warps": {"WARPS": {"output": 4, "backward": 4, "values": 4}},
    "key tiles 32": {"TILES": {"key": 32}},
    "no pipelining": {"STAGES": {"output": 1, "values": 1}},
    "pipelined backward": {"STAGES": {"backward": 2}},
    "value tiles 128": {"TILES": {"value_dv": 128}},
}


def variants(out_path: str, T: int = 8192) -> None:
    """Forward+backward with each of VARIANTS (vector gate)."""
    import copy

    import triton.testing

    from recur.ops.gla import triton as kernels

    defaults = {name: copy.deepcopy(getattr(kernels, name)) for name in ("WARPS", "STAGES", "TILES")}
    q, k, v, g = make_inputs(T, "vector")
    call = fwd_bwd(lambda: kernels.triton_gla(q, k, v, g=g)[0], [q, k, v, g])
    for label, changes in VARIANTS.items():
        for name, value in defaults.items():
            getattr(kernels, name).clear()
            getattr(kernels, name).update(value, **changes.get(name, {}))
        row = {"what": "variant", "T": T, "variant": label, "settings": changes}
        try:
            row["fwdbwd_ms"] = triton.testing.do_bench(call, warmup=10, rep=50, return_mode="median")
        except Exception as e:  # a setting that does not fit the card is recorded, not fatal
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        print(json.dumps(row), flush=True)
        with open(out_path, "a") as f:
            f.write(json.dumps(row) + "\n")
    for name, value in defaults.items():
        getattr(kernels, name).clear()
        getattr(kernels, name).update(value)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--first-call", action="store_true")
    parser.add_argument("--fla", action="store_true", help="only FLA's chunk_gla")
    parser.add_argument("--breakdown", action="store_true", help="time the separately launched stages and VARIANTS")
    parser.add_argument("--T", type=int, nargs="+", default=[2048, 4096, 8192, 32768])
    args = parser.parse_args()
    if args.first_call:
        first_call(args.out)
        return 0
    if args.breakdown:
        breakdown(args.out)
        variants(args.out)
        return 0
    try:
        bench(args.T, args.out, with_fla=args.fla, forms=["FLA"] if args.fla else ["recur", "SDPA"])
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
