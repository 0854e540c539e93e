"""Modular arithmetic: evaluate an expression over the integers mod 5.

The state-tracking tasks of Grazzi et al. (arXiv:2411.12537), after the xLSTM
formal-language harness. Without brackets: numbers and the operators + - * with the
usual precedence (* binds tighter); tokens pad 0, '+' 1, '-' 2, '*' 3, '=' 4, numbers
0..4 as 5..9. With brackets: a random expression tree of + and - with unary minus and
brackets; tokens numbers 0..4 as 0..4, '+' 5, '-' 6, '*' 7, '(' 8, ')' 9, '=' 10, pad 11.
The answer is scored at '='; the metric is the scaled accuracy (acc - 1/5) / (1 - 1/5).
An optional length curriculum widens the training lengths over the first steps.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .base import IGNORE, Batch, ScaledAccuracyTask, TaskConfig, check_range, register_task

MODULUS = 5
# without brackets
PLAIN = {"pad": 0, "+": 1, "-": 2, "*": 3, "=": 4, "number": 5}
# with brackets
BRACKETS = {"number": 0, "+": 5, "-": 6, "*": 7, "(": 8, ")": 9, "=": 10, "pad": 11}


@dataclass(kw_only=True)
class ModArithConfig(TaskConfig):
    brackets: bool = False
    # input length including '=', sampled uniformly in [low, high] (without brackets it
    # is rounded down to an even number: numbers and operators alternate)
    train_lengths: tuple[int, int] = (3, 40)
    test_lengths: tuple[int, int] = (40, 256)
    # length curriculum: over the first curriculum_steps optimiser steps the longest
    # training input grows linearly from curriculum_start to train_lengths[1] (0 = off);
    # a recurrent model learns the short expressions first and their rules carry over
    curriculum_steps: int = 0
    curriculum_start: int = 6

    def __post_init__(self) -> None:
        super().__post_init__()
        self.train_lengths = check_range("train_lengths", tuple(self.train_lengths), minimum=2)
        self.test_lengths = check_range("test_lengths", tuple(self.test_lengths), minimum=2)
        if not isinstance(self.curriculum_steps, int) or self.curriculum_steps < 0:
            raise ValueError(f"task.curriculum_steps must be an int >= 0; got {self.curriculum_steps!r}")
        low, high = self.train_lengths
        if not isinstance(self.curriculum_start, int) or not low <= self.curriculum_start <= high:
            raise ValueError(
                f"task.curriculum_start must be an int in train_lengths [{low}, {high}]; got {self.curriculum_start!r}"
            )

    def lengths_at(self, step: int) -> tuple[int, int]:
        """The training length range of optimiser step `step` (0-based) under the curriculum."""
        low, high = self.train_lengths
        if step >= self.curriculum_steps:
            return low, high
        start = self.curriculum_start
        return low, start + (high - start) * step // self.curriculum_steps


def plain_expression(length: int, rng: random.Random) -> tuple[list[int], int]:
    """Tokens of `n op n op ... n =` with `length` tokens (even), and the value mod 5."""
    numbers = [rng.randrange(MODULUS) for _ in range(length // 2)]
    ops = [rng.choice("+-*") for _ in range(length // 2 - 1)]
    # precedence: fold each run of products into one term, then add the signed terms
    value, term, sign = 0, numbers[0], 1
    for op, number in zip(ops, numbers[1:], strict=True):
        if op == "*":
            term = term * number % MODULUS
        else:
            value += sign * term
            term, sign = number, (1 if op == "+" else -1)
    value = (value + sign * term) % MODULUS
    tokens = [PLAIN["number"] + numbers[0]]
    for op, number in zip(ops, numbers[1:], strict=True):
        tokens += [PLAIN[op], PLAIN["number"] + number]
    return tokens + [PLAIN["="]], value


def bracket_expression(length: int, rng: random.Random) -> tuple[list[int], int]:
    """A random expression of exactly `length` tokens (>= 1) and its value mod 5.

    E(L) is a number (L = 1), a negated atom "- A" (L = 2), or for L >= 3 one of
    "( E(L-2) )", "- A(L-1)" and "E(L-2) ± n"; an atom A is a number or a bracketed E,
    so sums stay left-associative and need no precedence.
    """
    if length == 1:
        number = rng.randrange(MODULUS)
        return [BRACKETS["number"] + number], number
    if length == 2:
        number = rng.randrange(MODULUS)
        return [BRACKETS["-"], BRACKETS["number"] + number], -number % MODULUS
    choice = rng.randrange(3)
    if choice == 0:
        tokens, value = bracket_expression(length - 2, rng)
        return [BRACKETS["("], *tokens, BRACKETS[")"]], value
    if choice == 1 and length - 1 >= 3:
        tokens, value = bracket_expression(length - 3, rng)
        return [BRACKETS["-"], BRACKETS["("], *tokens, BRACKETS[")"]], -value % MODULUS
    left, value = bracket_expression(length - 2, rng)
    op, number = rng.choice("+-"), rng.randrange(MODULUS)
    value = (value + number if op == "+" else value - number) % MODULUS
    return [*left, BRACKETS[op], BRACKETS["number"] + number], value


@register_task("mod_arith")
class ModArith(ScaledAccuracyTask):
    """Expressions mod 5, with or without brackets; train short, validate and test long (scaled accuracy)."""

    Config = ModArithConfig
    answers = MODULUS

    def __init__(self, config: ModArithConfig) -> None:
        super().__init__(config)
        self.tokens = BRACKETS if config.brackets else PLAIN
        self.vocab_size = 12 if config.brackets else 10
        self.pad_token = self.tokens["pad"]

    def generate(self, n: int, generator: torch.Generator, split: str) -> Batch:
        lengths = self.config.train_lengths if split == "train" else self.config.test_lengths
        return self.expressions(n, generator, lengths)

    def train_batch(self, n: int, generator: torch.Generator, step: int) -> Batch:
        # padded to the step's longest length, so the short early batches are cheap
        lengths = self.config.lengths_at(step)
        return self.disjoint(n, generator, "train", lambda m: self.expressions(m, generator, lengths))

    def expressions(self, n: int, generator: torch.Generator, lengths: tuple[int, int]) -> Batch:
        """n expressions with lengths uniform in `lengths`, padded to its upper end."""
        low, high = lengths
        # the expressions are recursive Python; seed Python's RNG from the torch generator
        rng = random.Random(int(torch.randint(0, 2**62, (1,), generator=generator)))
        inputs = torch.full((n, high), self.tokens["pad"])
        labels = torch.full((n, high), IGNORE)
        for i in range(n):
            length = rng.randint(low, high)
            if self.config.brackets:
                tokens, value = bracket_expression(length - 1, rng)
                tokens.append(BRACKETS["="])
            else:
                tokens, value = plain_expression(max(2, length - length % 2), rng)
            inputs[i, : len(tokens)] = torch.tensor(tokens)
            labels[i, len(tokens) - 1] = self.tokens["number"] + value
        return {"inputs": inputs, "labels": labels}
