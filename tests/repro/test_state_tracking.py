"""State tracking and recall with delta rules: the published contrasts, at CPU scale.

Each test is a recipe (a full `RunConfig` from `recur.recipes` with its overrides) that
trains on 2 CPU cores in minutes; results are in benchmarks/state-tracking.md.

- Parity (Grazzi et al., "Unlocking State-Tracking in Linear RNNs Through Negative
  Eigenvalues", arXiv:2411.12537, Table 3): train lengths 3-40, test 40-256. DeltaNet and
  Mamba-2 with eigenvalues in [−1, 1] generalise; with [0, 1] they stay near chance
  (published scaled accuracy 1.000 vs ≤ 0.017).
- S3 word problem (Siems et al., "DeltaProduct", arXiv:2502.10297): one layer of
  DeltaProduct with n_h = 2 Householder steps per token solves it; n_h = 1 cannot, since
  a 3-cycle is a rotation and one generalised reflection per token cannot express it.
- MQAR (Zoology, arXiv:2312.04927; reduced vocabulary): Gated DeltaNet recalls where GLA
  with the same state size falls short.
"""

from __future__ import annotations

import pytest

from recur.recipes import recipe
from recur.train import TrainResult, train

pytestmark = pytest.mark.slow


def run(name: str, mixer: str, options: dict, overrides: dict) -> TrainResult:
    config = recipe(name, {"model.mixer": mixer, **overrides})
    config.model.pattern = ()
    config.model.mixer_options = {mixer: options}
    result = train(config, progress=False)
    scores = {k: round(v, 3) for k, v in result.metrics.items() if "accuracy" in k}
    print(f"{name} {mixer} {options}: {scores} after {result.steps} steps, {result.seconds:.0f} s, state {result.state_size} B")
    return result


PARITY = {
    # train lengths 3-40, test 40-256 (the recipe's defaults); d_model 64, 2 layers
    "train.steps": 2000, "train.lr": 3e-3, "train.eval_every": 250, "train.target": 0.95,
    "task.eval_examples": 256,
}


@pytest.mark.parametrize("mixer", ["deltanet", "mamba2"])
def test_parity_needs_negative_eigenvalues(mixer):
    signed = run("parity", mixer, {"allow_neg_eigval": True}, PARITY)
    assert signed.metric_name == "test/scaled_accuracy"
    assert signed.metric >= 0.95, f"{mixer} [−1, 1]: test scaled accuracy {signed.metric:.3f}"
    positive = run("parity", mixer, {"allow_neg_eigval": False}, PARITY)
    # near chance at lengths 40-256: positive eigenvalues cannot count mod 2
    assert abs(positive.metric) <= 0.3, f"{mixer} [0, 1]: test scaled accuracy {positive.metric:.3f}"


S3 = {
    # one layer, d_model 64, train length 32, test 64, β in [0, 2]
    "train.steps": 2000, "train.lr": 3e-3, "train.eval_every": 250, "train.target": 0.99,
    "task.eval_examples": 256,
}


def test_s3_needs_two_householder_steps():
    two = run("permutation", "deltaproduct", {"num_householder": 2, "allow_neg_eigval": True}, S3)
    one = run("permutation", "deltaproduct", {"num_householder": 1, "allow_neg_eigval": True}, S3)
    at_train = "valid/sequence_accuracy_at_train_length"
    assert two.metrics[at_train] >= 0.9, f"n_h = 2: sequence accuracy {two.metrics[at_train]:.3f}"
    assert one.metrics[at_train] <= 0.1, f"n_h = 1: sequence accuracy {one.metrics[at_train]:.3f}"


MQAR = {
    # vocab 256, length 64, 8 key-value pairs, d_model 64, 2 layers of one mixer
    "train.steps": 1500, "train.lr": 3e-3, "train.eval_every": 250, "train.target": 0.99,
    "task.eval_examples": 256,
}


def test_mqar_gated_deltanet_recalls_where_gla_does_not():
    gdn = run("mqar", "gated_deltanet", {"num_heads": 2}, MQAR)
    # expand_k = 1 gives GLA the same state: 2 heads × 32 × 32 per layer
    gla = run("mqar", "gla", {"num_heads": 2, "expand_k": 1.0}, MQAR)
    memory = [r.model.backbone.blocks[0].mixer.init_state(1)["S"].numel() for r in (gdn, gla)]
    assert memory[0] == memory[1], f"matrix memories differ: {memory}"
    assert gdn.metric >= 0.99, f"Gated DeltaNet: accuracy {gdn.metric:.3f}"
    assert gla.metric < gdn.metric, f"GLA {gla.metric:.3f} vs Gated DeltaNet {gdn.metric:.3f}"
