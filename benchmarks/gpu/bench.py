"""GLA and the gated delta rule on a CUDA device: recur's Triton kernels against recur's chunk
form (PyTorch), FLA (when importable) and torch SDPA causal, in one process.

Shapes follow DESIGN.md §6: bf16, H = 16 heads of K = V = 128, B·T = 32768 tokens.
`--first-call` measures, in a fresh process with an empty Triton cache, the wall time of the
first forward+backward call of each kernel set (compilation included) and exits. Otherwise
every case is timed with triton.testing.do_bench (median; fresh inputs per T) and the rows
are printed and written as JSON lines to --out.

`--smoke` runs every code path on the CPU in Triton's interpreter at tiny sizes, to check
the script itself before a device is at hand; its times mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import traceback

import torch
import torch.nn.functional as F

SIZES = {"device": "cuda", "H": 16, "K": 128, "V": 128, "tokens": 32768}
SMOKE_SIZES = {"device": "cpu", "H": 2, "K": 32, "V": 32, "tokens": 256}

# Alternatives to a family's launch settings, timed against the default in the same
# process; chosen from what the sm_90 machine code showed (registers, spills) when no
# device was at hand: see tests/ops/test_triton_compile.py.
VARIANTS = {
    "gla": {
        "default": {},
        "4 warps": {"WARPS": {"output": 4, "backward": 4, "values": 4}},
        "key tiles 32": {"TILES": {"key": 32}},
        "no pipelining": {"STAGES": {"output": 1, "values": 1}},
        "pipelined backward": {"STAGES": {"backward": 2}},
        "value tiles 128": {"TILES": {"value_dv": 128}},
        # Triton 3.6 spills 312 bytes in the forward state walk with 3 stages, none with 2
        "state walks with 2 stages": {"STAGES": {"states": 2}},
        # twice the state programs: more of the chip for single long sequences
        "state tiles 64 x 16": {"TILES": {"state_value": 16}},
    },
    "delta": {
        "default": {},
        "walks with 8 warps": {"WARPS": {"walk": 8}},
        "gradients with 4 warps": {"WARPS": {"gradient": 4}},
        "outputs apart from the walk": {"WALK_FUSES": {"outputs": False}},
        "intra-chunk dU apart from the reverse walk": {"WALK_FUSES": {"intra_gradient": False}},
        "both apart, walks with 8 warps": {"WALK_FUSES": {"outputs": False, "intra_gradient": False}, "WARPS": {"walk": 8}},
    },
}
# the launch modules, whose settings (WARPS, STAGES, TILES, WALK_FUSES) the variants change
LAUNCH_MODULES = {"gla": "recur.ops.gla.triton", "delta": "recur.ops.delta.triton"}


def batch(T: int) -> int:
    return max(1, SIZES["tokens"] // T)


def make_gla_inputs(T, gate, dtype=torch.bfloat16, seed=0):
    B, H, K, V, device = batch(T), SIZES["H"], SIZES["K"], SIZES["V"], SIZES["device"]
    gen = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(B, T, H, K, device=device, generator=gen, dtype=dtype)
    k = torch.randn(B, T, H, K, device=device, generator=gen, dtype=dtype)
    v = torch.randn(B, T, H, V, device=device, generator=gen, dtype=dtype)
    shape = (B, T, H, K) if gate == "vector" else (B, T, H)
    # GLA's gates: log σ(x)/16 keeps decays near 1, as in the paper's parametrisation
    g = (F.logsigmoid(torch.randn(*shape, device=device, generator=gen)) / 16).to(dtype)
    return [x.requires_grad_() for x in (q, k, v, g)]


def make_delta_inputs(T, dtype=torch.bfloat16, seed=0):
    """Unit keys, β in [0, 2], per-head log decays log σ(x), as the layers make them."""
    B, H, K, V, device = batch(T), SIZES["H"], SIZES["K"], SIZES["V"], SIZES["device"]
    gen = torch.Generator(device=device).manual_seed(seed)
    q = torch.randn(B, T, H, K, device=device, generator=gen, dtype=dtype)
    k = F.normalize(torch.randn(B, T, H, K, device=device, generator=gen), dim=-1).to(dtype)
    v = torch.randn(B, T, H, V, device=device, generator=gen, dtype=dtype)
    beta = (2 * torch.sigmoid(torch.randn(B, T, H, device=device, generator=gen))).to(dtype)
    g = F.logsigmoid(torch.randn(B, T, H, device=device, generator=gen)).to(dtype)
    return [x.requires_grad_() for x in (q, k, v, beta, g)]


def fwd_bwd(fn, inputs):
    def call():
        for x in inputs:
            x.grad = None
        out = fn()
        out.backward(torch.ones_like(out))

    return call


def synchronize():
    if SIZES["device"] == "cuda":
        torch.cuda.synchronize()


def wall_time(call) -> float:
    synchronize()
    start = time.perf_counter()
    call()
    synchronize()
    return time.perf_counter() - start


def milliseconds(call, warmup=25, rep=100) -> float:
    if SIZES["device"] == "cuda":
        import triton.testing

        return triton.testing.do_bench(call, warmup=warmup, rep=rep, return_mode="median")
    # on the CPU (--smoke) the times mean nothing: one call checks the code path, and keeps
    # every variant of both families within the step's time limit
    return 1e3 * wall_time(call)


def write(row: dict, out_path: str) -> None:
    print(json.dumps(row), flush=True)
    with open(out_path, "a") as f:
        f.write(json.dumps(row) + "\n")


def kernel_calls(T):
    """(label, function, inputs) of each Triton kernel set, bf16, through the families'
    "triton" forms (checked, with defaults)."""
    from recur.ops.delta import triton_delta_rule
    from recur.ops.gla import triton_gla

    out = []
    for gate in ("vector", "scalar"):
        q, k, v, g = make_gla_inputs(T, gate)
        out.append((f"gla {gate} gate", lambda q=q, k=k, v=v, g=g: triton_gla(q, k, v, g=g)[0], [q, k, v, g]))
    q, k, v, beta, g = make_delta_inputs(T)
    out.append(("gated delta rule", lambda: triton_delta_rule(q, k, v, beta=beta, g=g)[0], [q, k, v, beta, g]))
    return out


def first_call(out_path: str, T: int = 2048) -> None:
    for label, fn, inputs in kernel_calls(T):
        call = fwd_bwd(fn, inputs)
        write({"what": "first_call", "kernels": label, "T": T, "first_s": wall_time(call), "second_s": wall_time(call)}, out_path)


def sdpa_case(T):
    B, H, K = batch(T), SIZES["H"], SIZES["K"]
    gen = torch.Generator(device=SIZES["device"]).manual_seed(1)
    qs, ks, vs = (
        torch.randn(B, H, T, K, device=SIZES["device"], generator=gen, dtype=torch.bfloat16).requires_grad_()
        for _ in range(3)
    )
    return ("torch SDPA causal", lambda: F.scaled_dot_product_attention(qs, ks, vs, is_causal=True), [qs, ks, vs])


def load_baseline(path):
    """An earlier version of recur/ops/gla/triton.py (a file written by `git show REV:...`),
    loaded as a sibling of the current one so that its relative imports resolve."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("recur.ops.gla.triton_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cases(T, family, with_fla, baseline=None):
    out = []
    if family == "gla":
        from recur.ops.gla import chunk_gla, triton_gla

        for gate in ("vector", "scalar"):
            q, k, v, g = make_gla_inputs(T, gate)
            out.append((f"recur triton ({gate} gate)", lambda q=q, k=k, v=v, g=g: triton_gla(q, k, v, g=g)[0], [q, k, v, g]))
            if baseline is not None:
                old = load_baseline(baseline).triton_gla
                out.append((f"recur triton, baseline {os.path.basename(baseline)} ({gate} gate)",
                            lambda q=q, k=k, v=v, g=g, old=old: old(q, k, v, g=g)[0], [q, k, v, g]))
        q, k, v, g = make_gla_inputs(T, "vector")
        out.append(("recur chunk, PyTorch (vector gate)", lambda: chunk_gla(q, k, v, g=g)[0], [q, k, v, g]))
        if with_fla:
            from fla.ops.gla import chunk_gla as fla_chunk_gla

            out.append(("FLA chunk_gla (vector gate)", lambda: fla_chunk_gla(q, k, v, g)[0], [q, k, v, g]))
    else:
        from recur.ops.delta import chunk_delta_rule, triton_delta_rule

        q, k, v, beta, g = make_delta_inputs(T)
        inputs = [q, k, v, beta, g]
        out.append(("recur triton (gated delta rule)", lambda: triton_delta_rule(q, k, v, beta=beta, g=g)[0], inputs))
        out.append(("recur chunk, PyTorch (gated delta rule)", lambda: chunk_delta_rule(q, k, v, beta=beta, g=g)[0], inputs))
        if with_fla:
            from fla.ops.gated_delta_rule import chunk_gated_delta_rule

            out.append(("FLA chunk_gated_delta_rule", lambda: chunk_gated_delta_rule(q=q, k=k, v=v, g=g, beta=beta)[0], inputs))
    out.append(sdpa_case(T))
    return out


def bench(lengths, family, out_path, with_fla, forms, baseline=None):
    for T in lengths:
        for name, fn, inputs in cases(T, family, with_fla, baseline):
            if forms and not any(f in name for f in forms):
                continue
            row = {"what": "time", "family": family, "T": T, "B": batch(T), "form": name}
            if "FLA" in name and T == lengths[0]:
                try:
                    with torch.no_grad():
                        row["first_fwd_s"] = wall_time(fn)
                except Exception as e:
                    row["first_fwd_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            try:
                with torch.no_grad():
                    row["fwd_ms"] = milliseconds(fn)
            except Exception as e:  # a baseline that cannot run is recorded, not fatal
                row["fwd_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            try:
                row["fwdbwd_ms"] = milliseconds(fwd_bwd(fn, inputs))
            except Exception as e:
                row["fwdbwd_error"] = f"{type(e).__name__}: {str(e)[:300]}"
            write(row, out_path)
            if SIZES["device"] == "cuda":
                torch.cuda.empty_cache()


def breakdown(out_path: str, T: int = 8192) -> None:
    """GLA: times the stages that run as their own launches."""
    import triton

    from recur.ops.gla import triton as launch

    H = SIZES["H"]
    for gate in ("vector", "scalar"):
        q, k, v, g = (x.detach() for x in make_gla_inputs(T, gate))
        B = q.shape[0]
        T_pad = triton.cdiv(T, launch.CHUNK) * launch.CHUNK
        gc, sc, scalar_gate = launch._gate_cumsum(g, None, B, T, T_pad, H, q.device)
        stages = {
            "gate cumsum": lambda g=g, B=B, T_pad=T_pad: launch._gate_cumsum(g, None, B, T, T_pad, H, g.device),
            "chunk states": lambda k=k, v=v, g=g, gc=gc, sc=sc, T_pad=T_pad, s=scalar_gate: launch._chunk_states(
                k, v, g, gc, sc, None, 1.0, T_pad, s, False, reverse=False, store_final=True, state_dtype=k.dtype, cu_chunks=None),
            "adjoint states": lambda q=q, v=v, g=g, gc=gc, sc=sc, T_pad=T_pad, s=scalar_gate: launch._chunk_states(
                q, v, g, gc, sc, None, 1.0, T_pad, s, False, reverse=True, store_final=True, state_dtype=q.dtype, cu_chunks=None),
        }
        for name, fn in stages.items():
            write({"what": "stage", "T": T, "gate": gate, "stage": name, "ms": milliseconds(fn, warmup=10, rep=50)}, out_path)


def variant_call(family, T):
    """Forward+backward through the family's "triton" form, which launches with the settings
    of its launch module as they are at the call."""
    if family == "gla":
        from recur.ops.gla import triton_gla

        q, k, v, g = make_gla_inputs(T, "vector")
        return fwd_bwd(lambda: triton_gla(q, k, v, g=g)[0], [q, k, v, g])
    from recur.ops.delta import triton_delta_rule

    q, k, v, beta, g = make_delta_inputs(T)
    return fwd_bwd(lambda: triton_delta_rule(q, k, v, beta=beta, g=g)[0], [q, k, v, beta, g])


def variants(out_path: str, T: int = 8192) -> None:
    """Forward+backward of each family with each of its VARIANTS (GLA: vector gate)."""
    import importlib

    for family, table in VARIANTS.items():
        launch = importlib.import_module(LAUNCH_MODULES[family])
        names = [name for name in ("WARPS", "STAGES", "TILES", "WALK_FUSES") if isinstance(getattr(launch, name, None), dict)]
        defaults = {name: copy.deepcopy(getattr(launch, name)) for name in names}
        call = variant_call(family, T)
        for label, changes in table.items():
            for name, value in defaults.items():
                getattr(launch, name).clear()
                getattr(launch, name).update(value, **changes.get(name, {}))
            row = {"what": "variant", "family": family, "T": T, "variant": label, "settings": changes}
            try:
                row["fwdbwd_ms"] = milliseconds(call, warmup=10, rep=50)
            except Exception as e:  # a setting that does not fit the card is recorded, not fatal
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            write(row, out_path)
        for name, value in defaults.items():
            getattr(launch, name).clear()
            getattr(launch, name).update(value)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--family", choices=["gla", "delta"], default="gla")
    parser.add_argument("--first-call", action="store_true", help="first calls with compilation, then exit")
    parser.add_argument("--fla", action="store_true", help="only FLA's kernel of the family")
    parser.add_argument("--breakdown", action="store_true", help="time GLA's separately launched stages")
    parser.add_argument("--variants", action="store_true", help="time the launch-setting VARIANTS")
    parser.add_argument("--T", type=int, nargs="+", default=[2048, 4096, 8192, 32768])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU in Triton's interpreter")
    parser.add_argument("--baseline", help="an earlier recur/ops/gla/triton.py to time next to the current one")
    args = parser.parse_args()
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
        SIZES.update(SMOKE_SIZES)
        args.T = [64, 128]
    try:
        if args.first_call:
            first_call(args.out, T=args.T[0])
        elif args.breakdown:
            breakdown(args.out, T=args.T[-1])
        elif args.variants:
            variants(args.out, T=args.T[-1] if args.smoke else 8192)
        else:
            forms = ["FLA"] if args.fla else ["recur", "SDPA"]
            bench(args.T, args.family, args.out, with_fla=args.fla, forms=forms, baseline=args.baseline)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
