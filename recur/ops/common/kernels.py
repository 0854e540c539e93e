"""Triton pieces shared by the families' chunkwise kernels (imported only where Triton is)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def sequence_chunks(sh, cu_ptr, NC, H: tl.constexpr, VARLEN: tl.constexpr):
    """For the program of one sequence and head `sh` (= sequence · H + head) of a walk over
    chunks: (batch row, head, first chunk, number of chunks). With VARLEN the sequences of
    a ChunkLayout share batch row 0 and take chunks cu[seq] to cu[seq + 1]; otherwise
    sequence b is batch row b with all NC chunks."""
    seq, h = (sh // H).to(tl.int64), sh % H
    if VARLEN:
        first = tl.load(cu_ptr + seq)
        return seq * 0, h, first, tl.load(cu_ptr + seq + 1) - first
    else:
        return seq, h, 0, NC
