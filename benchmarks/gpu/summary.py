"""Prints the rows of results.jsonl (written by bench.py and bench_mlstm.py) as markdown
tables: the timings as one table per family (gla, delta, mlstm)."""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    rows = [json.loads(line) for line in open(path) if line.strip()]
    print("| kernels | T | first call fwd+bwd (s, compile included) | second call (s) |")
    print("|---|---:|---:|---:|")
    for r in rows:
        if r["what"] == "first_call":
            print(f"| {r.get('kernels', r.get('gate'))} | {r.get('T', 2048)} | {r['first_s']:.1f} | {r['second_s']:.3f} |")
    timed = [r for r in rows if r["what"] == "time"]
    for family in sorted({r.get("family", "gla") for r in timed}):
        print()
        print(f"{family}:")
        print()
        print("| T | B | form | forward (ms) | fwd+bwd (ms) |")
        print("|---:|---:|---|---:|---:|")
        for r in sorted((r for r in timed if r.get("family", "gla") == family), key=lambda r: (r["T"], r["form"])):
            fwd = f"{r['fwd_ms']:.2f}" if "fwd_ms" in r else "error"
            both = f"{r['fwdbwd_ms']:.2f}" if "fwdbwd_ms" in r else "error"
            print(f"| {r['T']} | {r['B']} | {r['form']} | {fwd} | {both} |")
    stages = [r for r in rows if r["what"] == "stage"]
    if stages:
        print()
        print("| T | gate | stage | ms |")
        print("|---:|---|---|---:|")
        for r in stages:
            print(f"| {r['T']} | {r['gate']} | {r['stage']} | {r['ms']:.3f} |")
    for r in rows:
        if r["what"] == "variant":
            result = f"{r['fwdbwd_ms']:.2f} ms" if "fwdbwd_ms" in r else r["error"]
            print(f"variant {r.get('family', 'gla')} {r['variant']} {r['settings']}: fwd+bwd {result} at T={r['T']}")
    for r in timed:
        if "iterations" in r:
            speedups = ", ".join(
                f"{key} {r[f'{key}_speedup_vs_sequential']:.3g}x" for key in ("fwd", "fwdbwd")
                if f"{key}_speedup_vs_sequential" in r
            )
            check = f", rel. diff. from the PyTorch scans {r['rel_diff_vs_newton']:.1e}" if "rel_diff_vs_newton" in r else ""
            print(f"{r['form']} T={r['T']}: {r['iterations']} Newton iterations; over sequential: {speedups or '-'}{check}")
    for r in timed:
        if "first_fwd_s" in r:
            print(f"{r['form']}: first forward call {r['first_fwd_s']:.1f} s (autotuning included)")
        for key in ("fwd_error", "fwdbwd_error", "first_fwd_error"):
            if key in r:
                print(f"{r['form']} T={r['T']} {key}: {r[key]}")


if __name__ == "__main__":
    main(sys.argv[1])
