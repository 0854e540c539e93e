"""Single-needle retrieval: a needle "key → value" in a haystack, then the key; emit the value.

The token-level analogue of RULER's single needle-in-a-haystack tasks (S-NIAH; Hsieh et al.,
"RULER: What's the Real Context Size of Your Long-Context Language Models?",
arXiv:2404.06654). A sequence of length T reads

    haystack[:d]  NEEDLE k_1..k_K SEP v_1..v_L  haystack[d:]  QUERY k_1..k_K ANSWER v_1..v_{L-1}

and the model must emit v_1..v_L at ANSWER, v_1, ..., v_{L-1} (teacher forcing: with every
one of those L predictions right, greedy decoding writes the value). The haystack is
RULER's noise (`haystack="repeat"`: one fixed "sentence" of `pattern_length` filler tokens
repeated, the needle placed between two sentences) or the token analogue of its essays
(`"random"`: filler tokens drawn independently, the needle at any position). The depth d is
uniform over the places allowed. The value is RULER's variants at token level:

    passkey   5 decimal digits, the first non-zero (the passkey retrieval of Mohtashami and
              Jaggi, arXiv:2305.16300)
    number    7 decimal digits, the first non-zero (RULER's numbers)
    uuid      8 hexadecimal digits (a group of a uuid; RULER's uuids)

Fillers, keys, digits and markers are disjoint sets of tokens. `val/accuracy` is the exact
match of the whole value; `token_accuracy` is the fraction of value tokens right.

Training, validation and test draw at `seq_len`; the extra test splits `test_<length>`
(one per entry of `test_lengths`) draw the same task at the longer lengths, with the
test split's hash buckets, and are read once, at the end, with the test split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import (
    IGNORE,
    Batch,
    Task,
    TaskConfig,
    check_test_lengths,
    example_accuracy,
    length_of,
    register_task,
)

# markers: "One of the special magic numbers for", "is:", "What is the special magic number
# for", and the question's end, after which the value is written
NEEDLE, SEP, QUERY, ANSWER = 0, 1, 2, 3
# hexadecimal digits 0-f: tokens 4-19 (decimal digits are the first ten)
DIGITS = 4
HEX = 16
KEYS = DIGITS + HEX
# value kind: (alphabet, default length, whether the first digit is non-zero)
VALUES = {"passkey": (10, 5, True), "number": (10, 7, True), "uuid": (HEX, 8, False)}
HAYSTACKS = ("repeat", "random")


@dataclass(kw_only=True)
class NIAHConfig(TaskConfig):
    # the training, validation and test length
    seq_len: int = 256
    # extra test splits test_<length>, read at the end
    test_lengths: tuple[int, ...] = (1024, 4096)
    # "passkey" (5 digits), "number" (7 digits) or "uuid" (8 hexadecimal digits)
    value: str = "passkey"
    # digits in the value; 0 = the kind's own length
    value_length: int = 0
    # "repeat": one filler sentence over and over (RULER's noise); "random": random fillers
    haystack: str = "repeat"
    # key tokens per key, and how many key tokens there are
    key_length: int = 2
    num_keys: int = 32
    # filler tokens, and the length of the repeated sentence
    num_fillers: int = 64
    pattern_length: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.value not in VALUES:
            raise ValueError(f"task.value must be one of {list(VALUES)}; got {self.value!r}")
        if self.haystack not in HAYSTACKS:
            raise ValueError(f"task.haystack must be one of {list(HAYSTACKS)}; got {self.haystack!r}")
        for name in ("seq_len", "key_length", "num_keys", "num_fillers", "pattern_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"task.{name} must be a positive int; got {value!r}")
        if not isinstance(self.value_length, int) or self.value_length < 0:
            raise ValueError(f"task.value_length must be a non-negative int (0 = the kind's own); got {self.value_length!r}")
        if self.pattern_length > self.num_fillers:
            raise ValueError(
                f"task.pattern_length = {self.pattern_length} must be at most task.num_fillers = {self.num_fillers} "
                "(the sentence repeats distinct fillers)"
            )
        if self.seq_len < self.min_length:
            raise ValueError(
                f"task.seq_len = {self.seq_len} is too short: the needle and the query take {self.min_length - 1} "
                f"tokens and the haystack at least one; expected seq_len >= {self.min_length}"
            )
        self.test_lengths = check_test_lengths("test_lengths", self.test_lengths, self.seq_len, self.min_length)

    @property
    def digits(self) -> int:
        """L, the value's length in tokens."""
        return self.value_length or VALUES[self.value][1]

    @property
    def min_length(self) -> int:
        """The shortest sequence: needle (K + L + 2) and query (K + L + 1) around one filler."""
        return 2 * self.key_length + 2 * self.digits + 4


@register_task("niah")
class NIAH(Task):
    """Single-needle retrieval (RULER's S-NIAH): passkey, number or uuid; test_<T> at longer lengths."""

    Config = NIAHConfig
    # the metric reads the answer positions only; evaluation keeps the logits there alone
    scored_positions_only = True

    def __init__(self, config: NIAHConfig) -> None:
        super().__init__(config)
        self.fillers = KEYS + config.num_keys
        self.vocab_size = self.fillers + config.num_fillers
        self.eval_splits = ("val", "test", *(f"test_{length}" for length in config.test_lengths))

    def generate(self, n: int, generator: torch.Generator, split: str) -> Batch:
        c = self.config
        T, K, L = length_of(split, c.seq_len), c.key_length, c.digits
        alphabet, _, leading_nonzero = VALUES[c.value]
        keys = KEYS + torch.randint(0, c.num_keys, (n, K), generator=generator)
        digits = torch.randint(0, alphabet, (n, L), generator=generator)
        if leading_nonzero:
            digits[:, 0] = torch.randint(1, alphabet, (n,), generator=generator)
        values = DIGITS + digits  # [n, L]
        column = torch.ones(n, 1, dtype=torch.long)
        needle = torch.cat([NEEDLE * column, keys, SEP * column, values], 1)  # [n, K + L + 2]
        query = torch.cat([QUERY * column, keys, ANSWER * column, values[:, :-1]], 1)  # [n, K + L + 1]
        H = T - needle.shape[1] - query.shape[1]
        if c.haystack == "repeat":
            sentence = self.fillers + torch.arange(c.pattern_length)
            haystack = sentence.repeat(H // c.pattern_length + 1)[:H].expand(n, H)
            # between two sentences: d in {0, P, 2P, ...} up to H
            depth = c.pattern_length * torch.randint(0, H // c.pattern_length + 1, (n, 1), generator=generator)
        else:
            haystack = self.fillers + torch.randint(0, c.num_fillers, (n, H), generator=generator)
            depth = torch.randint(0, H + 1, (n, 1), generator=generator)
        # haystack[:d], the needle, haystack[d:]: each position reads one of the two
        position = torch.arange(H + needle.shape[1])[None]  # [1, H + K + L + 2]
        in_needle = (position >= depth) & (position < depth + needle.shape[1])
        from_haystack = torch.where(position < depth, position, position - needle.shape[1]).clamp(0, H - 1)
        from_needle = (position - depth).clamp(0, needle.shape[1] - 1)
        body = torch.where(in_needle, needle.gather(1, from_needle), haystack.gather(1, from_haystack))
        inputs = torch.cat([body, query], 1)  # [n, T]
        labels = torch.full((n, T), IGNORE)
        # ANSWER predicts v_1, v_i predicts v_{i+1}
        labels[:, T - L:] = values
        return {"inputs": inputs, "labels": labels}

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        per_example = example_accuracy(logits, labels)
        return {"accuracy": float((per_example == 1).float().mean()), "token_accuracy": float(per_example.mean())}
