"""Every task's generator against an independent reading of its definition, and its metric."""

from __future__ import annotations

import itertools

import pytest
import torch

from recur.tasks import IGNORE, TASKS, build_task
from recur.tasks.base import example_hash
from recur.tasks.mod_arith import BRACKETS, PLAIN
from recur.tasks.permutation import group_elements


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_hot_logits(labels: torch.Tensor, vocab: int) -> torch.Tensor:
    """Logits that predict `labels` exactly (IGNORE positions predict 0)."""
    return torch.nn.functional.one_hot(labels.clamp_min(0), vocab).float()


@pytest.mark.parametrize("name", ["parity", "mod_arith", "permutation", "mqar", "digits", "selective_copy", "induction_heads", "lm"])
def test_sampling_is_a_function_of_the_generator(name):
    task = build_task(name, eval_examples=8)
    a, b = task.sample(8, gen(3)), task.sample(8, gen(3))
    assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["labels"], b["labels"])
    c = task.sample(8, gen(4))
    assert not torch.equal(a["inputs"], c["inputs"])
    assert a["inputs"].dtype == torch.long and a["inputs"].min() >= 0 and a["inputs"].max() < task.vocab_size


@pytest.mark.parametrize("name", ["parity", "mod_arith", "permutation", "mqar", "selective_copy", "induction_heads"])
def test_perfect_predictions_score_one(name):
    task = build_task(name)
    for split in task.eval_splits:
        batch = task.sample(32, gen(), split)
        scores = task.metrics(one_hot_logits(batch["labels"], task.vocab_size), batch["labels"])
        assert all(v == pytest.approx(1.0) for v in scores.values()), scores


def test_parity_answers_and_length_split():
    task = build_task("parity", train_lengths=(3, 10), test_lengths=(20, 30))
    for split, (low, high) in (("train", (3, 10)), ("test", (20, 30))):
        batch = task.sample(200, gen(), split)
        assert batch["inputs"].shape == (200, high)
        for inputs, labels in zip(batch["inputs"], batch["labels"], strict=True):
            bits = inputs[inputs != 0].tolist()
            assert low <= len(bits) <= high
            assert (labels != IGNORE).nonzero().flatten().tolist() == [len(bits) - 1]
            assert labels[len(bits) - 1] == 1 + bits.count(2) % 2
    # a constant guess is right about half the time: scaled accuracy near 0
    batch = task.sample(400, gen(1), "test")
    always_one = torch.zeros(400, 30, 3)
    always_one[..., 1] = 1
    assert abs(task.metrics(always_one, batch["labels"])["scaled_accuracy"]) < 0.15


def _evaluate_plain(tokens: list[int]) -> int:
    symbols = {v: k for k, v in PLAIN.items() if k != "number"}
    text = [symbols[t] if t in symbols else str(t - PLAIN["number"]) for t in tokens]
    assert text[-1] == "="
    # sum of signed products
    total, sign, product = 0, 1, int(text[0])
    for op, number in zip(text[1:-1:2], text[2:-1:2], strict=True):
        if op == "*":
            product *= int(number)
        else:
            total += sign * product
            sign, product = (1 if op == "+" else -1), int(number)
    return (total + sign * product) % 5


def _evaluate_brackets(tokens: list[int]) -> int:
    symbols = {v: k for k, v in BRACKETS.items() if k != "number"}
    text = [symbols.get(t, str(t)) for t in tokens]
    assert text.pop() == "="
    position = 0

    def expression():
        nonlocal position
        value = unary()
        while position < len(text) and text[position] in "+-":
            op = text[position]
            position += 1
            value = value + unary() if op == "+" else value - unary()
        return value

    def unary():
        nonlocal position
        if text[position] == "-":
            position += 1
            return -unary()
        if text[position] == "(":
            position += 1
            value = expression()
            assert text[position] == ")"
            position += 1
            return value
        position += 1
        return int(text[position - 1])

    value = expression()
    assert position == len(text)
    return value % 5


@pytest.mark.parametrize("brackets", [False, True])
def test_mod_arith_answers_match_an_independent_evaluator(brackets):
    task = build_task("mod_arith", brackets=brackets, train_lengths=(2, 30))
    pad = task.tokens["pad"]
    batch = task.sample(300, gen(), "train")
    lengths = set()
    for inputs, labels in zip(batch["inputs"], batch["labels"], strict=True):
        tokens = inputs[inputs != pad].tolist()
        lengths.add(len(tokens))
        assert (labels != IGNORE).nonzero().flatten().tolist() == [len(tokens) - 1]
        evaluate = _evaluate_brackets if brackets else _evaluate_plain
        assert labels[len(tokens) - 1] - task.tokens["number"] == evaluate(tokens)
    assert min(lengths) <= 4 and max(lengths) >= 28
    if brackets:
        assert set(range(2, 31)) <= lengths


def test_mod_arith_precedence():
    task = build_task("mod_arith")
    n = PLAIN["number"]
    # 2 + 3 * 4 = 14 = 4 (mod 5), not (2 + 3) * 4 = 0
    assert _evaluate_plain([n + 2, PLAIN["+"], n + 3, PLAIN["*"], n + 4, PLAIN["="]]) == 4
    assert task.vocab_size == 10 and build_task("mod_arith", brackets=True).vocab_size == 12


def test_mod_arith_curriculum_widens_the_training_lengths():
    task = build_task("mod_arith", train_lengths=(3, 40), curriculum_steps=100, curriculum_start=8)
    ranges = [task.config.lengths_at(step) for step in range(0, 130, 10)]
    assert ranges[0] == (3, 8) and ranges[5] == (3, 24) and ranges[10:] == [(3, 40)] * 3
    highs = [high for _, high in ranges]
    assert highs == sorted(highs)
    pad = task.tokens["pad"]
    for step, high in ((0, 8), (50, 24), (100, 40)):
        batch = task.train_batch(200, gen(step), step)
        # padded to the step's longest input, answers still those of the evaluator
        assert batch["inputs"].shape == (200, high)
        lengths = set()
        for inputs, labels in zip(batch["inputs"], batch["labels"], strict=True):
            tokens = inputs[inputs != pad].tolist()
            lengths.add(len(tokens))
            assert labels[len(tokens) - 1] - PLAIN["number"] == _evaluate_plain(tokens)
        assert min(lengths) == 2 and high - 1 <= max(lengths) <= high
    # evaluation splits never follow the curriculum: val and test are drawn at the test lengths
    assert task.sample(8, gen(), "val")["inputs"].shape == (8, 256)


@pytest.mark.parametrize("name", ["parity", "mod_arith", "permutation", "mqar"])
def test_train_batch_without_curriculum_is_the_train_split(name):
    task = build_task(name)
    a, b = task.train_batch(8, gen(5), step=123), task.sample(8, gen(5), "train")
    assert torch.equal(a["inputs"], b["inputs"]) and torch.equal(a["labels"], b["labels"])


def test_mod_arith_curriculum_options_are_checked():
    with pytest.raises(ValueError, match=r"task.curriculum_start must be an int in train_lengths \[3, 40\]; got 2"):
        build_task("mod_arith", curriculum_steps=10, curriculum_start=2)
    with pytest.raises(ValueError, match="task.curriculum_steps must be an int >= 0; got -1"):
        build_task("mod_arith", curriculum_steps=-1)


@pytest.mark.parametrize("group,order", [("S3", 6), ("S4", 24), ("A5", 60), ("S5", 120)])
def test_permutation_labels_are_prefix_products(group, order):
    task = build_task("permutation", group=group, train_length=12)
    elements = group_elements(group)
    assert task.vocab_size == order == len(set(elements)) and elements[0] == tuple(range(len(elements[0])))
    batch = task.sample(20, gen(), "train")
    for inputs, labels in zip(batch["inputs"], batch["labels"], strict=True):
        product = elements[0]
        for x, y in zip(inputs.tolist(), labels.tolist(), strict=True):
            product = tuple(elements[x][product[i]] for i in range(len(product)))
            assert elements[y] == product


def test_permutation_restricted_generators_and_sequence_accuracy():
    task = build_task("permutation", group="S5", generators="swaps", train_length=8, test_length=16)
    batch = task.sample(50, gen(), "test")
    elements = group_elements("S5")
    moved = {sum(i != p for i, p in enumerate(elements[x])) for x in batch["inputs"].flatten().tolist()}
    assert moved <= {0, 2} and 2 in moved
    logits = one_hot_logits(batch["labels"], task.vocab_size)
    # one wrong prediction at position 10 of sequence 0: token accuracy barely moves,
    # sequence accuracy loses that sequence, the prefix up to the train length keeps it
    logits[0, 10] = logits[0, 10].roll(1)
    scores = task.metrics(logits, batch["labels"])
    assert scores["sequence_accuracy"] == pytest.approx(49 / 50)
    assert scores["sequence_accuracy_at_train_length"] == 1.0
    assert scores["accuracy"] == pytest.approx(1 - 1 / (50 * 16))


def test_mqar_structure():
    task = build_task("mqar", vocab_size=64, seq_len=32, num_kv_pairs=4)
    batch = task.sample(100, gen(), "train")
    half = 32
    for inputs, labels in zip(batch["inputs"], batch["labels"], strict=True):
        keys, values = inputs[0:8:2], inputs[1:8:2]
        assert len(set(keys.tolist())) == 4 and (keys >= 1).all() and (keys < half).all()
        assert len(set(values.tolist())) == 4 and (values >= half).all()
        scored = (labels != IGNORE).nonzero().flatten()
        assert len(scored) == 4 and (scored >= 8).all()
        recall = dict(zip(keys.tolist(), values.tolist(), strict=True))
        for position in scored.tolist():
            assert labels[position] == recall[int(inputs[position])]
        # with zeros as filler, every other query-region token is a repeated key
        assert set(inputs[8:].tolist()) == {0} | set(keys.tolist())


def test_mqar_gaps_favour_short_distances():
    task = build_task("mqar", vocab_size=512, seq_len=256, num_kv_pairs=4)
    batch = task.sample(400, gen(), "train")
    positions = (batch["labels"] != IGNORE).nonzero()[:, 1] - 8
    assert positions.float().median() < 0.5 * 248


def test_mqar_longer_test_splits_keep_the_pairs_and_reach_further():
    assert build_task("mqar").eval_splits == ("val", "test")
    task = build_task("mqar", vocab_size=64, seq_len=32, num_kv_pairs=4, test_lengths=(128, 512))
    assert task.eval_splits == ("val", "test", "test_128", "test_512")
    from recur.train.loop import test_splits, validation_splits

    assert validation_splits(task) == ("val",) and test_splits(task) == ("test", "test_128", "test_512")
    batch = task.sample(200, gen(), "test_512")
    assert batch["inputs"].shape == (200, 512)
    scored = batch["labels"] != IGNORE
    # the same four pairs; their queries spread over the longer query region
    assert (scored.sum(1) == 4).all() and scored.nonzero()[:, 1].max() > 256
    for inputs, labels in zip(batch["inputs"], batch["labels"], strict=True):
        recall = dict(zip(inputs[0:8:2].tolist(), inputs[1:8:2].tolist(), strict=True))
        assert all(labels[p] == recall[int(inputs[p])] for p in (labels != IGNORE).nonzero().flatten().tolist())
    # drawn from the test split's hash bucket
    assert set(example_hash(task.sample(50, gen(1), "test_128")["inputs"]).remainder(16).tolist()) == {15}
    scores = task.metrics(one_hot_logits(batch["labels"], 64), batch["labels"])
    assert scores == {"accuracy": 1.0}
    for lengths, message in (((129,), "even"), ((12,), "at least 16"), ((32,), "differ from task.seq_len = 32")):
        with pytest.raises(ValueError, match=message):
            build_task("mqar", vocab_size=64, seq_len=32, num_kv_pairs=4, test_lengths=lengths)


def test_mqar_rejects_small_vocab_and_short_sequences():
    with pytest.raises(ValueError, match=r"vocab_size = 16 is too small for num_kv_pairs = 8.*expected vocab_size >= 18"):
        build_task("mqar", vocab_size=16, seq_len=64, num_kv_pairs=8)
    with pytest.raises(ValueError, match="seq_len = 20 must be even and at least"):
        build_task("mqar", vocab_size=64, seq_len=20, num_kv_pairs=8)


def test_digits_split_and_permutation():
    plain = build_task("digits")
    permuted = build_task("digits", permuted=True)
    assert plain.vocab_size == 17 and plain.num_outputs == 10 and plain.head == "classify"
    test, val = plain.sample(0, gen(), "test"), plain.sample(0, gen(), "val")
    assert test["inputs"].shape == (179, 64) and set(test["labels"].tolist()) == set(range(10))
    assert val["inputs"].shape == (180, 64) and plain.sample(0, gen(), "train")["inputs"].shape == (0, 64)
    test_p = permuted.sample(0, gen(), "test")
    assert torch.equal(test["labels"], test_p["labels"])
    assert not torch.equal(test["inputs"], test_p["inputs"])
    assert torch.equal(test["inputs"].sort(1).values, test_p["inputs"].sort(1).values)
    # one fixed order for every image: some column of the plain images equals each permuted column
    columns = {tuple(c) for c in test["inputs"].T.tolist()}
    assert all(tuple(c) in columns for c in test_p["inputs"].T.tolist())
    train = plain.sample(64, gen(), "train")
    assert train["inputs"].shape == (64, 64) and train["labels"].shape == (64,)
    assert plain.metrics(torch.eye(10)[test["labels"]], test["labels"]) == {"accuracy": 1.0}


def test_digits_2d_reads_the_split_of_digits_as_images():
    from recur.tasks.digits import DigitsConfig
    from recur.tasks.digits_2d import Digits2D

    flat, images = build_task("digits"), build_task("digits_2d")
    for split in ("val", "test"):
        pixels, scaled_images = flat.sample(0, gen(), split), images.sample(0, gen(), split)
        assert torch.equal(pixels["labels"], scaled_images["labels"])
        assert torch.equal(scaled_images["inputs"], (pixels["inputs"].float() / 16).view(-1, 1, 8, 8))
    assert images.image_shape == (1, 8, 8) and images.num_outputs == 10 and images.tokens_per_example() == 64
    with pytest.raises(TypeError, match="takes a Digits2DConfig; got DigitsConfig"):
        Digits2D(DigitsConfig())


def test_unknown_task_and_option_are_named():
    with pytest.raises(ValueError, match="unknown task 'parit'; did you mean 'parity'"):
        build_task("parit")
    with pytest.raises(TypeError, match="num_pairs"):
        build_task("mqar", num_pairs=3)
    with pytest.raises(ValueError, match=r"task.group must be one of"):
        build_task("permutation", group="S6")
    assert {"parity", "mod_arith", "permutation", "mqar", "digits"} <= set(TASKS)


def test_a_taken_task_name_is_refused():
    from recur.tasks import register_task
    from recur.tasks.parity import Parity

    class Impostor(Parity):
        pass

    with pytest.raises(ValueError, match="task 'mqar' is already registered"):
        register_task("mqar")(Impostor)
    assert Impostor.name == "parity" and TASKS["parity"] is Parity
    # registering the same class again (a re-imported module) is not an error
    assert register_task("parity")(Parity) is Parity


def test_all_groups_closed_under_composition():
    for group in ("S3", "A5"):
        elements = set(group_elements(group))
        for a, b in itertools.islice(itertools.product(elements, repeat=2), 400):
            assert tuple(a[b[i]] for i in range(len(a))) in elements


def test_selective_copy_labels_are_the_data_in_order():
    task = build_task("selective_copy", vocab_size=10, seq_len=20, num_tokens=5)
    batch = task.sample(50, gen(), "train")
    assert batch["inputs"].shape == (50, 25)
    for inputs, labels in zip(batch["inputs"], batch["labels"], strict=True):
        region = inputs[:20]
        assert region[region != 0].tolist() == labels[20:].tolist()
        assert (inputs[20:] == 1).all() and (labels[:20] == IGNORE).all()
        assert (region != 1).all()
    logits = one_hot_logits(batch["labels"], 10)
    logits[0, 22] = logits[0, 22].roll(1)
    scores = task.metrics(logits, batch["labels"])
    assert scores["accuracy"] == pytest.approx(1 - 1 / 250) and scores["sequence_accuracy"] == pytest.approx(49 / 50)


def test_induction_heads_answer_follows_the_first_special_token():
    task = build_task("induction_heads", vocab_size=8, seq_len=16, test_seq_len=40)
    for split, T in (("train", 16), ("test", 40)):
        batch = task.sample(100, gen(), split)
        assert batch["inputs"].shape == (100, T)
        for inputs, labels in zip(batch["inputs"], batch["labels"], strict=True):
            special = (inputs == 0).nonzero().flatten().tolist()
            assert len(special) == 2 and special[1] == T - 1 and special[0] <= T - 3
            assert (labels != IGNORE).nonzero().flatten().tolist() == [T - 1]
            assert labels[-1] == inputs[special[0] + 1] != 0


def test_lm_windows_and_bits_per_byte(tmp_path):
    text = "the quick brown fox jumps over the lazy dog. " * 40
    (tmp_path / "a.txt").write_text(text)
    task = build_task("lm", path=str(tmp_path / "a.txt"), seq_len=16, held_out_fraction=0.25)
    corpus = text.encode()
    batch = task.sample(10, gen(), "train")
    assert torch.equal(batch["inputs"][:, 1:], batch["labels"][:, :-1])
    for window in batch["inputs"].tolist():
        assert bytes(window) in corpus[: int(len(corpus) * 0.75)]
    # a uniform prediction over 256 bytes costs exactly 8 bits
    assert task.metrics(torch.zeros(10, 16, 256), batch["labels"])["bits_per_byte"] == pytest.approx(8.0)
    # the default corpus is Python's own reference text
    default = build_task("lm")
    assert len(default.splits()["train"]) > 100_000 and task.vocab_size == default.vocab_size == 256


def test_lm_folder_and_bad_corpora(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "one.txt").write_text("a" * 300)
    (tmp_path / "d" / "two.txt").write_text("b" * 300)
    task = build_task("lm", path=str(tmp_path / "d"), seq_len=8)
    assert len(task.splits()["train"]) + len(task.splits()["val"]) + len(task.splits()["test"]) == 601
    with pytest.raises(FileNotFoundError, match="nowhere.txt' does not exist"):
        build_task("lm", path=str(tmp_path / "nowhere.txt"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("")
    with pytest.raises(ValueError, match="holds an empty corpus"):
        build_task("lm", path=str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="holds 600 bytes; seq_len = 128 with held_out_fraction = 0.1 needs at least 2580"):
        build_task("lm", path=str(tmp_path / "d"), seq_len=128)
