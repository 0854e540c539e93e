"""Every peer of `recur bench ops` computes what the row it is compared with computes: its
output and gradients on the benchmark's own cases (float64 inputs, small T) against recur's
naive form. Peers that compute in float32 whatever the input (FLA's references) are held to
float32 accuracy; each test is skipped where its peer is not installed."""

from __future__ import annotations

import pytest
import torch

from recur.bench.ops import OP_BENCHES, MissingPeer, OpBench, OpCase, peer_case, run_op_bench
from recur.ops.delta import naive_delta_product, naive_delta_rule
from recur.ops.gla import naive_gla
from recur.ops.mlstm import naive_mlstm
from tests.helpers import assert_close

# float32 arithmetic over a few dozen steps, relative to the whole tensor
FLOAT32_TOL = 1e-5
FLOAT64_TOL = 1e-10
CPU = torch.device("cpu")


def _peer(cases: list, form: str) -> OpCase:
    found = [c for c in cases if c.form.startswith(form)]
    assert found, f"no case {form!r} among {[c.form for c in cases]}"
    assert isinstance(found[0], OpCase), f"{form} did not run: {found[0]}"
    return found[0]


def _grads(output: torch.Tensor, inputs: list[torch.Tensor], weight: torch.Tensor) -> list[torch.Tensor]:
    """Gradients of Σ weight · output: a weighted sum, so that a transposed output shows."""
    return list(torch.autograd.grad((output.double() * weight).sum(), inputs, allow_unused=True))


def _compare(name: str, peer_out, reference, peer_inputs, reference_inputs, tol: float) -> None:
    assert_close(f"{name} output", peer_out.double(), reference.double(), tol)
    weight = torch.randn(reference.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    peer_grads = _grads(peer_out, peer_inputs, weight)
    reference_grads = _grads(reference, reference_inputs, weight)
    for i, (actual, expected) in enumerate(zip(peer_grads, reference_grads, strict=True)):
        assert actual is not None, f"{name}: input {i} gets no gradient"
        assert_close(f"{name} gradient of input {i}", actual.reshape(expected.shape), expected, tol)


def test_fla_gla_references_are_gla():
    pytest.importorskip("fla.ops.gla.naive")
    cases = OP_BENCHES["gla"].build(T=40, device=CPU, dtype=torch.float64)
    for form, gate in (("FLA naive_recurrent_gla", "per-channel"), ("FLA naive_chunk_simple_gla", "per-head")):
        peer = _peer(cases, form)
        assert peer.computes == f"{gate} gate" and peer.peer == "fla-core"
        q, k, v, S0, g = peer.inputs
        reference = naive_gla(q, k, v, g=g, initial_state=S0)[0]
        _compare(form, peer.run(), reference, peer.inputs, peer.inputs, FLOAT32_TOL)


def test_fla_gated_delta_rule_reference_is_the_delta_rule():
    pytest.importorskip("fla.ops.gated_delta_rule.naive")
    cases = OP_BENCHES["delta"].build(T=40, device=CPU, dtype=torch.float64)
    peer = _peer(cases, "FLA naive_chunk_gated_delta_rule")
    q, k, v, beta, g = peer.inputs
    reference = naive_delta_rule(q, k, v, beta=beta, g=g)[0]
    _compare("delta", peer.run(), reference, peer.inputs, peer.inputs, FLOAT32_TOL)


def test_fla_gated_delta_rule_on_interleaved_steps_is_delta_product():
    pytest.importorskip("fla.ops.gated_delta_rule.naive")
    cases = OP_BENCHES["delta_product"].build(T=20, device=CPU, dtype=torch.float64)
    peer = _peer(cases, "FLA naive_chunk_gated_delta_rule")
    q, k, v, beta, g = peer.inputs
    reference = naive_delta_product(q, k, v, beta=beta, g=g)[0]
    _compare("delta_product", peer.run(), reference, peer.inputs, peer.inputs, FLOAT32_TOL)


def _mlstm_reference(peer: OpCase, **kwargs) -> torch.Tensor:
    q, k, v, i, f = (x.transpose(1, 2) for x in peer.inputs[:5])
    return naive_mlstm(q, k, v, i=i, f=f, **kwargs)[0].transpose(1, 2)


def test_mlstm_kernels_native_forms_are_the_mlstm():
    pytest.importorskip("mlstm_kernels.torch.chunkwise.native")
    cases = OP_BENCHES["mlstm"].build(T=128, device=CPU, dtype=torch.float64)
    exact = _peer(cases, "mlstm_kernels chunkwise native_autograd")
    C0, n0, m0 = exact.inputs[5:]
    reference = _mlstm_reference(exact, initial_state=(C0, n0, m0))
    _compare("native_autograd", exact.run(), reference, exact.inputs, exact.inputs, FLOAT64_TOL)

    sigmoid = _peer(cases, "mlstm_kernels parallel native_siging_autograd")
    reference = _mlstm_reference(sigmoid, input_gate="sigmoid")
    _compare("native_siging_autograd", sigmoid.run(), reference, sigmoid.inputs, sigmoid.inputs, FLOAT64_TOL)


def test_mlstm_kernels_own_backward_differs_as_the_table_says():
    """native_custbw: the same forward; its backward treats the normaliser as a constant, so
    only v and C_0 get their exact gradients, q, k and the gates others, n_0 and m_0 none."""
    pytest.importorskip("mlstm_kernels.torch.chunkwise.native")
    cases = OP_BENCHES["mlstm"].build(T=128, device=CPU, dtype=torch.float64)
    peer = _peer(cases, "mlstm_kernels chunkwise native_custbw")
    q, k, v, i, f, C0, n0, m0 = peer.inputs
    reference = _mlstm_reference(peer, initial_state=(C0, n0, m0))
    out = peer.run()
    assert_close("native_custbw output", out, reference, FLOAT64_TOL)
    weight = torch.randn(reference.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = dict(zip("q k v i f C0 n0 m0".split(), _grads(out, peer.inputs, weight), strict=True))
    exact = dict(zip("q k v i f C0 n0 m0".split(), _grads(reference, peer.inputs, weight), strict=True))
    for name in ("v", "C0"):
        assert_close(f"native_custbw gradient of {name}", got[name], exact[name], FLOAT64_TOL)
    for name in ("q", "k", "i", "f"):
        assert (got[name] - exact[name]).norm() > 0.01 * exact[name].norm(), name
    assert got["n0"] is None or got["n0"].abs().max() == 0
    assert got["m0"] is None or got["m0"].abs().max() == 0
    assert "treats the normaliser max(|nᵀq|, e^(−m)) as a constant" in OP_BENCHES["mlstm"].shapes


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_torch_and_flashrnn_are_the_layer(cell):
    family = "rnn" if cell == "lstm" else "rnn_gru"
    cases = OP_BENCHES[family].build(T=12, device=CPU, dtype=torch.float64)
    naive = _peer(cases, f"naive ({cell})")
    x, W, R, b, s0 = naive.inputs
    reference = naive.run().flatten(2)
    weight = torch.randn(reference.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    dx, dW, dR, ds0 = _grads(reference, [x, W, R, s0], weight)

    module = _peer(cases, "torch.nn.LSTM" if cell == "lstm" else "torch.nn.GRU")
    assert module.peer == "torch"
    S = s0.shape[1]
    x_copy, states, (weight_ih, weight_hh) = module.inputs[0], module.inputs[1 : 1 + S], module.inputs[1 + S : 3 + S]
    out = module.run()
    assert_close(f"torch.nn ({cell}) output", out, reference, FLOAT64_TOL)
    got = _grads(out, [x_copy, weight_ih, weight_hh, *states], weight)
    for name, actual, expected in zip(["x", "W", "R"], got[:3], [dx, dW, dR], strict=True):
        assert_close(f"torch.nn ({cell}) gradient of {name}", actual.reshape(expected.shape), expected, FLOAT64_TOL)
    for j, actual in enumerate(got[3:]):
        assert_close(f"torch.nn ({cell}) gradient of state {j}", actual[0], ds0[:, j, 0], FLOAT64_TOL)

    pytest.importorskip("flashrnn.flashrnn")
    flash = _peer(cases, f"flashrnn vanilla ({cell})")
    out = flash.run().flatten(2)
    assert_close(f"flashrnn ({cell}) output", out, reference, FLOAT64_TOL)
    x_copy, W_copy, R_copy, _, states = flash.inputs
    got = _grads(out, [x_copy, W_copy, R_copy, states], weight)
    # its states are [S, B, 1, H, D]
    got[3] = got[3][:, :, 0].transpose(0, 1)
    for name, actual, expected in zip(["x", "W", "R", "initial state"], got, [dx, dW, dR, ds0], strict=True):
        assert_close(f"flashrnn ({cell}) gradient of {name}", actual, expected, FLOAT64_TOL)


def test_a_peer_that_does_not_import_or_fails_is_a_note(monkeypatch):
    x = torch.randn(2, 3, requires_grad=True)

    def failing():
        raise RuntimeError("no kernel for this device\nsecond line")

    def build(T, device, dtype):
        return [
            OpCase("naive (doubling)", lambda: x * 2, [x], computes="doubling"),
            OpCase("chunk (doubling)", lambda: x + x, [x], computes="doubling"),
            peer_case("absent peer", "no_such_package.ops:fn", "no-such-package",
                      lambda fn: (fn, [x]), computes="doubling"),
            peer_case("broken peer", "recur.bench.ops:no_such_function", "recur",
                      lambda fn: (fn, [x]), computes="doubling"),
            OpCase("failing peer", failing, [x], computes="doubling", peer="torch"),
            OpCase("fast peer", lambda: x.mul(2), [x], computes="doubling", peer="torch"),
        ]

    monkeypatch.setitem(OP_BENCHES._entries, "doubling", OpBench(build, "x ↦ 2x"))
    run = run_op_bench("doubling", [3], CPU, torch.float32, repeat=1, skip_baseline_above=8, progress=lambda _: None)
    assert [r["form"] for r in run.rows] == ["naive (doubling)", "chunk (doubling)", "fast peer"]
    assert run.notes == [
        "absent peer: no-such-package is not installed (pip install 'recur[bench]')",
        "broken peer: recur.bench.ops:no_such_function does not import here: AttributeError: "
        "module 'recur.bench.ops' has no attribute 'no_such_function'",
        "failing peer: failed at T = 3: RuntimeError: no kernel for this device",
    ]
    fast = run.rows[2]
    for row in run.rows[:2]:
        assert row["fastest_peer"] == "fast peer"
        assert row["vs_peer_fwdbwd"] == pytest.approx(fast["fwdbwd_s"] / row["fwdbwd_s"])
    assert fast["vs_peer_fwdbwd"] is None and isinstance(peer_case("x", "no_such_package:fn", "p", None,
                                                                   computes="c"), MissingPeer)
