"""ParaRNN on a CUDA device: the newton family's Newton solve with its scans in Triton
("triton"), the same solve with the PyTorch scans ("newton") and the sequential loop with
its hand-written backward ("sequential"), for ParaGRU and ParaLSTM, forward and
forward+backward, in one process.

Shapes: float32, H = 8 heads of Dh = 128 units (1024 units per layer), B · T = 32768
tokens, T in 1024, 4096, 16384 and 65536. The paper's abstract reports speedups of up to
665× over sequential application; the setting behind that figure (T, width, card) is not
in the sources at hand, so 65536 stands for the long end. Each row is a JSON line as
bench.py writes them ("what": "time", "family": "newton"), with the Newton iterations of
the solve, for the Newton forms the speedup over the sequential form at the same T, and
for the Triton one the relative difference of its h from the PyTorch scans' (a
correctness check at full size). Then the scans of one Newton step alone (forward and
adjoint, S = 1 and 2, T = 4096 and 16384) with each of the launch settings in VARIANTS,
and with the PyTorch scans ("what": "variant").

The sequential form takes seconds per call at long T, so every case is timed by its own
budget: one call to warm up (compiling the kernels; the sequential form only at the first
T), then calls until `--budget` seconds or `--reps` calls, the median. `--smoke` runs
every code path on the CPU in Triton's interpreter at tiny sizes; its times mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback

import torch

SIZES = {"device": "cuda", "H": 8, "Dh": 128, "tokens": 32768}
SMOKE_SIZES = {"device": "cpu", "H": 2, "Dh": 8, "tokens": 32}
FORMS = ("triton", "newton", "sequential")
CELLS = ("paragru", "paralstm")


def synchronize() -> None:
    if SIZES["device"] == "cuda":
        torch.cuda.synchronize()


def milliseconds(call, budget_s: float, reps: int, warm_up: bool = True) -> tuple[float, int]:
    """(median ms, calls timed) after one warm-up call (when `warm_up`): calls until
    budget_s or reps."""
    if warm_up:
        call()
        synchronize()
    times = []
    start = time.perf_counter()
    while len(times) < reps and (not times or time.perf_counter() - start < budget_s):
        synchronize()
        t0 = time.perf_counter()
        call()
        synchronize()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), len(times)


def write(row: dict, out_path: str) -> None:
    print(json.dumps(row), flush=True)
    with open(out_path, "a") as f:
        f.write(json.dumps(row) + "\n")


def case_inputs(T: int, cell: str):
    from recur.ops.newton import NEWTON

    B = max(1, SIZES["tokens"] // T)
    example = NEWTON.example_inputs(
        T, batch=B, case=cell, dtype=torch.float32, device=SIZES["device"], heads=SIZES["H"], head_dim=SIZES["Dh"]
    )
    return B, example


def calls(fn, example, leaves):
    """The forward of form `fn` on `example` (h; `info` filled in when given) and a
    forward+backward through sum(h) to every leaf."""

    def forward(info=None):
        kwargs = dict(example.kwargs, info=info) if info is not None else example.kwargs
        return fn(*example.args, **kwargs)[0]

    def forward_backward():
        for x in leaves:
            x.grad = None
        forward().sum().backward()

    return forward, forward_backward


def bench(lengths, out_path: str, budget_s: float, reps: int, cells, forms) -> None:
    from recur.ops.newton import NEWTON, NewtonInfo

    for T in lengths:
        for cell in cells:
            B, example = case_inputs(T, cell)
            leaves = list(example.leaves().values())
            sequential_ms = {}
            for form in forms:
                fn = NEWTON.forms[form]
                row = {"what": "time", "family": "newton", "T": T, "B": B, "form": f"{cell} {form}"}
                forward, forward_backward = calls(fn, example, leaves)
                if form != "sequential":
                    info = NewtonInfo()
                    try:
                        with torch.no_grad():
                            h = forward(info=info)
                            if form == "triton":
                                # a check at full size: the same solve with the PyTorch scans
                                h_torch = NEWTON.forms["newton"](*example.args, **example.kwargs)[0]
                                row["rel_diff_vs_newton"] = float((h - h_torch).norm() / h_torch.norm())
                        row.update(iterations=info.iterations, converged=info.converged, fell_back=info.fell_back)
                    except Exception as e:
                        row["iterations_error"] = f"{type(e).__name__}: {str(e)[:300]}"
                # the Triton kernels compile again when T changes their tiles; the sequential
                # form (seconds per call at long T) needs its warm-up only once
                warm_up = form != "sequential" or T == lengths[0]
                for key, call in (("fwd", forward), ("fwdbwd", forward_backward)):
                    try:
                        with torch.set_grad_enabled(key == "fwdbwd"):
                            row[f"{key}_ms"], row[f"{key}_reps"] = milliseconds(call, budget_s, reps, warm_up)
                    except Exception as e:  # a form that cannot run is recorded, not fatal
                        row[f"{key}_error"] = f"{type(e).__name__}: {str(e)[:300]}"
                if form == "sequential":
                    sequential_ms = {key: row.get(f"{key}_ms") for key in ("fwd", "fwdbwd")}
                for key in ("fwd", "fwdbwd"):
                    if sequential_ms.get(key) and row.get(f"{key}_ms") and form != "sequential":
                        row[f"{key}_speedup_vs_sequential"] = sequential_ms[key] / row[f"{key}_ms"]
                write(row, out_path)
                if SIZES["device"] == "cuda":
                    torch.cuda.empty_cache()


# Alternatives to the scan kernel's launch settings (recur/ops/newton/triton.py), timed
# against the default and against the PyTorch chunked scan on the same blocks.
VARIANTS = {
    "default": {},
    "chunks of 32 steps": {"TILES": {"steps": 32}},
    "chunks of 8 steps": {"TILES": {"steps": 8}},
    "32 units per program": {"TILES": {"units": 32}},
    "128 units per program": {"TILES": {"units": 128}},
    "no pipelining": {"STAGES": 1},
    "one pass, no segments": {"MIN_SEGMENT": 1 << 30},
    "segments of at least 64 steps": {"MIN_SEGMENT": 64},
    "4x the programs": {"TARGET_PROGRAMS": 4 * 264},
}


def _launch_settings(launch, defaults: dict, changes: dict) -> None:
    """The launch module's settings: the defaults with `changes` (dicts updated, the rest
    replaced)."""
    for name, value in defaults.items():
        change = changes.get(name)
        if isinstance(value, dict):
            setattr(launch, name, {**value, **(change or {})})
        else:
            setattr(launch, name, value if change is None else change)


def scan_variants(out_path: str, T: int, budget_s: float, reps: int) -> None:
    """The forward and the adjoint scan of one Newton step alone (S = 1 and 2, B · T =
    tokens, H · Dh units, float32) with each of VARIANTS, then the PyTorch scans."""
    from recur.ops.newton import triton as launch
    from recur.ops.newton.scan import chunked_block_recurrence, reverse_block_linear_recurrence

    B = max(1, SIZES["tokens"] // T)
    gen = torch.Generator(device=SIZES["device"]).manual_seed(0)
    shape = (B, T, SIZES["H"], SIZES["Dh"])
    defaults = {name: getattr(launch, name) for name in ("TILES", "STAGES", "TARGET_PROGRAMS", "MIN_SEGMENT")}

    def timed(label, settings, call):
        row = {"what": "variant", "family": "newton", "T": T, "variant": label, "settings": settings}
        try:
            row["fwdbwd_ms"], _ = milliseconds(call, budget_s, reps)
        except Exception as e:  # a setting that does not compile is recorded, not fatal
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        write(row, out_path)

    for S in (1, 2):
        # contracting blocks: diagonal in [0, 0.9), off-diagonal in [0, 0.05)
        J = [[(0.9 if i == j else 0.05) * torch.rand(*shape, device=SIZES["device"], generator=gen) for j in range(S)] for i in range(S)]
        r = [torch.randn(*shape, device=SIZES["device"], generator=gen) for _ in range(S)]
        for label, changes in VARIANTS.items():
            _launch_settings(launch, defaults, changes)
            timed(f"S={S} forward + adjoint scan, Triton: {label}", changes, lambda J=J, r=r: (
                launch.triton_block_recurrence_solve(J, r), launch.triton_reverse_block_recurrence(J, r)))
        _launch_settings(launch, defaults, {})
        timed(f"S={S} forward + adjoint scan, PyTorch chunked", {}, lambda J=J, r=r: (
            chunked_block_recurrence(J, r), reverse_block_linear_recurrence(J, r)))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--T", type=int, nargs="+", default=[1024, 4096, 16384, 65536])
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--forms", nargs="+", default=list(FORMS), choices=FORMS)
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of timed calls per case")
    parser.add_argument("--reps", type=int, default=20, help="at most this many timed calls per case")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU in Triton's interpreter")
    args = parser.parse_args()
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
        SIZES.update(SMOKE_SIZES)
        args.T, args.budget, args.reps = [16, 20], 0.0, 1
    # the sequential form first at each T, so that the Newton forms' rows carry their speedup
    forms = sorted(args.forms, key=lambda f: f != "sequential")
    try:
        bench(args.T, args.out, args.budget, args.reps, args.cells, forms)
        for T in [args.T[0]] if args.smoke else [4096, 16384]:
            scan_variants(args.out, T, args.budget, args.reps)
    except Exception:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
