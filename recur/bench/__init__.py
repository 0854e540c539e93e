"""Speed and memory benchmarks. Every module named ops_<family>.py registers its cases."""

import importlib
import pkgutil

from .ops import (
    OP_BENCHES,
    MissingPeer,
    OpBenchRun,
    OpCase,
    peer_case,
    register_op_bench,
    render_section,
    run_op_bench,
    write_section,
)

for _module in pkgutil.iter_modules(__path__):
    if _module.name.startswith("ops_"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "OP_BENCHES", "MissingPeer", "OpBenchRun", "OpCase", "peer_case", "register_op_bench", "render_section",
    "run_op_bench", "write_section",
]
