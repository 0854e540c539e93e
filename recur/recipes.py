"""Named runs: each recipe is a function returning a full, typed `RunConfig`.

`recipe("mqar", {"train.steps": 2000})` applies typed dotted overrides on top; the
command line does the same with `recur train --recipe mqar --train.steps 2000`. The
model's vocabulary always follows the task, so recipes pass a placeholder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .models import LMConfig, Seq2SeqConfig
from .models.inputs import InputConfig
from .registry import Registry
from .tasks.adding import AddingConfig
from .tasks.arrow_pointing import ArrowPointingConfig
from .tasks.digits import DigitsConfig
from .tasks.digits_2d import Digits2DConfig
from .tasks.hmm import HMMConfig
from .tasks.induction_heads import InductionHeadsConfig
from .tasks.listops import ListOpsConfig
from .tasks.lm import LMTaskConfig
from .tasks.mod_arith import ModArithConfig
from .tasks.mqar import MQARConfig
from .tasks.niah import NIAHConfig
from .tasks.parity import ParityConfig
from .tasks.permutation import PermutationConfig
from .tasks.point_shapes import PointShapesConfig
from .tasks.selective_copy import SelectiveCopyConfig
from .tasks.transduce import TransduceConfig
from .train.config import HeadConfig, RunConfig, TrainConfig, apply_overrides

RECIPES: Registry[Callable[[], RunConfig]] = Registry("recipe")
# `@register_recipe("mqar")` on a function returning a RunConfig makes it a named run
register_recipe = RECIPES.register
DEFAULT = "default"
# the task sets model.vocab_size; this is only what recipes write before it does
VOCAB_FROM_TASK = 2


def recipe(name: str = DEFAULT, overrides: dict[str, Any] | list[tuple[str, Any]] | None = None) -> RunConfig:
    """The RunConfig of recipe `name` with `overrides` applied."""
    config = RECIPES[name]()
    return apply_overrides(config, overrides) if overrides else config


@register_recipe("default")
def default() -> RunConfig:
    """Mamba-2 + attention hybrid on MQAR (vocab 128, 4 pairs); ~0.99 accuracy in minutes on 2 CPU cores."""
    return RunConfig(
        task=MQARConfig(vocab_size=128, seq_len=64, num_kv_pairs=4, eval_examples=256),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, pattern=("mamba2", "attention")),
        train=TrainConfig(steps=1000, batch_size=32, lr=3e-3, warmup_steps=50, eval_every=50, target=0.99),
    )


@register_recipe("mqar")
def mqar() -> RunConfig:
    """Zoology's MQAR at CPU scale: vocab 256, length 64, 8 key-value pairs, Mamba-2 + attention."""
    return RunConfig(
        task=MQARConfig(vocab_size=256, seq_len=64, num_kv_pairs=8),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, pattern=("mamba2", "attention")),
        train=TrainConfig(steps=1500, batch_size=64, lr=3e-3, warmup_steps=50, eval_every=100, target=0.99),
    )


@register_recipe("recall")
def recall() -> RunConfig:
    """Zoology's MQAR as published (vocab 1024, length 256, 16 pairs): attention, two layers, no MLP."""
    return RunConfig(
        task=MQARConfig(vocab_size=1024, seq_len=256, num_kv_pairs=16, eval_examples=256),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="attention", mlp_ratio=0.0),
        train=TrainConfig(steps=4000, batch_size=64, lr=3e-3, warmup_steps=100, eval_every=250, target=0.99),
    )


@register_recipe("recall_small")
def recall_small() -> RunConfig:
    """MQAR at a toy scale (vocab 64, 8 pairs, length 64), Gated DeltaNet: seconds, not the
    published setting. `--model.mixer gla` runs GLA with the same matrix memory (2 heads of
    32 × 32 per layer)."""
    return RunConfig(
        task=MQARConfig(vocab_size=64, seq_len=64, num_kv_pairs=8, eval_examples=256),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="gated_deltanet",
                       mixer_options={"gated_deltanet": {"num_heads": 2}, "gla": {"num_heads": 2, "expand_k": 1.0}}),
        train=TrainConfig(steps=1000, batch_size=64, lr=3e-3, warmup_steps=50, eval_every=50, target=0.99),
    )


@register_recipe("parity")
def parity() -> RunConfig:
    """Parity, train lengths 3-40, test 40-256 (Grazzi et al., scaled accuracy)."""
    return RunConfig(
        task=ParityConfig(),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="gla"),
        train=TrainConfig(steps=2000, batch_size=64, lr=1e-3, warmup_steps=100, weight_decay=0.0, eval_every=200),
    )


@register_recipe("mod_arith")
def mod_arith() -> RunConfig:
    """Arithmetic mod 5 without brackets, train lengths 3-40, test 40-256."""
    return RunConfig(
        task=ModArithConfig(),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="gla"),
        train=TrainConfig(steps=3000, batch_size=64, lr=1e-3, warmup_steps=200, eval_every=250),
    )


@register_recipe("mod_arith_lstm")
def mod_arith_lstm() -> RunConfig:
    """Arithmetic mod 5, one LSTM layer (d_model 128, no MLP), longest training input
    6 -> 40 over 2500 steps; 0.98 test scaled accuracy at lengths 40-256
    (benchmarks/rnn-extrapolation.md). `--model.mixer slstm` runs the sLSTM row (one head)."""
    return RunConfig(
        task=ModArithConfig(eval_examples=256, curriculum_steps=2500, curriculum_start=6),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=128, n_layers=1, mixer="lstm", mlp_ratio=0.0,
                       tie_embeddings=False, mixer_options={"slstm": {"num_heads": 1}}),
        train=TrainConfig(steps=4000, batch_size=64, lr=1e-2, warmup_steps=50, weight_decay=0.0,
                          eval_every=250),
    )


@register_recipe("permutation")
def permutation() -> RunConfig:
    """The S3 word problem, one layer of DeltaProduct n_h = 2: train length 32, test 64 (~1000 steps)."""
    return RunConfig(
        task=PermutationConfig(group="S3", train_length=32, test_length=64),
        model=LMConfig(
            vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=1, mixer="deltaproduct",
            # no decay (a group element must act exactly, at any distance) and no short
            # convolution (it fits the first few prefixes locally, and with it the loss
            # was still near chance after 750 steps)
            mixer_options={"deltaproduct": {"num_householder": 2, "use_forget_gate": False, "conv_size": 0}},
        ),
        train=TrainConfig(steps=2000, batch_size=64, lr=3e-3, warmup_steps=100, weight_decay=1e-6,
                          eval_every=250, target=0.99),
    )


@register_recipe("digits")
def digits() -> RunConfig:
    """Sequential 8×8 digits, 64 pixel tokens -> 10 classes, LSTM (0.91 test accuracy in 600 steps)."""
    return RunConfig(
        task=DigitsConfig(),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="lstm"),
        train=TrainConfig(steps=600, batch_size=64, lr=3e-3, warmup_steps=50, eval_every=100),
        head=HeadConfig(pooling="last", loss="cross_entropy"),
    )


def _digits_ssm(mixer: str, mixer_options: dict | None = None, permuted: bool = False) -> RunConfig:
    """Pixel-by-pixel 8×8 digits for the SSM line: ~20 epochs, the SSM group at lr / 5
    without weight decay, mean pooling (benchmarks/digits.md). Permuted: the pixels in one
    fixed random order, which hides local structure and overfits sooner, so ~40 epochs
    with dropout 0.1."""
    steps = 920 if permuted else 460
    return RunConfig(
        task=DigitsConfig(permuted=permuted),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer=mixer, mlp_ratio=2.0,
                       dropout=0.1 if permuted else 0.0,
                       mixer_options={mixer: dict(mixer_options)} if mixer_options else {}),
        train=TrainConfig(steps=steps, batch_size=64, lr=5e-3, ssm_lr_scale=0.2, weight_decay=0.01,
                          warmup_steps=steps // 10, eval_every=steps // 4),
        head=HeadConfig(pooling="mean", loss="cross_entropy"),
    )


@register_recipe("digits_s4d")
def digits_s4d() -> RunConfig:
    """Sequential 8×8 digits with S4D (S4D-Lin, N = 64)."""
    return _digits_ssm("s4d")


@register_recipe("digits_s4d_permuted")
def digits_s4d_permuted() -> RunConfig:
    """Permuted 8×8 digits with S4D: 920 steps, dropout 0.1, and A and Δ trained at the full lr."""
    config = _digits_ssm("s4d", permuted=True)
    config.train.ssm_lr_scale = 1.0
    return config


_LRU_OPTIONS = {"r_min": 0.5, "max_phase": 3.141592653589793}


@register_recipe("digits_lru")
def digits_lru() -> RunConfig:
    """Sequential 8×8 digits with the LRU (|λ| on [0.5, 0.99], phases up to π)."""
    return _digits_ssm("lru", _LRU_OPTIONS)


@register_recipe("digits_lru_permuted")
def digits_lru_permuted() -> RunConfig:
    """Permuted 8×8 digits with the LRU: 920 steps, dropout 0.1."""
    return _digits_ssm("lru", _LRU_OPTIONS, permuted=True)


@register_recipe("digits_lstm")
def digits_lstm() -> RunConfig:
    """The LSTM baseline of the digits table, same model and schedule."""
    return _digits_ssm("lstm")


@register_recipe("digits_lstm_permuted")
def digits_lstm_permuted() -> RunConfig:
    """The LSTM baseline on permuted 8×8 digits, the permuted schedule."""
    return _digits_ssm("lstm", permuted=True)


@register_recipe("listops_s4d")
def listops_s4d() -> RunConfig:
    """Small ListOps (depth 2, ≤ 48 tokens, left-padded) with S4D, last-token pooling."""
    return RunConfig(
        task=ListOpsConfig(),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="s4d", mlp_ratio=2.0),
        train=TrainConfig(steps=700, batch_size=64, lr=5e-3, ssm_lr_scale=0.2, weight_decay=0.01,
                          warmup_steps=50, eval_every=175),
        head=HeadConfig(pooling="last", loss="cross_entropy"),
    )


@register_recipe("selective_copy")
def selective_copy() -> RunConfig:
    """Mamba's selective copying: 8 data tokens in 64 blanks, Mamba-2."""
    return RunConfig(
        task=SelectiveCopyConfig(),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="mamba2"),
        train=TrainConfig(steps=2000, batch_size=64, lr=3e-3, warmup_steps=100, eval_every=200, target=0.99),
    )


@register_recipe("induction_heads")
def induction_heads() -> RunConfig:
    """Induction heads, train length 64, test 256, Mamba-2 + attention."""
    return RunConfig(
        task=InductionHeadsConfig(),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, pattern=("mamba2", "attention")),
        train=TrainConfig(steps=1000, batch_size=64, lr=3e-3, warmup_steps=50, eval_every=100, target=0.99),
    )


@register_recipe("lm")
def lm() -> RunConfig:
    """Byte-level LM on Python's pydoc topics (or --task.path), GLA, bits per byte."""
    return RunConfig(
        task=LMTaskConfig(seq_len=128),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=128, n_layers=2, mixer="gla"),
        train=TrainConfig(steps=1000, batch_size=32, lr=3e-3, warmup_steps=50, eval_every=100),
    )


@register_recipe("adding")
def adding() -> RunConfig:
    """The adding problem at length 50 (real-valued inputs, regression), LSTM, MSE."""
    return RunConfig(
        task=AddingConfig(seq_len=50),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=1, mixer="lstm", mlp_ratio=0.0),
        head=HeadConfig(pooling="last", loss="mse"),
        train=TrainConfig(steps=1500, batch_size=64, lr=3e-3, warmup_steps=50, weight_decay=0.0, eval_every=100,
                          target=0.01),
    )


@register_recipe("digits_2d")
def digits_2d() -> RunConfig:
    """8×8 digits as images: 2×2 patches in a snake scan (16 tokens), Mamba-2, mean pooling."""
    return RunConfig(
        task=Digits2DConfig(),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="mamba2", mlp_ratio=2.0),
        input=InputConfig(patch=2, scan="snake"),
        head=HeadConfig(pooling="mean"),
        train=TrainConfig(steps=600, batch_size=64, lr=3e-3, warmup_steps=50, weight_decay=0.01, eval_every=100),
    )


@register_recipe("transduce")
def transduce() -> RunConfig:
    """Reverse 4-16 symbols with a GLA encoder–decoder (cross-attention), sequence accuracy."""
    return RunConfig(
        task=TransduceConfig(operation="reverse"),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="gla", mlp_ratio=2.0),
        seq2seq=Seq2SeqConfig(cross_attention_heads=4),
        train=TrainConfig(steps=1500, batch_size=64, lr=3e-3, warmup_steps=50, eval_every=100, target=0.99),
    )


@register_recipe("parity_deltanet")
def parity_deltanet() -> RunConfig:
    """Parity with DeltaNet, eigenvalues in [−1, 1] (Grazzi et al., Table 3); stops at 0.95
    validation scaled accuracy. `--model.mixer_options.deltanet.allow_neg_eigval false` runs [0, 1]."""
    return RunConfig(
        task=ParityConfig(eval_examples=256),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="deltanet",
                       mixer_options={"deltanet": {"allow_neg_eigval": True}}),
        train=TrainConfig(steps=2000, batch_size=64, lr=3e-3, warmup_steps=100, weight_decay=0.0, eval_every=250,
                          target=0.95),
    )


@register_recipe("parity_mamba2")
def parity_mamba2() -> RunConfig:
    """Parity with Mamba-2, a = 2 exp(ΔA) − 1 in (−1, 1) (Grazzi et al., Table 3), trained on
    lengths 2-24 at a constant lr. `--model.mixer_options.mamba2.allow_neg_eigval false` runs (0, 1)."""
    return RunConfig(
        task=ParityConfig(eval_examples=256, train_lengths=(2, 24)),
        # Δ starts in [0.1, 1]: a 1-bit needs a near −1, i.e. ΔA very negative, which the
        # default small initial Δ leaves far away
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="mamba2",
                       mixer_options={"mamba2": {"allow_neg_eigval": True, "dt_min": 0.1, "dt_max": 1.0, "d_state": 16}}),
        train=TrainConfig(steps=1000, batch_size=64, lr=3e-3, warmup_steps=100, weight_decay=0.0, min_lr_ratio=1.0,
                          eval_every=50, target=0.95),
    )


@register_recipe("parity_rnn")
def parity_rnn() -> RunConfig:
    """Parity with one LSTM layer (d_model 32, no MLP), trained on 2-12 bits, validated and
    tested on 40-256; `--model.mixer slstm` or `attention` for the other rows."""
    return RunConfig(
        task=ParityConfig(eval_examples=256, train_lengths=(2, 12)),
        # untied embeddings: the answer tokens are also input tokens, and one shared vector
        # for "bit 1" and "answer odd" slows learning a lot at this size
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=32, n_layers=1, mixer="lstm", mlp_ratio=0.0,
                       tie_embeddings=False, mixer_options={"slstm": {"num_heads": 1}}),
        train=TrainConfig(steps=500, batch_size=32, lr=1e-2, warmup_steps=20, weight_decay=0.0, eval_every=100),
    )


@register_recipe("arrow_pointing")
def arrow_pointing() -> RunConfig:
    """pLSTM's arrow pointing at 32 px: 4×4 patches (64 tokens) in a raster scan, Mamba-2,
    mean pooling; test_2x reads 64 px images at the end (256 tokens)."""
    return RunConfig(
        task=ArrowPointingConfig(resolution=32, eval_examples=512),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="mamba2", mlp_ratio=2.0),
        input=InputConfig(patch=4, scan="row"),
        head=HeadConfig(pooling="mean"),
        train=TrainConfig(steps=2000, batch_size=64, lr=3e-3, warmup_steps=100, weight_decay=0.05, eval_every=200),
    )


@register_recipe("point_shapes")
def point_shapes() -> RunConfig:
    """Five solids from rotated, noisy clouds of 96-128 points with LION: a 12³ voxel grid,
    groups of 64 voxels along x then y, GLA per group, voxel generation after the first pair."""
    return RunConfig(
        task=PointShapesConfig(eval_examples=256),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=48, n_layers=4, mixer="gla", mlp_ratio=2.0,
                       mixer_options={"gla": {"num_heads": 2}}),
        input=InputConfig(point_model="lion", lion_voxels=12, lion_group=64, lion_generation=0.1),
        head=HeadConfig(pooling="mean"),
        train=TrainConfig(steps=600, batch_size=32, lr=3e-3, warmup_steps=50, weight_decay=0.05, eval_every=100),
    )


@register_recipe("hmm_lstm")
def hmm_lstm() -> RunConfig:
    """Next-symbol prediction on a random sticky 4-state, 4-symbol HMM (length 64) with one
    LSTM layer (d_model 32, no MLP); `val/nll_gap` is its cross-entropy above the HMM's own."""
    return RunConfig(
        # sticky states and blurred emissions: the last symbol alone predicts 0.08 nats
        # per token worse than the HMM, the last four 0.02 (benchmarks/hmm.md), so the
        # network must keep a belief about the hidden state
        task=HMMConfig(eval_examples=256, stay=0.95, sharpness=1.5),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=32, n_layers=1, mixer="lstm", mlp_ratio=0.0,
                       tie_embeddings=False),
        train=TrainConfig(steps=600, batch_size=32, lr=1e-2, warmup_steps=20, weight_decay=0.0, eval_every=100),
    )


def _alrnn_dsr(system: str, num_relu: int, lr: float, seq_len: int, interval: int, steps: int, paper_steps: int) -> RunConfig:
    """One AL-RNN (M = 20 latent units, the first 3 read out) trained on a chaotic system
    with sparse teacher forcing, RAdam, batch 16, batch noise 0.05, no clipping, no decay:
    the AL-RNN paper's settings. Its rate decays exponentially from lr to 1e-5 over
    `paper_steps`; a run of fewer steps follows the same curve and stops early on it
    (on Lorenz-63, seed 0: at a constant 1e-3 the free runs became chaotic, λ_max > 0, after
    1750-2500 steps; with the decay to 1e-5 compressed into 1500 steps the rate was 1e-4 by
    step 750 and the free runs still fell onto a fixed point). `--train.min_lr_ratio` sets
    another end."""
    from .tasks.dynamics import DynamicsConfig

    return RunConfig(
        task=DynamicsConfig(system=system, seq_len=seq_len, forcing_interval=interval),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=20, n_layers=1, mixer="alrnn",
                       mixer_options={"alrnn": {"num_relu": num_relu}}),
        train=TrainConfig(steps=steps, batch_size=16, lr=lr, warmup_steps=0, min_lr_ratio=(1e-5 / lr) ** (steps / paper_steps),
                          weight_decay=0.0,
                          grad_clip=0.0, optimizer="radam", schedule="exponential", eval_every=500),
    )


@register_recipe("lorenz63_alrnn")
def lorenz63_alrnn() -> RunConfig:
    """Lorenz-63 reconstruction with an AL-RNN (M = 20, P = 2, τ = 16, sequences of 200,
    lr 1e-3 → 1e-5 over 100,000 steps), the first 3000 of the paper's 100,000 (2000 epochs ×
    50 batches): lr 1e-3 → 8.7e-4."""
    return _alrnn_dsr("lorenz63", num_relu=2, lr=1e-3, seq_len=200, interval=16, steps=3000, paper_steps=100_000)


@register_recipe("rossler_alrnn")
def rossler_alrnn() -> RunConfig:
    """Rössler reconstruction with an AL-RNN (M = 20, P = 1, τ = 8, sequences of 300,
    lr 5e-3 → 1e-5 over 150,000 steps), the first 3000 of the paper's 150,000 (3000 epochs ×
    50 batches): lr 5e-3 → 4.4e-3."""
    return _alrnn_dsr("rossler", num_relu=1, lr=5e-3, seq_len=300, interval=8, steps=3000, paper_steps=150_000)


@register_recipe("digits_2d_vit")
def digits_2d_vit() -> RunConfig:
    """8×8 digits, the ViT baseline: 2×2 patches on their grid, softmax attention over all
    patches with a learned position embedding, mean pooling."""
    return RunConfig(
        task=Digits2DConfig(),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="vit_attention", mlp_ratio=2.0),
        input=InputConfig(patch=2, position_embedding=True),
        head=HeadConfig(pooling="mean"),
        train=TrainConfig(steps=600, batch_size=64, lr=3e-3, warmup_steps=50, weight_decay=0.01, eval_every=100),
    )


# Long-horizon forecasting (recur.tasks.forecast): weekly Mauna Loa CO2, four years read,
# 96 weeks predicted, each window relative to its last value (the series trends above its
# training range), one budget for every model so that rows compare.
FORECAST_TASK = {"series": "co2", "lookback": 208, "horizon": 96, "subtract_last": True}
FORECAST_TRAIN = {"steps": 600, "batch_size": 32, "lr": 1e-3, "warmup_steps": 30, "weight_decay": 0.0, "eval_every": 50}


@register_recipe("forecast_tpgn")
def forecast_tpgn() -> RunConfig:
    """TPGN (Jia et al., arXiv:2409.17703) on CO2: 208 weeks in, 96 out, rows of one year (52
    weeks, the task's period); normalised test MSE and MAE. `--task.horizon 192` for the longer one."""
    from .tasks.forecast import ForecastConfig

    return RunConfig(
        task=ForecastConfig(**FORECAST_TASK),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, forecaster="tpgn"),
        train=TrainConfig(**FORECAST_TRAIN),
    )


@register_recipe("forecast_pgn")
def forecast_pgn() -> RunConfig:
    """Two PGN layers reading the whole 208-week window, then the forecast head, on CO2 (as forecast_tpgn)."""
    from .tasks.forecast import ForecastConfig

    return RunConfig(
        task=ForecastConfig(**FORECAST_TASK),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="pgn", mlp_ratio=2.0,
                       mixer_options={"pgn": {"window": FORECAST_TASK["lookback"]}}),
        train=TrainConfig(**FORECAST_TRAIN),
    )


@register_recipe("forecast_lstm")
def forecast_lstm() -> RunConfig:
    """Two LSTM layers and the forecast head on CO2 (as forecast_tpgn); `--model.mixer gru`,
    `gla`, `mamba2` or `attention` for the other recurrent and attention baselines."""
    from .tasks.forecast import ForecastConfig

    return RunConfig(
        task=ForecastConfig(**FORECAST_TASK),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="lstm", mlp_ratio=2.0),
        train=TrainConfig(**FORECAST_TRAIN),
    )


def _rhn_hybrid_forecast(system: str, d_model: int, seq_len: int) -> RunConfig:
    """One rhn_hybrid layer (Heidenreich et al., arXiv:2410.02654: RHN with attention over
    its last 8 states and input-dependent gating) forecasting a chaotic system by feedback
    with one-step teacher forcing (τ = 1); the ablations are mixer options or other mixers."""
    from .tasks.dynamics import DynamicsConfig

    return RunConfig(
        # shorter blocks and measures than the task's defaults: λ_max takes the Jacobian of the
        # whole state, the attention's memory included, at each of its steps
        task=DynamicsConfig(system=system, seq_len=seq_len, forcing_interval=1, observation="linear",
                            train_length=10000, val_length=3000, test_length=3000, eval_length=1500, transient=300,
                            vpt_horizon=500, prediction_starts=20, lyapunov_steps=100),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=d_model, n_layers=1, mixer="rhn_hybrid", mlp_ratio=0.0,
                       mixer_options={"rhn_hybrid": {"depth": 2, "attention_window": 8, "gating": "input"}}),
        train=TrainConfig(steps=2000, batch_size=16, lr=1e-3, warmup_steps=50, weight_decay=0.0, grad_clip=1.0,
                          eval_every=500),
    )


@register_recipe("lorenz96_rhn")
def lorenz96_rhn() -> RunConfig:
    """Lorenz-96 (20 variables, F = 8) forecast by an RHN with attention and input gating
    (d_model 32, sequences of 100, one-step teacher forcing); valid prediction time in steps."""
    return _rhn_hybrid_forecast("lorenz96", d_model=32, seq_len=100)


@register_recipe("ks_rhn")
def ks_rhn() -> RunConfig:
    """Kuramoto–Sivashinsky (L = 22, 64 grid points) forecast as lorenz96_rhn, d_model 64."""
    return _rhn_hybrid_forecast("ks", d_model=64, seq_len=100)


def _plrnn_dsr(mixer: str, d_model: int, options: dict, *, interval: int, lr: float, end_lr: float, paper_steps: int,
               grad_clip: float = 0.0, batch_noise: float = 0.05) -> RunConfig:
    """A PLRNN-style latent map (the first 3 units read out) on Lorenz-63 with sparse teacher
    forcing, sequences of 200, batch 16, RAdam, no weight decay, 3000 steps: the budget of
    `lorenz63_alrnn`. The rate decays exponentially from lr to end_lr over `paper_steps`, of
    which the run follows the first 3000."""
    from .tasks.dynamics import DynamicsConfig

    steps = 3000
    return RunConfig(
        task=DynamicsConfig(system="lorenz63", seq_len=200, forcing_interval=interval, batch_noise=batch_noise),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=d_model, n_layers=1, mixer=mixer,
                       mixer_options={mixer: options}),
        train=TrainConfig(steps=steps, batch_size=16, lr=lr, warmup_steps=0, min_lr_ratio=(end_lr / lr) ** (steps / paper_steps),
                          weight_decay=0.0, grad_clip=grad_clip, optimizer="radam", schedule="exponential",
                          eval_every=500),
    )


@register_recipe("lorenz63_plrnn")
def lorenz63_plrnn() -> RunConfig:
    """Lorenz-63 reconstruction with a vanilla PLRNN (M = 20, W off-diagonal) under
    lorenz63_alrnn's settings (τ = 16, lr 1e-3 → 1e-5 over 100,000 steps, 3000 steps)."""
    return _plrnn_dsr("plrnn", 20, {}, interval=16, lr=1e-3, end_lr=1e-5, paper_steps=100_000)


@register_recipe("lorenz63_dendplrnn")
def lorenz63_dendplrnn() -> RunConfig:
    """Lorenz-63 reconstruction with a dendPLRNN, the dendPLRNN code's Lorenz-63 settings
    (M = 22, B = 20 clipped bases, τ = 25, gradient clipping 10, lr 1e-3) with
    lorenz63_alrnn's schedule (→ 1e-5 over 100,000 steps) and budget (3000 steps)."""
    return _plrnn_dsr("dendplrnn", 22, {"num_bases": 20, "clipped": True}, interval=25, lr=1e-3, end_lr=1e-5,
                      paper_steps=100_000, grad_clip=10.0)


@register_recipe("lorenz63_shplrnn")
def lorenz63_shplrnn() -> RunConfig:
    """Lorenz-63 reconstruction with a clipped shPLRNN, the GTF code's defaults (M = N = 3,
    L = 50 hidden units, τ = 16, no batch noise, lr 1e-3 → 1e-6 over 5000 epochs × 50
    batches) at sparse teacher forcing (α = 1), the first 3000 steps (lr 1e-3 → 9.2e-4)."""
    return _plrnn_dsr("shplrnn", 3, {"hidden_dim": 50, "clipped": True}, interval=16, lr=1e-3, end_lr=1e-6,
                      paper_steps=250_000, batch_noise=0.0)


@register_recipe("niah")
def niah() -> RunConfig:
    """RULER's single-needle passkey retrieval at token level, trained at length 256 and
    tested at 256, 1024 and 4096 (test_1024, test_4096 read at the end): two HGRN2 layers
    (the fastest of the mixers timed over 5 steps on 2 CPU cores), d_model 64, no MLP.
    `--task.value number` or `uuid`, `--task.haystack random` for the other variants
    (docs/memory.md)."""
    return RunConfig(
        task=NIAHConfig(seq_len=256, test_lengths=(1024, 4096), eval_examples=256),
        model=LMConfig(vocab_size=VOCAB_FROM_TASK, d_model=64, n_layers=2, mixer="hgrn2", mlp_ratio=0.0),
        train=TrainConfig(steps=2000, batch_size=32, lr=3e-3, warmup_steps=100, eval_every=200, target=0.99),
    )


@register_recipe("mqar_memory")
def mqar_memory() -> RunConfig:
    """The `recall` recipe (Zoology's MQAR: vocab 1024, length 256, 16 pairs) with the same
    16 pairs drawn at 1024 and 4096 as test_1024 and test_4096, read at the end
    (benchmarks/memory.md)."""
    config = recall()
    return replace(config, task=replace(config.task, test_lengths=(1024, 4096)))
