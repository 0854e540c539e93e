"""HMM emulation: predict the next symbol of sequences a hidden Markov model emits, scored
against the HMM's own likelihood.

After "Mechanistic Interpretability of RNNs emulating Hidden Markov Models" (Torre,
Viscione, Pompe, Grewe, Mante; NeurIPS 2025, arXiv:2510.25674). The paper drives an RNN
with noise and fits its free-running emissions to the HMM's by a Sinkhorn divergence; here
the network reads the symbols and predicts the next one, which makes emulation a number: a
network that emulates the HMM predicts each symbol as well as the HMM itself, whose
predictive distribution p(x_t | x_<t) the forward algorithm gives exactly. The HMM

    s_1 ~ π,   s_t ~ T[s_{t-1}, :],   x_t ~ E[s_t, :]

has given or random (seeded; optionally sticky) transition T [S, S] and emission E [S, V]
matrices and a uniform π. Inputs are a start token then x_1 … x_{T-1}, labels x_1 … x_T. The metrics, in
nats per token: `nll`, the model's cross-entropy; `hmm_nll`, the HMM's (forward algorithm,
float64); `nll_gap`, their difference, 0 for a perfect emulation (the mean KL divergence
from the HMM's predictions to the model's, in expectation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import Batch, Task, TaskConfig, register_task


@dataclass(kw_only=True)
class HMMConfig(TaskConfig):
    num_states: int = 4
    num_symbols: int = 4
    # symbols per sequence
    seq_len: int = 64
    # the seed of the random HMM (the data have the run's seed): one HMM per hmm_seed
    hmm_seed: int = 0
    # how peaked the random rows are: each row is softmax(N(0, sharpness²) logits)
    sharpness: float = 2.0
    # random transitions stay in their state with at least this probability:
    # T = stay I + (1 − stay) T_random; sticky states make the past matter for longer
    stay: float = 0.0
    # given matrices, row-major (rows sum to 1), instead of random ones: T is
    # num_states × num_states, E is num_states × num_symbols
    transition: tuple[float, ...] | None = None
    emission: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("num_states", "num_symbols", "seq_len"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"task.{field} must be a positive int; got {value!r}")
        if not self.sharpness >= 0:
            raise ValueError(f"task.sharpness must be >= 0; got {self.sharpness!r}")
        if not 0 <= self.stay <= 1:
            raise ValueError(f"task.stay must be in [0, 1]; got {self.stay!r}")
        for field, cols in (("transition", self.num_states), ("emission", self.num_symbols)):
            values = getattr(self, field)
            if values is None:
                continue
            values = tuple(float(v) for v in values)
            setattr(self, field, values)
            rows = torch.tensor(values, dtype=torch.float64)
            if rows.numel() != self.num_states * cols:
                raise ValueError(
                    f"task.{field} must hold num_states × {cols} = {self.num_states * cols} values (row-major); "
                    f"got {rows.numel()}"
                )
            rows = rows.view(self.num_states, cols)
            if (rows < 0).any() or not torch.allclose(rows.sum(1), torch.ones(self.num_states, dtype=torch.float64)):
                raise ValueError(f"task.{field} rows must be probabilities (>= 0, summing to 1); got {rows.tolist()}")


def random_hmm(num_states: int, num_symbols: int, *, seed: int, sharpness: float = 2.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(T [S, S], E [S, V]) float64, each row softmax(N(0, sharpness²) logits), from `seed`."""
    g = torch.Generator().manual_seed(seed)
    T = torch.softmax(torch.randn(num_states, num_states, generator=g, dtype=torch.float64) * sharpness, -1)
    E = torch.softmax(torch.randn(num_states, num_symbols, generator=g, dtype=torch.float64) * sharpness, -1)
    return T, E


def hmm_predictive(symbols: torch.Tensor, transition: torch.Tensor, emission: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """The forward algorithm: [N, T, V] float64 log p(x_t = v | x_<t) for symbols [N, T].

    The filtered state α_t = p(s_t | x_≤t) is renormalised at every step, so nothing
    underflows however long the sequence.
    """
    T_, E, pi = (m.to(torch.float64) for m in (transition, emission, initial))
    N, T = symbols.shape
    belief = pi.expand(N, -1)  # p(s_1) [N, S]
    logs = []
    for t in range(T):
        # p(x_t | x_<t) = Σ_s p(s_t = s | x_<t) E[s, x_t]   [N, V]
        predictive = belief @ E
        logs.append(predictive.log())
        # condition on x_t: α_t ∝ p(s_t | x_<t) E[s_t, x_t]
        alpha = belief * E[:, symbols[:, t]].T
        alpha = alpha / alpha.sum(-1, keepdim=True)
        # predict the next state: p(s_{t+1} | x_≤t) = α_t T
        belief = alpha @ T_
    return torch.stack(logs, 1) if logs else torch.zeros(N, 0, E.shape[1], dtype=torch.float64)


def hmm_log_likelihood(symbols: torch.Tensor, transition: torch.Tensor, emission: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
    """[N] float64: log p(x_1, …, x_T) of each row of symbols [N, T] under the HMM."""
    logs = hmm_predictive(symbols, transition, emission, initial)
    return logs.gather(-1, symbols.unsqueeze(-1)).squeeze(-1).sum(-1)


@register_task("hmm")
class HMM(Task):
    """Next-symbol prediction on sequences of a given or random HMM; the gap to the HMM's own cross-entropy (nats/token)."""

    Config = HMMConfig
    metric = "val/nll_gap"
    higher_is_better = False

    def __init__(self, config: HMMConfig) -> None:
        super().__init__(config)
        S, V = config.num_states, config.num_symbols
        T, E = random_hmm(S, V, seed=config.hmm_seed, sharpness=config.sharpness)
        T = config.stay * torch.eye(S, dtype=torch.float64) + (1 - config.stay) * T
        if config.transition is not None:
            T = torch.tensor(config.transition, dtype=torch.float64).view(S, S)
        if config.emission is not None:
            E = torch.tensor(config.emission, dtype=torch.float64).view(S, V)
        self.transition, self.emission = T, E
        self.initial = torch.full((S,), 1 / S, dtype=torch.float64)
        # the symbols, then the start token
        self.start_token = V
        self.vocab_size = V + 1

    def generate(self, n: int, generator: torch.Generator, split: str) -> Batch:
        state = torch.multinomial(self.initial.expand(n, -1), 1, generator=generator).squeeze(1)
        symbols = []
        for _ in range(self.config.seq_len):
            symbols.append(torch.multinomial(self.emission[state], 1, generator=generator).squeeze(1))
            state = torch.multinomial(self.transition[state], 1, generator=generator).squeeze(1)
        labels = torch.stack(symbols, 1)
        start = torch.full((n, 1), self.start_token)
        return {"inputs": torch.cat([start, labels[:, :-1]], 1), "labels": labels}

    def tokens_per_example(self) -> int:
        return self.config.seq_len

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        nll = float(F.cross_entropy(logits.flatten(0, 1).double(), labels.flatten()))
        hmm_logs = hmm_predictive(labels, self.transition, self.emission, self.initial)
        hmm_nll = float(-hmm_logs.gather(-1, labels.unsqueeze(-1)).mean())
        return {
            "nll": nll,
            "hmm_nll": hmm_nll,
            "nll_gap": nll - hmm_nll,
            "accuracy": float((logits.argmax(-1) == labels).double().mean()),
            "hmm_accuracy": float((hmm_logs.argmax(-1) == labels).double().mean()),
        }
