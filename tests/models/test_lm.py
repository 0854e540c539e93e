"""The generic LM: hybrids by pattern, state carry, decoding with step, and padded prompts."""

from __future__ import annotations

import pytest
import torch

from recur.layers import MIXERS
from recur.models import LM, LMConfig
from recur.models.lm import GroupedState
from tests.helpers import assert_close

CAUSAL = sorted(name for name, cls in MIXERS.items() if cls.causal)

HYBRID = dict(vocab_size=61, d_model=32, n_layers=4, pattern=("gla", "gla", "gla", "attention"))


def model(**overrides) -> LM:
    torch.manual_seed(0)
    return LM(LMConfig(**{**HYBRID, **overrides})).double().eval()


def test_pattern_builds_hybrid_layers():
    lm = model()
    names = [block.mixer.name for block in lm.backbone.blocks]
    assert names == ["gla", "gla", "gla", "attention"]
    assert lm.head.weight is lm.embedding.weight
    assert model(n_layers=6).config.layer_mixers()[4:] == ["gla", "gla"]


def test_loss_is_cross_entropy_on_labels():
    lm = model()
    ids = torch.randint(0, 61, (2, 12))
    labels = ids.roll(-1, dims=1)
    labels[:, -1] = -100
    out = lm(ids, labels=labels)
    expected = torch.nn.functional.cross_entropy(out.logits[:, :-1].reshape(-1, 61), ids[:, 1:].reshape(-1))
    assert_close("loss", out.loss, expected, 1e-12)


def test_state_carry_through_the_model():
    lm = model()
    ids = torch.randint(0, 61, (2, 30))
    full = lm(ids)
    first = lm(ids[:, :11])
    second = lm(ids[:, 11:], state=first.state)
    assert_close("logits", torch.cat([first.logits, second.logits], 1), full.logits, 1e-10)


@pytest.mark.parametrize("pattern", [("gla", "gla", "gla", "attention"), ("mamba2",), ("retnet", "hgrn2")])
def test_greedy_generate_equals_repeated_full_forward(pattern):
    lm = model(pattern=pattern)
    prompt = torch.randint(0, 61, (2, 7))
    generated = lm.generate(prompt, max_new_tokens=9, temperature=0)
    ids = prompt
    for _ in range(9):
        next_token = lm(ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, next_token], dim=1)
    assert torch.equal(generated, ids)


def test_sampling_is_reproducible_and_respects_top_k():
    lm = model()
    prompt = torch.randint(0, 61, (3, 4))
    a = lm.generate(prompt, 6, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
    b = lm.generate(prompt, 6, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (3, 10)
    # with top_k = 1 sampling is greedy
    assert torch.equal(lm.generate(prompt, 6, temperature=0.7, top_k=1), lm.generate(prompt, 6, temperature=0))


def left_padded(*prompts: torch.Tensor, pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts [T_i] as one batch padded on the left, and its attention_mask."""
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad, dtype=torch.long)
    mask = torch.zeros(len(prompts), T, dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, T - len(prompt):] = prompt
        mask[i, T - len(prompt):] = 1
    return ids, mask


@pytest.mark.parametrize("mixer", CAUSAL)
def test_left_padded_prompts_generate_what_each_prompt_generates_alone(mixer):
    torch.manual_seed(0)
    lm = LM(LMConfig(vocab_size=13, d_model=16, n_layers=1, mixer=mixer, mlp_ratio=1.0)).double().eval()
    long, short = torch.randint(1, 13, (6,)), torch.randint(1, 13, (2,))
    ids, mask = left_padded(long, short)
    generated = lm.generate(ids, max_new_tokens=3, temperature=0, attention_mask=mask)
    assert torch.equal(generated[0], lm.generate(long[None], 3, temperature=0)[0])
    assert torch.equal(generated[1, 4:], lm.generate(short[None], 3, temperature=0)[0])
    # the logits agree too, not only their argmax, and padded positions stay out
    out = lm(ids, attention_mask=mask)
    assert_close("logits of the padded prompt", out.logits[1, 4:], lm(short[None]).logits[0], 1e-10)
    assert not out.logits[1, :4].any()
    # padding leaves the state as it was: each row's state is its prompt's alone
    for row, prompt in enumerate((long, short)):
        alone = lm(prompt[None]).state
        for layer, (got, expected) in enumerate(zip(row_state(out.state, row), alone, strict=True)):
            assert got.keys() == expected.keys()
            for key in got:
                assert_close(f"row {row} layer {layer} state {key}", got[key], expected[key][0], 1e-10)


def row_state(state: list[dict] | GroupedState, row: int) -> list[dict]:
    """One row of a batched or grouped LM state, per layer."""
    if isinstance(state, GroupedState):
        group = next(i for i, rows in enumerate(state.rows) if row in rows.tolist())
        state, row = state.states[group], state.rows[group].tolist().index(row)
    return [{key: value[row] for key, value in layer.items()} for layer in state]


def test_padding_on_either_side_and_inside_a_continuation():
    lm = model()
    a, b = torch.randint(0, 61, (1, 7)), torch.randint(0, 61, (1, 3))
    # right padding gives each row the state of its tokens alone
    ids = torch.cat([a, torch.cat([b, torch.zeros(1, 4, dtype=torch.long)], 1)])
    mask = torch.tensor([[1] * 7, [1] * 3 + [0] * 4])
    out = lm(ids, attention_mask=mask)
    assert isinstance(out.state, GroupedState)  # the attention caches differ in length
    assert_close("row 1", out.logits[1, :3], lm(b).logits[0], 1e-10)
    # a masked position inside a later chunk is an identity step: the state skips it
    more = torch.randint(0, 61, (2, 4))
    more_mask = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0]])
    after = lm(more, state=out.state, attention_mask=more_mask)
    expected = lm(torch.cat([b, more[1:, [0, 2]]], 1))
    assert_close("row 1 after", after.logits[1, [0, 2]], expected.logits[0, 3:], 1e-10)
    expected_a = lm(torch.cat([a, more[:1]], 1))
    assert_close("row 0 after", after.logits[0], expected_a.logits[0, 7:], 1e-10)
    step_logits, _ = lm.step(torch.tensor([5, 9]), after.state)
    assert_close("step row 1", step_logits[1], lm(torch.cat([b, more[1:, [0, 2]], torch.tensor([[9]])], 1)).logits[0, -1], 1e-10)


def test_recurrent_rows_share_one_state_and_windowed_caches_rejoin():
    torch.manual_seed(0)
    recurrent = LM(LMConfig(vocab_size=13, d_model=16, n_layers=2, mixer="gla")).double().eval()
    ids, mask = left_padded(torch.randint(1, 13, (6,)), torch.randint(1, 13, (2,)))
    state = recurrent(ids, attention_mask=mask).state
    assert isinstance(state, list) and state[0]["S"].shape[0] == 2
    alone = recurrent(ids[1:, 4:]).state
    assert_close("state after padding", state[0]["S"][1], alone[0]["S"][0], 1e-12)
    # a window of 4 keeps the last 3 keys: once both rows have 3, they decode as one batch
    windowed = LM(LMConfig(vocab_size=13, d_model=16, n_layers=1, mixer="attention",
                           mixer_options={"attention": {"window": 4}})).double().eval()
    state = windowed(ids[:, 3:], attention_mask=mask[:, 3:]).state
    assert isinstance(state, GroupedState) and len(state.rows) == 2
    _, state = windowed.step(torch.tensor([1, 2]), state)
    assert isinstance(state, list) and state[0]["k"].shape[:2] == (2, 3)


def test_padded_labels_are_ignored_and_bad_masks_named():
    lm = model()
    ids, mask = left_padded(torch.randint(0, 61, (5,)), torch.randint(0, 61, (3,)))
    out = lm(ids, labels=ids, attention_mask=mask)
    logits = out.logits[mask.bool()]
    assert_close("loss", out.loss, torch.nn.functional.cross_entropy(logits, ids[mask.bool()]), 1e-12)
    with pytest.raises(ValueError, match=r"attention_mask has shape \[2, 4\]; expected \[2, 5\]"):
        lm(ids, attention_mask=mask[:, 1:])
    with pytest.raises(ValueError, match=r"attention_mask must hold 0 .padding. and 1 .token. as ints or bools; got \[2\]"):
        lm(ids, attention_mask=mask * 2)
    with pytest.raises(ValueError, match="as ints or bools; got dtype torch.float32"):
        lm(ids, attention_mask=mask.float())
    with pytest.raises(ValueError, match="attention_mask row 1 has no token"):
        lm.generate(ids, 2, attention_mask=torch.tensor([[1] * 5, [0] * 5]))


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="unknown mixer 'glaa'"):
        LMConfig(vocab_size=10, mixer="glaa")
    with pytest.raises(ValueError, match="mixer 'gla' has no option 'heads'"):
        LMConfig(vocab_size=10, mixer_options={"gla": {"heads": 2}})
    with pytest.raises(ValueError, match="vocab_size must be a non-negative int"):
        LMConfig(vocab_size=-1)
    with pytest.raises(ValueError, match="a language model needs a vocabulary"):
        LM(LMConfig(vocab_size=0))
    lm = model()
    with pytest.raises(ValueError, match="ids must have shape"):
        lm(torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="state has 1 layer states; expected 4"):
        lm(torch.zeros(1, 3, dtype=torch.long), state=[{}])
    with pytest.raises(ValueError, match="max_new_tokens must be >= 0"):
        lm.generate(torch.zeros(1, 3, dtype=torch.long), -1)
    # a layer config's error names the keys that set it
    with pytest.raises(ValueError, match=r"mamba2 layers: expand \* d_model = 126 .*; change model.d_model, "
                       r"model.mixer_options.mamba2.expand or model.mixer_options.mamba2.head_dim"):
        LMConfig(vocab_size=10, d_model=63, mixer="mamba2")
    with pytest.raises(ValueError, match="mixer is empty"):
        LMConfig(vocab_size=10, mixer="")


def test_a_pattern_config_names_its_mixers_once():
    config = LMConfig(vocab_size=10, pattern=("mamba2", "attention"))
    assert config.mixer == "" and config.layer_mixers()[:2] == ["mamba2", "attention"]
    # configs saved before, with the unused default mixer beside the pattern, still load
    assert LMConfig(vocab_size=10, mixer="gla", pattern=("mamba2", "attention")) == config


def test_mixer_only_blocks_and_state_size():
    lm = model(pattern=("mamba2",), mlp_ratio=0)
    assert all(block.mlp is None for block in lm.backbone.blocks)
    assert lm.state_size() == sum(b.mixer.state_size() for b in lm.backbone.blocks) > 0


def test_options_that_depend_on_depth():
    config = LMConfig(
        vocab_size=16, d_model=32, n_layers=5, pattern=("hgrn2", "hgrn2", "attention"),
        mixer_options={
            "hgrn2": {"lower_bound": "fixed", "forget_lower_bound": {"linspace": [0.0, 0.6]}, "num_heads": {"per_layer": [2, 4, 2, 4]}},
        },
    )
    layers = [(name, options) for name, options in config.layer_options() if name == "hgrn2"]
    assert [o["forget_lower_bound"] for _, o in layers] == pytest.approx([0.0, 0.2, 0.4, 0.6])
    assert [o["num_heads"] for _, o in layers] == [2, 4, 2, 4]
    model = LM(config)
    bounds = [b.mixer.config.forget_lower_bound for b in model.backbone.blocks if b.mixer.name == "hgrn2"]
    assert bounds == pytest.approx([0.0, 0.2, 0.4, 0.6])
    with pytest.raises(ValueError, match=r"mixer_options.hgrn2.num_heads: per_layer needs one value for each of the 4 layers"):
        LMConfig(vocab_size=16, d_model=32, n_layers=5, pattern=("hgrn2", "hgrn2", "attention"),
                 mixer_options={"hgrn2": {"num_heads": {"per_layer": [2, 4]}}})
    with pytest.raises(ValueError, match=r"linspace needs \[first, last\] numbers"):
        LMConfig(vocab_size=16, d_model=32, n_layers=2, mixer="hgrn2",
                 mixer_options={"hgrn2": {"lower_bound": "fixed", "forget_lower_bound": {"linspace": [0.1]}}})


def test_hgrn2_learns_lower_bounds_that_rise_with_depth():
    """HGRN's lower bounds: one parameter for the model, β = 0 at the first layer, rising."""
    torch.manual_seed(0)
    model = LM(LMConfig(vocab_size=16, d_model=32, n_layers=4, mixer="hgrn2", mixer_options={"hgrn2": {"num_heads": 2}}))
    shared = [k for k in model.state_dict() if k.startswith("backbone.shared.")]
    assert shared == ["backbone.shared.hgrn2.logits"]
    bounds = [b.mixer.lower_bound() for b in model.backbone.blocks]
    assert bounds[0] == 0.0
    means = [float(b.mean()) for b in bounds[1:]]
    assert means == pytest.approx([0.25, 0.5, 0.75]) and all(float(b.max()) < 1 for b in bounds[1:])
    ids = torch.randint(0, 16, (2, 12))
    model(ids, labels=ids).loss.backward()
    assert model.backbone.shared["hgrn2"].logits.grad.abs().sum() > 0
    # stays monotone whatever the logits: each bound adds a positive softmax weight
    with torch.no_grad():
        model.backbone.shared["hgrn2"].logits.normal_(std=3.0)
    values = torch.stack([b.mixer.lower_bound() for b in model.backbone.blocks[1:]])
    assert bool((values[1:] >= values[:-1]).all())
    # decoding step by step agrees with the forward, learned bounds included
    model.eval()
    logits = model(ids).logits
    state, steps = None, []
    for t in range(ids.shape[1]):
        step_logits, state = model.step(ids[:, t], state)
        steps.append(step_logits)
    assert torch.allclose(torch.stack(steps, 1), logits, atol=1e-4)
