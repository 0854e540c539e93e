"""The memory family: test-time memorisation (TTT, Titans, Miras' Moneta, Yaad and Memora,
ATLAS and OmegaNet). The state is the weights W of a memory M_W, a linear map or an MLP; each
token (or mini-batch of b tokens) takes a step on an attentional-bias objective
ℓ(M_W(φ(k)), v), with retention α_t, learning rate η_t and momentum θ_t; the output is
M_W(φ(q)).

`memory(q, k, v, eta=..., impl=...)` runs the form `impl` names: "naive" (the spec, a loop
over time) or "chunk" (mini-batch by mini-batch, the gradients of a mini-batch in one
batched pass, the same model for the same `minibatch`). "chunk" covers every option: the
ℓ2 / ℓp / Huber objectives, ℓ2, ℓq and KL retention, gradient descent, momentum and
Newton–Schulz, any depth, the Omega rule's window and the feature map. Rows at different
places in their mini-batches run naive ("auto" picks it; impl="chunk" says so). The state
is a `memory_state_type(depth)` named tuple, batch first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..common.examples import RandomInputs, check_case
from ..family import Example, Family, Form, StateLayout, register_family
from .checks import check_memory_inputs
from .chunk import chunk_memory as _chunk
from .model import layer_widths, memory_state_type
from .naive import naive_memory as _spec

# the options of each example case; "phase" is where in its mini-batch the initial state
# is. The LayerNorm
# variant of the MLP is left to tests/ops/test_memory.py on shorter sequences: its gradient
# grows as the memory's output shrinks, which makes the inner optimisation chaotic, and
# rounding differences between any two forms grow about tenfold every 20 steps.
CASES = {
    "linear": {"depth": 1, "minibatch": 1, "optimizer": "gd", "phase": 0},
    "linear_momentum": {"depth": 1, "minibatch": 4, "optimizer": "momentum", "phase": 1},
    "mlp": {"depth": 2, "hidden": 12, "residual": True, "minibatch": 4, "optimizer": "momentum", "phase": 2},
    "omega": {"depth": 1, "window": 3, "feature_degree": 2, "minibatch": 3, "optimizer": "momentum", "phase": 0},
    # ℓp grows its step with the residual to the p − 1: p = 3 at these rates diverges
    "lp": {"depth": 2, "hidden": 6, "objective": "lp", "p": 2.5, "minibatch": 2, "optimizer": "gd", "phase": 0},
    "huber": {"depth": 2, "hidden": 6, "objective": "huber", "minibatch": 2, "optimizer": "gd", "phase": 1},
    # ATLAS: the Omega rule, features of degree 2, momentum and Newton–Schulz steps
    "atlas": {
        "depth": 2, "hidden": 10, "window": 3, "feature_degree": 2, "minibatch": 4,
        "optimizer": "newton_schulz", "ns_steps": 3, "phase": 2,
    },
    # Moneta: ℓq retention of the accumulator (its ℓp bias is the "lp" case: both together
    # part two forms by rounding just above 1e-10 at 100 tokens); Memora: KL retention
    "moneta": {
        "depth": 2, "hidden": 6, "retention": "lq", "q_norm": 4.0, "minibatch": 4,
        "optimizer": "gd", "phase": 1,
    },
    "memora": {
        "depth": 2, "hidden": 6, "retention": "kl", "simplex_scale": 2.0, "minibatch": 4, "optimizer": "momentum",
        "phase": 3,
    },
}


def unsupported(form: str, arguments: dict) -> list[str]:
    """The arguments `form` cannot compute, as "name=value"."""
    if form != "chunk":
        return []
    missing = []
    # rows at different places in their mini-batches (e.g. prompts of different lengths,
    # decoded together) have mini-batch boundaries at different steps: no common chunking
    state = arguments.get("initial_state")
    if state is not None and state.phase.numel() and not bool((state.phase == state.phase[0]).all()):
        missing.append(f"initial_state.phase={state.phase.tolist()} (one phase per batch row)")
    return missing


class MemoryFamily(Family):
    """A family whose "auto" picks the naive form for the arguments only it computes (rows
    at different mini-batch phases), and whose chunk form, asked for them, says which."""

    def resolve(self, impl, arguments, steps=False):
        if not steps and impl == "auto" and unsupported(self.default, arguments):
            impl = "naive"
        form = super().resolve(impl, arguments, steps)
        missing = [] if steps else unsupported(impl, arguments)
        if missing:
            raise ValueError(f"impl={impl!r} of the memory family does not compute {', '.join(missing)}; use impl='naive' or 'auto'")
        return form


def example_inputs(
    T: int, *, batch: int = 2, case: str = "linear", dtype=torch.float64, device=None, seed: int = 0,
    heads: int = 2, key_dim: int = 8, value_dim: int = 8, **options,
) -> Example:
    """Unit q, k [B, T, H, K], v [B, T, H, V], η = σ(·)/2, a mild log retention g, θ = σ(·) for
    momentum, γ = σ(·) for a window, δ = 1 + σ(·)/2 for Huber, the options of `case`
    (overridden by `options`) and a random initial state; every float input requires grad."""
    check_case(case, CASES)
    config = {**CASES[case], **options}
    phase = config.pop("phase", 0)
    draw = RandomInputs(seed, dtype, device)
    B, H, K, V = batch, heads, key_dim, value_dim
    unit = lambda *shape: F.normalize(draw.normal(*shape, grad=False), dim=-1).requires_grad_()  # noqa: E731
    squashed = lambda scale, shift=0.0: (shift + scale * draw.normal(B, T, H, grad=False).sigmoid()).requires_grad_()  # noqa: E731
    q, k, v = unit(B, T, H, K), unit(B, T, H, K), draw.normal(B, T, H, V)
    kwargs = {"eta": squashed(0.5), "g": draw.log_decay(B, T, H, strength=0.2), **config}
    if config.get("optimizer") in ("momentum", "newton_schulz"):
        kwargs["theta"] = squashed(1.0)
    if config.get("window", 1) > 1:
        kwargs["gamma"] = squashed(1.0)
    if config.get("objective") == "huber":
        kwargs["huber_threshold"] = squashed(0.5, shift=1.0)
    depth, window = config.get("depth", 1), config.get("window", 1)
    widths = layer_widths(config.get("feature_degree", 1) * K, V, depth, config.get("hidden"))
    matrices = [draw.normal(B, H, a, b, std=0.3) for _ in range(3) for a, b in widths]
    if config.get("retention") == "kl":
        # Memora's weights live on a scaled simplex: positive rows that sum to c
        scale = config.get("simplex_scale", 1.0)
        matrices = [scale * m.detach().softmax(-1).requires_grad_() for m in matrices]
    window_state = [draw.normal(B, H, window - 1, K), draw.normal(B, H, window - 1, V), draw.uniform(B, H, window - 1)]
    phases = torch.full((B,), float(phase), dtype=dtype, device=draw.device)
    kwargs["initial_state"] = memory_state_type(depth)(*matrices, *window_state, phases)
    return Example((q, k, v), kwargs)


MEMORY = register_family(MemoryFamily(
    name="memory",
    paper=(
        "Titans: Learning to Memorize at Test Time (Behrouz, Zhong, Mirrokni, arXiv:2501.00663); It's All "
        "Connected (Miras, Behrouz et al., arXiv:2504.13173); ATLAS: Learning to Optimally Memorize the "
        "Context at Test Time (Behrouz et al., arXiv:2505.23735); Learning to (Learn at Test Time) "
        "(Sun et al., arXiv:2407.04620)"
    ),
    recurrence=(
        "Test-time memorisation: S_t = θ_t S_{t-1} − η_t Σ_window γ_i ∇ℓ(M_A(φ(k_i)), v_i), "
        "W_t = α_t W_{t-1} + S_t, y_t = M_{W_t}(φ(q_t))"
    ),
    spec=_spec,
    forms={
        "chunk": Form(
            _chunk,
            summary=(
                "mini-batch by mini-batch: batched gradients at the mini-batch's start, decays as matrices "
                "(every objective, retention and optimiser; per-token weights for ℓq/KL retention and Newton–Schulz)"
            ),
        ),
    },
    check=check_memory_inputs,
    state=StateLayout({
        "W1..WL": "[B, H, in_l, out_l] (the memory's weights)",
        "S1..SL": "[B, H, in_l, out_l] (momenta)",
        "A1..AL": "[B, H, in_l, out_l] (the weights the current mini-batch started from)",
        "window_k, window_v, window_gamma": "[B, H, c − 1, K], [B, H, c − 1, V], [B, H, c − 1]",
        "phase": "[B] (tokens into the current mini-batch)",
    }),
    time_inputs=("q", "k", "v", "eta", "g", "theta", "gamma", "huber_threshold"),
    example_inputs=example_inputs,
    cases=tuple(CASES),
))

memory, naive_memory, chunk_memory = MEMORY.functions("naive", "chunk")

__all__ = ["MEMORY", "chunk_memory", "memory", "memory_state_type", "naive_memory"]
