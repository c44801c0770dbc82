"""The built-in word-problem task: short arithmetic stories with integer answers, for real small
instruct models (e.g. model.name=smollm2-135m-instruct).

Seven families from one operation (add, take away, groups of, share equally) to two (buy then
give away, change from a purchase, full boxes plus loose items). SmolLM2-135M-Instruct solves the
one-step ones some of the time and the two-step ones rarely, so group rewards vary within a group
and GRPO has something to learn from the first step. The prompt asks for the final number in
\\boxed{}; the reward (rewards/word_problems.py) also reads an <answer> tag or the last number, so a
model is scored on the number it reaches, and learning the format is a means, not the whole game.

Splits are decided by a hash of family and parameters (as in align/data/geometry.py): "test" is
held out for every seed, and the seed only decides which problems are drawn and in what order.
Names and objects are chosen from the parameters too, so one problem always reads the same.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from dataclasses import dataclass

SPLITS = ("train", "test")
TEST_FRACTION = 0.25
INSTRUCTION = "Solve the problem. Put the final answer, a single number, in \\boxed{}."
NAMES = ["Tom", "Anna", "Ben", "Lucy", "Sam", "Mia", "Leo", "Emma", "Max", "Nina"]
ITEMS = ["apples", "pencils", "stickers", "marbles", "cookies", "books", "cards", "eggs", "shells", "stamps"]

Params = tuple[int, ...]


@dataclass(frozen=True)
class WordFamily:
    name: str
    steps: int  # arithmetic operations needed
    space: Callable[[], list[Params]]
    render: Callable[[Params, str, str], tuple[str, int]]  # (params, person, item) -> (question, answer)


def _add(p: Params, who: str, item: str) -> tuple[str, int]:
    a, b = p
    return f"{who} has {a} {item}. {who} gets {b} more. How many {item} does {who} have now?", a + b


def _take_away(p: Params, who: str, item: str) -> tuple[str, int]:
    a, b = p
    return f"{who} had {a} {item} and gave {b} of them to a friend. How many {item} does {who} have left?", a - b


def _groups(p: Params, who: str, item: str) -> tuple[str, int]:
    a, b = p
    return f"{who} buys {a} bags with {b} {item} in each bag. How many {item} is that in total?", a * b


def _share(p: Params, who: str, item: str) -> tuple[str, int]:
    a, b = p
    return f"{who} shares {a * b} {item} equally among {a} friends. How many {item} does each friend get?", b


def _buy_then_give(p: Params, who: str, item: str) -> tuple[str, int]:
    a, b, c = p
    return (f"{who} has {a} {item}, buys {b} more, and then gives {c} away. "
            f"How many {item} does {who} have now?", a + b - c)


def _change(p: Params, who: str, item: str) -> tuple[str, int]:
    price, count, paid = p
    return (f"One of the {item} costs {price} dollars. {who} buys {count} of them and pays with {paid} dollars. "
            f"How many dollars of change does {who} get?", paid - price * count)


def _boxes(p: Params, who: str, item: str) -> tuple[str, int]:
    per_box, boxes, loose = p
    return (f"A box holds {per_box} {item}. {who} has {boxes} full boxes and {loose} more {item}. "
            f"How many {item} does {who} have in all?", per_box * boxes + loose)


FAMILIES: dict[str, WordFamily] = {
    f.name: f
    for f in [
        WordFamily("add", 1, lambda: [(a, b) for a in range(2, 40) for b in range(2, 40)], _add),
        WordFamily("take_away", 1, lambda: [(a, b) for a in range(5, 60) for b in range(1, a)], _take_away),
        WordFamily("groups", 1, lambda: [(a, b) for a in range(2, 13) for b in range(2, 13)], _groups),
        WordFamily("share", 1, lambda: [(a, b) for a in range(2, 11) for b in range(2, 13)], _share),
        WordFamily("buy_then_give", 2, lambda: [(a, b, c) for a in range(3, 25) for b in range(2, 20)
                                                for c in range(1, a + b, 3)], _buy_then_give),
        WordFamily("change", 2, lambda: [(p, n, paid) for p in range(2, 10) for n in range(2, 6)
                                         for paid in (20, 50, 100) if paid > p * n], _change),
        WordFamily("boxes", 2, lambda: [(k, b, c) for k in range(3, 13) for b in range(2, 8) for c in range(1, k)], _boxes),
    ]
}


def _digest(family: str, params: Params) -> bytes:
    return hashlib.sha256(f"word:{family}:{params}".encode()).digest()


def split_of(family: str, params: Params) -> str:
    """'test' or 'train' for one problem, from a hash of its family and parameters (seed-free)."""
    return "test" if int.from_bytes(_digest(family, params)[:8], "big") / 2**64 < TEST_FRACTION else "train"


def render(family: str, params: Params) -> tuple[str, int]:
    """The question text and integer answer of one problem; person and item come from its hash."""
    digest = _digest(family, params)
    return FAMILIES[family].render(params, NAMES[digest[8] % len(NAMES)], ITEMS[digest[9] % len(ITEMS)])


def generate_word_problem_rows(split: str, n: int, seed: int = 0, families: list[str] | None = None,
                               system_prompt: str | None = None) -> list[dict]:
    """`n` rows, families in turn, problems drawn without repetition per family (reshuffled when a pool runs out)."""
    if split not in SPLITS:
        raise ValueError(f"word_problems split '{split}' is unknown; use one of {list(SPLITS)}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"word_problems size n={n!r} must be a positive integer")
    names = list(FAMILIES) if families is None else list(families)
    unknown = [f for f in names if f not in FAMILIES]
    if unknown or not names:
        raise ValueError(f"word_problems families {unknown or names} are unknown; choose from {sorted(FAMILIES)}")
    rng = random.Random(f"word_problems:{split}:{seed}")
    pools = {name: [p for p in FAMILIES[name].space() if split_of(name, p) == split] for name in names}
    order: dict[str, list[Params]] = {name: [] for name in names}
    rows = []
    for i in range(n):
        name = names[i % len(names)]
        if not order[name]:
            order[name] = rng.sample(pools[name], len(pools[name]))
        question, answer = render(name, order[name].pop())
        messages = [{"role": "user", "content": f"{question} {INSTRUCTION}"}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        rows.append({"prompt": messages, "answer": str(answer), "family": name, "steps": FAMILIES[name].steps})
    return rows


DEFAULT_SIZES = {"train": 4096, "test": 256}


def _register_builtin_task() -> None:
    from align.data.loading import register_task

    @register_task("word_problems")
    def load_word_problems(split: str = "train", *, cache_dir: str | None = None, size: int | None = None,
                           seed: int = 0, families: list[str] | None = None, system_prompt: str | None = None):
        """Options: size (default 4096 train / 256 test), seed, families (names), system_prompt."""
        from datasets import Dataset

        if split not in DEFAULT_SIZES:
            raise ValueError(f"word_problems split '{split}' is unknown; use one of {list(DEFAULT_SIZES)}")
        return Dataset.from_list(generate_word_problem_rows(split, size or DEFAULT_SIZES[split], seed, families,
                                                            system_prompt))


_register_builtin_task()
