"""ops.common: the parallel scan, segment sums, chunk state passing and packing."""

from __future__ import annotations

import pytest
import torch

from recur.ops.common import (
    chunk_state_passing,
    linear_recurrence,
    linear_recurrence_loop,
    on_padded_batch,
    packed_to_padded,
    padded_to_packed,
    segsum,
    suffix_sum_exclusive,
)
from tests.helpers import assert_close, grads, weighted_sum


@pytest.mark.parametrize("T", [1, 2, 7, 64, 1000])
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("with_initial", [False, True])
def test_scan_matches_loop_forward_and_backward(T, dtype, with_initial):
    gen = torch.Generator().manual_seed(T)
    a = torch.rand(3, T, 2, 5, generator=gen, dtype=torch.float64).to(dtype)
    if dtype.is_complex:
        a = a * torch.exp(1j * torch.randn(3, T, 2, 5, generator=gen, dtype=torch.float64))
    b = torch.randn(3, T, 2, 5, generator=gen, dtype=dtype)
    h0 = torch.randn(3, 2, 5, generator=gen, dtype=dtype) if with_initial else None
    results = []
    for solve in (linear_recurrence, linear_recurrence_loop):
        leaves = [x.clone().requires_grad_() if x is not None else None for x in (a, b, h0)]
        h = solve(*leaves)
        loss = weighted_sum(h.real, h.imag) if dtype.is_complex else weighted_sum(h)
        results.append([h, *grads(loss, leaves)])
    for name, x, y in zip(["h", "da", "db", "dh0"], *results):
        if y is not None:
            assert_close(name, x, y, 1e-12)


def test_scan_broadcasts_coefficients_and_rejects_bad_shapes():
    a = torch.rand(2, 9, 1, dtype=torch.float64)
    b = torch.randn(2, 9, 4, dtype=torch.float64)
    assert_close("broadcast", linear_recurrence(a, b), linear_recurrence_loop(a.expand_as(b), b), 1e-13)
    with pytest.raises(ValueError, match="initial has shape"):
        linear_recurrence(a, b, torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="dtype"):
        linear_recurrence(a.float(), b)


def test_segsum_is_direct_and_handles_minus_inf():
    g = torch.tensor([-1.0, -2.0, float("-inf"), -3.0], dtype=torch.float64)
    expected = torch.tensor(
        [[0, -torch.inf, -torch.inf, -torch.inf], [-2, 0, -torch.inf, -torch.inf],
         [-torch.inf, -torch.inf, 0, -torch.inf], [-torch.inf, -torch.inf, -3, 0]],
        dtype=torch.float64,
    )
    assert torch.equal(segsum(g), expected)
    per_channel = torch.randn(2, 6, 3, dtype=torch.float64)
    assert torch.equal(segsum(per_channel, dim=-2), segsum(per_channel.transpose(-1, -2)).permute(0, 2, 3, 1))
    # a long strong-gate segment sums to exactly the number of steps times the gate
    strong = torch.full((64,), -20.0)
    assert segsum(strong)[63, 62] == -20.0 and segsum(strong)[63, 0] == -20.0 * 63
    assert torch.equal(suffix_sum_exclusive(g, 0), torch.tensor([-torch.inf, -torch.inf, -3.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("per_key", [False, True])
def test_chunk_state_passing_matches_loop(per_key):
    gen = torch.Generator().manual_seed(0)
    B, N, H, K, V = 2, 7, 3, 4, 5
    log_decay = -torch.rand(*((B, N, H, K) if per_key else (B, N, H)), generator=gen, dtype=torch.float64)
    local = torch.randn(B, N, H, K, V, generator=gen, dtype=torch.float64)
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=torch.float64)

    def loop(log_decay, local, h0):
        decay = log_decay.exp()
        decay = decay[..., None] if per_key else decay[..., None, None]
        S, states = h0, []
        for n in range(N):
            states.append(S)
            S = decay[:, n] * S + local[:, n]
        return torch.stack(states, 1), S

    results = []
    for solve in (chunk_state_passing, loop):
        leaves = [x.clone().requires_grad_() for x in (log_decay, local, h0)]
        states_in, final = solve(*leaves)
        results.append([states_in, final, *grads(weighted_sum(states_in, final), leaves)])
    for name, x, y in zip(["states_in", "final", "d_decay", "d_local", "dh0"], *results):
        assert_close(name, x, y, 1e-12)


def test_packing_round_trip():
    cu = torch.tensor([0, 3, 3, 10])
    x = torch.randn(1, 10, 2)
    padded = packed_to_padded(x, cu)
    assert padded.shape == (3, 7, 2)
    assert torch.equal(padded[0, :3], x[0, :3]) and padded[0, 3:].abs().sum() == 0
    assert torch.equal(padded_to_packed(padded, cu), x)


def test_on_padded_batch_pads_the_time_inputs_and_packs_the_output():
    cu = torch.tensor([0, 3, 3, 10])
    x, y = torch.randn(1, 10, 2), torch.randn(1, 10)
    seen = {}

    def run(x, y, g, scale):
        seen.update(x=x, y=y, g=g)
        return x * scale + y[..., None], "state"

    output, state = on_padded_batch(run, cu, {"x": x, "y": y, "g": None}, scale=2.0)
    assert seen["x"].shape == (3, 7, 2) and seen["y"].shape == (3, 7) and seen["g"] is None
    assert state == "state" and torch.equal(output, x * 2.0 + y[..., None])
    # without offsets the inputs go through as they are
    output, _ = on_padded_batch(run, None, {"x": x, "y": y, "g": None}, scale=2.0)
    assert seen["x"] is x and torch.equal(output, x * 2.0 + y[..., None])


def test_chunk_layout_puts_every_sequence_on_whole_chunks():
    from recur.ops.common import ChunkLayout

    cu_seqlens = torch.tensor([0, 5, 5, 75, 139])
    layout = ChunkLayout(cu_seqlens, 64)
    # lengths 5, 0, 70, 64 take 1, 0, 2 and 1 chunks
    assert layout.cu_chunks.tolist() == [0, 1, 1, 3, 4]
    assert layout.last_of.tolist() == [0, -1, 2, 3]
    assert layout.length == 256
    x = torch.randn(1, 139, 3)
    packed = layout.pack(x)
    assert packed.shape == (1, 256, 3)
    assert torch.equal(packed[0, 64:128], x[0, 5:69]) and torch.equal(packed[0, 128:134], x[0, 69:75])
    assert not packed[0, 5:64].any() and not packed[0, 134:192].any()
    assert torch.equal(layout.unpack(packed), x)
