"""Packed variable-length batches.

A packed batch holds N sequences end to end in one row, [1, total, ...], with
`cu_seqlens` = [0, len_1, len_1 + len_2, ..., total]. Families that run on a padded batch
convert with `packed_to_padded` and back with `padded_to_packed`. Padding goes at the end
of each sequence, so valid positions never see it; an op keeps its final states exact by
padding with inputs that leave the state unchanged (zero key and zero log decay).

Chunkwise kernels take `ChunkLayout` instead: every sequence starts on a chunk boundary of
one row and takes whole chunks, so the row holds at most total + N·(chunk − 1) positions
rather than the padded batch's N · max_len, and a chunk never spans two sequences.
"""

from __future__ import annotations

import torch

__all__ = ["ChunkLayout", "check_cu_seqlens", "no_steps", "on_padded_batch", "packed_to_padded", "padded_to_packed"]


def check_cu_seqlens(cu_seqlens: torch.Tensor, batch_size: int, total: int) -> None:
    if batch_size != 1:
        raise ValueError(f"packed inputs (cu_seqlens given) must have batch size 1; got {batch_size}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must be a 1-D tensor [N + 1]; got shape {list(cu_seqlens.shape)}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cu_seqlens must be int32 or int64; got {cu_seqlens.dtype}")
    first, last = int(cu_seqlens[0]), int(cu_seqlens[-1])
    if first != 0 or last != total:
        raise ValueError(f"cu_seqlens must start at 0 and end at T = {total}; got {first} and {last}")
    if bool((cu_seqlens[1:] < cu_seqlens[:-1]).any()):
        raise ValueError("cu_seqlens must be non-decreasing")


def _padded_index(cu_seqlens: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Flat index into an [N, max_len] grid for every packed position."""
    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    max_len = int(lengths.max()) if lengths.numel() else 0
    seq_id = torch.repeat_interleave(torch.arange(lengths.numel(), device=cu_seqlens.device), lengths)
    pos = torch.arange(int(cu_seqlens[-1]), device=cu_seqlens.device) - cu_seqlens[seq_id]
    return seq_id * max_len + pos, max_len


def packed_to_padded(x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """[1, total, ...] -> [N, max_len, ...], zeros after each sequence's end."""
    index, max_len = _padded_index(cu_seqlens)
    n = cu_seqlens.numel() - 1
    out = x.new_zeros(n * max_len, *x.shape[2:])
    out = out.index_copy(0, index, x[0])
    return out.view(n, max_len, *x.shape[2:])


def padded_to_packed(x: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    """[N, max_len, ...] -> [1, total, ...]."""
    index, _ = _padded_index(cu_seqlens)
    return x.reshape(-1, *x.shape[2:]).index_select(0, index).unsqueeze(0)


def on_padded_batch(fn, cu_seqlens: torch.Tensor | None, time_inputs: dict[str, torch.Tensor | None], **others):
    """fn(**time_inputs, **others) -> (output, final_state), with a packed batch run as a padded
    one: each time input (None stays None) [1, total, ...] -> [N, max_len, ...], the output
    back to [1, total, ...]. Without `cu_seqlens`, fn runs on the inputs as they are. The
    padding follows each sequence's end, so fn must leave a state unchanged on zero inputs
    for the final states to be exact."""
    if cu_seqlens is None:
        return fn(**time_inputs, **others)
    padded = {name: None if x is None else packed_to_padded(x, cu_seqlens) for name, x in time_inputs.items()}
    output, final_state = fn(**padded, **others)
    return padded_to_packed(output, cu_seqlens), final_state


class ChunkLayout:
    """Where the sequences of a packed batch go in one row of whole chunks.

    index: position in that row of every packed position [total] (int64); cu_chunks:
    [N + 1] offsets of each sequence's chunks (int32); last_of: [chunks] the sequence whose
    last chunk each chunk is, -1 for the others (int32); length: the row's length, a
    multiple of `chunk`.
    """

    def __init__(self, cu_seqlens: torch.Tensor, chunk: int):
        device = cu_seqlens.device
        lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
        chunks = (lengths + chunk - 1) // chunk
        cu_chunks = torch.zeros(lengths.numel() + 1, dtype=torch.long, device=device)
        cu_chunks[1:] = chunks.cumsum(0)
        n_chunks = int(cu_chunks[-1])
        seq_id = torch.repeat_interleave(torch.arange(lengths.numel(), device=device), lengths)
        pos = torch.arange(int(cu_seqlens[-1]), device=device) - cu_seqlens[seq_id].long()
        self.index = cu_chunks[seq_id] * chunk + pos
        self.cu_chunks = cu_chunks.to(torch.int32)
        self.last_of = torch.full((n_chunks,), -1, dtype=torch.int32, device=device)
        ends = chunks > 0
        self.last_of[cu_chunks[1:][ends] - 1] = torch.arange(lengths.numel(), device=device, dtype=torch.int32)[ends]
        self.length = n_chunks * chunk

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        """[1, total, ...] -> [1, length, ...], zeros after each sequence's end."""
        out = x.new_zeros(self.length, *x.shape[2:])
        return out.index_copy(0, self.index, x[0]).unsqueeze(0)

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        """[1, length, ...] -> [1, total, ...]."""
        return x[0].index_select(0, self.index).unsqueeze(0)


def no_steps(v: torch.Tensor, initial_state: torch.Tensor | None, n: int, key_width: int, output_final_state: bool):
    """The result of a recurrence over zero time steps: no outputs, and each sequence's
    state as it came in (zeros without one), float32 or float64 like the kernels' states."""
    o = v.new_empty(v.shape)
    if not output_final_state:
        return o, None
    H, V = v.shape[2], v.shape[3]
    dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
    if initial_state is None:
        return o, torch.zeros(n, H, key_width, V, device=v.device, dtype=dtype)
    return o, initial_state.to(dtype, copy=True)
