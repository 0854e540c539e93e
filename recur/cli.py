"""The `recur` command: bench | list (train, eval, generate and plot join as they land)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def _dtype(name: str) -> torch.dtype:
    dtypes = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in dtypes:
        raise argparse.ArgumentTypeError(f"dtype must be one of {sorted(dtypes)}; got {name!r}")
    return dtypes[name]


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    families = sorted(bench.OP_BENCHES) if args.family == "all" else [args.family]
    for family in families:
        if family not in bench.OP_BENCHES:
            print(f"error: --family must be one of {sorted(bench.OP_BENCHES) + ['all']}; got {family!r}", file=sys.stderr)
            return 2
    out = Path(args.out) if args.out else Path("benchmarks") / f"{'gpu' if device.type == 'cuda' else 'cpu'}-ops.md"
    for family in families:
        rows = bench.run_op_bench(
            family, args.T, device, args.dtype, args.repeat, args.max_naive_T, progress=print
        )
        command = f"recur bench ops --family {family} --device {device.type} --dtype {str(args.dtype).removeprefix('torch.')} --T {' '.join(map(str, args.T))}"
        section = bench.render_section(family, rows, device, args.dtype, command)
        bench.write_section(out, family, section, f"Op benchmarks ({device.type})")
        print(section)
    print(f"wrote {out}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .layers import MIXERS

    print("mixers:")
    for name, cls in sorted(MIXERS.items()):
        doc = (cls.__module__ and sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        print(f"  {name:<20} {doc[0] if doc else ''}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recur", description="Recurrent sequence models: benchmarks and tools.")
    sub = parser.add_subparsers(dest="command", required=True)

    bench = sub.add_parser("bench", help="speed and memory benchmarks")
    bench_sub = bench.add_subparsers(dest="what", required=True)
    ops = bench_sub.add_parser("ops", help="op forms against their naive loop")
    ops.add_argument("--family", default="gla", help="op family, or 'all'")
    ops.add_argument("--device", default="cpu", help="cpu or cuda")
    ops.add_argument("--dtype", type=_dtype, default=torch.float32)
    ops.add_argument("--T", type=int, nargs="+", default=[512, 2048, 8192], help="sequence lengths")
    ops.add_argument("--repeat", type=int, default=3)
    ops.add_argument("--max-naive-T", type=int, default=8192, help="skip the naive loop above this length")
    ops.add_argument("--out", default=None, help="results file (default benchmarks/<device>-ops.md)")
    ops.set_defaults(func=cmd_bench)

    lister = sub.add_parser("list", help="list the registered mixers")
    lister.set_defaults(func=cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
