"""The encoder–decoder: teacher forcing equals step-by-step decoding, greedy and beam search."""

from __future__ import annotations

import pytest
import torch

from recur.models import InputConfig, LMConfig
from recur.models.seq2seq import EncoderDecoder, Seq2SeqConfig

ENCODER = LMConfig(vocab_size=11, d_model=32, n_layers=2, mixer="gla", mlp_ratio=2.0)


def build(seq2seq: Seq2SeqConfig | None = None, encoder: LMConfig = ENCODER, target_vocab: int = 13) -> EncoderDecoder:
    torch.manual_seed(0)
    return EncoderDecoder(encoder, seq2seq or Seq2SeqConfig(cross_attention_heads=2), InputConfig(kind="tokens"), target_vocab).eval()


@pytest.mark.parametrize("init_from_encoder", [False, True])
def test_teacher_forcing_equals_step_by_step(init_from_encoder):
    model = build(Seq2SeqConfig(cross_attention_heads=2, init_from_encoder=init_from_encoder)).double()
    source = torch.randint(0, 11, (3, 9))
    target = torch.randint(0, 13, (3, 6))
    logits = model(source, target).logits
    context = model.start(source)
    steps = []
    for t in range(6):
        step_logits, context = model.step(target[:, t], context)
        steps.append(step_logits)
    assert torch.allclose(torch.stack(steps, 1), logits, atol=1e-10)


def test_loss_gradients_and_source_mask():
    model = build().train()
    source = torch.randint(0, 11, (2, 7))
    target = torch.randint(0, 13, (2, 5))
    labels = target.roll(-1, 1)
    labels[:, -1] = -100
    out = model(source, target, labels=labels)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    # masking the source's tail = dropping it (cross-attention never reads masked keys)
    model.eval()
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[:, 5:] = False
    with torch.no_grad():
        masked = model(source, target, source_mask=mask).logits
        assert not torch.allclose(masked, model(source, target).logits)


def test_init_from_encoder_needs_matching_mixers():
    with pytest.raises(ValueError, match="same mixer at every depth"):
        build(Seq2SeqConfig(decoder_mixer="gated_deltanet", init_from_encoder=True))
    model = build(Seq2SeqConfig(cross_attention_heads=2, init_from_encoder=True))
    source = torch.randint(0, 11, (2, 5))
    _, states = model.encode(source)
    assert model.start(source)["states"] is not None and len(states) == 2


def test_greedy_and_exhaustive_beam_search():
    model = build(target_vocab=5).double()
    source = torch.randint(0, 11, (2, 8))
    greedy = model.generate(source, max_new_tokens=6, bos_id=0)
    assert greedy.shape == (2, 6)
    assert torch.equal(model.generate(source, max_new_tokens=6, bos_id=0, beam_size=1), greedy)
    # with V^(L-1) beams the search is exhaustive: it returns the most likely sequence
    L, V = 3, 5
    beam = model.generate(source, max_new_tokens=L, bos_id=0, beam_size=V ** (L - 1), length_penalty=0.0)
    every = torch.cartesian_prod(*[torch.arange(V)] * L)
    for b in range(2):
        inputs = torch.cat([torch.zeros(len(every), 1, dtype=torch.long), every[:, :-1]], 1)
        log_p = model(source[b : b + 1].expand(len(every), -1), inputs).logits.log_softmax(-1)
        scores = log_p.gather(-1, every[..., None]).squeeze(-1).sum(-1)
        assert beam[b].tolist() == every[scores.argmax()].tolist()


def test_generation_stops_at_eos():
    model = build()
    source = torch.randint(0, 11, (3, 4))
    eos = int(model.generate(source, 1, bos_id=0)[0, 0])
    for beam in (1, 3):
        out = model.generate(source, max_new_tokens=12, bos_id=0, eos_id=eos, beam_size=beam)
        for row in out.tolist():
            if eos in row:
                assert set(row[row.index(eos):]) == {eos}


def test_vector_sources_and_errors():
    torch.manual_seed(0)
    model = EncoderDecoder(
        LMConfig(vocab_size=1, d_model=16, n_layers=1, mixer="lstm"), Seq2SeqConfig(cross_attention_heads=2),
        InputConfig(kind="vectors", features=3), target_vocab=5,
    )
    out = model(torch.randn(2, 10, 3), torch.randint(0, 5, (2, 4)), labels=torch.randint(0, 5, (2, 4)))
    assert out.logits.shape == (2, 4, 5)
    with pytest.raises(ValueError, match="cross_attention_heads = 3 must divide d_model = 16"):
        EncoderDecoder(LMConfig(vocab_size=1, d_model=16, n_layers=1), Seq2SeqConfig(cross_attention_heads=3), InputConfig(kind="vectors", features=3), 5)
    with pytest.raises(ValueError, match="beam_size must be a positive int"):
        model.generate(torch.randn(1, 4, 3), 3, bos_id=0, beam_size=0)
