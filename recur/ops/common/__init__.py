"""Primitives shared by the families: scans, segment sums, chunk state passing, packing."""

from .checks import check_per_head, check_qkv, check_state, resolve_scale, state_dtype
from .chunk import chunk_state_passing
from .scan import linear_recurrence, linear_recurrence_loop
from .segsum import segsum, suffix_sum_exclusive
from .spec import matrix_spec_start
from .varlen import (
    ChunkLayout,
    check_cu_seqlens,
    no_steps,
    on_padded_batch,
    packed_to_padded,
    padded_to_packed,
)

__all__ = [
    "ChunkLayout",
    "check_cu_seqlens",
    "check_per_head",
    "check_qkv",
    "check_state",
    "chunk_state_passing",
    "linear_recurrence",
    "linear_recurrence_loop",
    "matrix_spec_start",
    "no_steps",
    "on_padded_batch",
    "packed_to_padded",
    "padded_to_packed",
    "resolve_scale",
    "segsum",
    "state_dtype",
    "suffix_sum_exclusive",
]
