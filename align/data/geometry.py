"""The built-in synthetic geometry task: short angle/length problems with verifiable numeric answers.

Each problem family comes with two reference solutions in GCPO's completion format
(`<think>...</think><answer>N</answer>`):

- `solution_direct` states the final relation with the given numbers and answers at once,
  e.g. `<think>C=180-30-60</think><answer>90</answer>`;
- `solution_aux` first writes an auxiliary construction, an intermediate quantity in
  `<aux>name=expression=value</aux>`, and then the final relation over that value, e.g.
  `<think><aux>S=30+60=90</aux>C=180-90</think><answer>90</answer>`.

Families differ in whether the construction pays (`aux_helps`). In the "helps" families the
direct answer needs two (four-angle family: three) arithmetic operations in one go while the aux
route writes each one down as its own step (`<aux>S=30+40=70;T=70+50=120</aux>D=360-120`). In
the "hurts" families the direct answer is one operation (or a copy) and the aux route is a
detour through a neighbouring angle that adds an operation, i.e. more room for error. A learner that samples both styles can therefore find out,
per family, which style earns reward: what GCPO's group-contrastive mask is meant to pick up.

Pools are large enough that the warm start learns each family's arithmetic rather than a few
memorised answers (with pools of 6-16 problems per split, two families stayed at 0% held-out):
angles in the two-angle families are multiples of 5, in the one-angle families any whole degree,
rectangle sides 1-19; the four-angle family keeps multiples of 10 (its pool is large already).
Each written step is one arithmetic operation, which the tiny character-level model learns in its
warm start (align/demo/warm_start.py drills every such step), while composing two of them
silently stays hard.

Splits: whether a problem is in "test" (held out), "sft" (the warm start's supervised data) or
"train" (the RL prompts) is decided by a hash of its family and parameters, independent of the
seed, so the splits are disjoint by construction for every seed. RL trains on problems the warm
start never saw: otherwise it only polishes memorised answers and held-out accuracy does not move.
The seed only decides which problems are drawn and in what order.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable

SPLITS = ("train", "test", "sft")
TEST_FRACTION = 0.25  # share of each family's problem space held out for evaluation
FORMAT_SYSTEM_PROMPT = (
    "Reply as <think>reasoning</think><answer>number</answer>. "
    "Optionally construct an intermediate quantity inside think as <aux>name=expression=value</aux>."
)

Params = tuple[int, ...]


@dataclass(frozen=True)
class Problem:
    """One rendered problem: the prompt text, the gold answer and the two reference solutions."""

    question: str
    answer: int
    solution_direct: str
    solution_aux: str


@dataclass(frozen=True)
class Family:
    """A problem family: every parameter tuple it can take, and how one tuple renders."""

    name: str
    aux_helps: bool
    space: Callable[[], list[Params]]
    render: Callable[[Params], Problem]


def _solution(think: str, answer: int, aux: str | None = None) -> str:
    aux_block = f"<aux>{aux}</aux>" if aux else ""
    return f"<think>{aux_block}{think}</think><answer>{answer}</answer>"


def _problem(question: str, answer: int, direct: str, aux: str, after_aux: str) -> Problem:
    return Problem(question, answer, _solution(direct, answer), _solution(after_aux, answer, aux))


ANGLES = range(10, 180, 10)  # the four-angle family: 816 problems already
ANGLES_5 = range(5, 180, 5)  # the two-angle families
DEGREES = range(1, 180)  # the one-angle families: every whole degree


# ---- families where the construction helps: two operations otherwise done silently at once ----


def _third_angle(p: Params) -> Problem:
    a, b = p
    s = a + b
    return _problem(f"Triangle ABC: A={a}, B={b}. Find angle C.", 180 - s,
                    f"C=180-{a}-{b}", f"S={a}+{b}={s}", f"C=180-{s}")


def _isosceles_apex(p: Params) -> Problem:
    (b,) = p
    s = 2 * b
    return _problem(f"Triangle ABC: AB=AC, B={b}. Find angle A.", 180 - s,
                    f"A=180-2*{b}", f"S=2*{b}={s}", f"A=180-{s}")


def _rectangle_perimeter(p: Params) -> Problem:
    w, h = p
    s = w + h
    return _problem(f"Rectangle: sides {w} and {h}. Find the perimeter.", 2 * s,
                    f"P=2*({w}+{h})", f"S={w}+{h}={s}", f"P=2*{s}")


def _quad_fourth_angle(p: Params) -> Problem:
    a, b, c = p
    s, t = a + b, a + b + c
    return _problem(f"Quadrilateral ABCD: A={a}, B={b}, C={c}. Find angle D.", 360 - t,
                    f"D=360-{a}-{b}-{c}", f"S={a}+{b}={s};T={s}+{c}={t}", f"D=360-{t}")


# ---- families where it hurts: one operation (or none), and the aux route is a detour ----


def _vertical_angle(p: Params) -> Problem:
    (a,) = p
    return _problem(f"Lines cross; one angle is {a}. Find the vertical angle.", a,
                    f"x={a}", f"y=180-{a}={180 - a}", f"x=180-{180 - a}")


def _supplement(p: Params) -> Problem:
    (a,) = p
    return _problem(f"Angles on a line: one is {a}. Find the other.", 180 - a,
                    f"x=180-{a}", f"y=90-{a}={90 - a}", f"x=90+{90 - a}")


def _exterior_angle(p: Params) -> Problem:
    a, b = p
    c = 180 - a - b
    return _problem(f"Triangle ABC: A={a}, B={b}. Find the exterior angle at C.", a + b,
                    f"x={a}+{b}", f"C=180-{a}-{b}={c}", f"x=180-{c}")


def _alternate_angle(p: Params) -> Problem:
    (a,) = p
    return _problem(f"Parallel lines, transversal: one angle is {a}. Find the alternate angle.", a,
                    f"x={a}", f"y=180-{a}={180 - a}", f"x=180-{180 - a}")


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family("third_angle", True, lambda: [(a, b) for a in ANGLES_5 for b in ANGLES_5 if a + b < 180], _third_angle),
        Family("isosceles_apex", True, lambda: [(b,) for b in DEGREES if b < 90], _isosceles_apex),
        Family("rectangle_perimeter", True, lambda: [(w, h) for w in range(1, 20) for h in range(1, 20)],
               _rectangle_perimeter),
        Family("quad_fourth_angle", True,
               lambda: [(a, b, c) for a in ANGLES for b in ANGLES for c in ANGLES if a + b + c < 360],
               _quad_fourth_angle),
        Family("vertical_angle", False, lambda: [(a,) for a in DEGREES], _vertical_angle),
        Family("supplement", False, lambda: [(a,) for a in DEGREES if a < 90], _supplement),
        Family("exterior_angle", False, lambda: [(a, b) for a in ANGLES_5 for b in ANGLES_5 if a + b < 180],
               _exterior_angle),
        Family("alternate_angle", False, lambda: [(a,) for a in DEGREES], _alternate_angle),
    ]
}


def split_of(family: str, params: Params) -> str:
    """'test', 'sft' or 'train' for one problem, from a hash of its family and parameters (seed-free).

    TEST_FRACTION of each family is held out; the rest is halved between the warm start and RL.
    """
    digest = hashlib.sha256(f"{family}:{params}".encode()).digest()
    if int.from_bytes(digest[:8], "big") / 2**64 < TEST_FRACTION:
        return "test"
    return "sft" if int.from_bytes(digest[8:16], "big") / 2**64 < 0.5 else "train"


def problem_pool(family: str, split: str) -> list[Params]:
    """Every parameter tuple of `family` that belongs to `split`, in a fixed order."""
    return [p for p in FAMILIES[family].space() if split_of(family, p) == split]


def _check_args(split: str, n: int, families: list[str] | None) -> list[str]:
    if split not in SPLITS:
        raise ValueError(f"geometry split '{split}' is unknown; use one of {list(SPLITS)}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"geometry dataset size n={n!r} must be a positive integer")
    names = list(FAMILIES) if families is None else list(families)
    unknown = [f for f in names if f not in FAMILIES]
    if unknown or not names:
        raise ValueError(f"geometry families {unknown or names} are unknown; choose from {sorted(FAMILIES)}")
    return names


def generate_geometry_rows(split: str, n: int, seed: int = 0, families: list[str] | None = None,
                           system_prompt: str | None = None) -> list[dict]:
    """`n` problem rows (plain dicts), families taken in turn, problems drawn by `seed`.

    Within a family, problems are drawn without repetition until its split pool is exhausted,
    then the pool is reshuffled and drawn again (only for n beyond the pool size).
    """
    names = _check_args(split, n, families)
    rng = random.Random(f"geometry:{split}:{seed}")
    pools = {name: problem_pool(name, split) for name in names}
    order: dict[str, list[Params]] = {name: [] for name in names}
    rows = []
    for i in range(n):
        name = names[i % len(names)]
        if not order[name]:
            order[name] = rng.sample(pools[name], len(pools[name]))
        params = order[name].pop()
        family = FAMILIES[name]
        problem = family.render(params)
        messages = [{"role": "user", "content": problem.question}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        rows.append({
            "prompt": messages,
            "answer": str(problem.answer),
            "family": name,
            "aux_helps": family.aux_helps,
            "solution_aux": problem.solution_aux,
            "solution_direct": problem.solution_direct,
            # The worked solution by the route that pays for this family (GRAO's reference answer).
            "solution": problem.solution_aux if family.aux_helps else problem.solution_direct,
        })
    return rows


def make_geometry_dataset(split: str, n: int, seed: int = 0, families: list[str] | None = None,
                          system_prompt: str | None = None):
    """A `datasets.Dataset` of `n` geometry problems from `split` ("train" or "test").

    Columns: prompt (chat messages), answer (str), family (str), aux_helps (bool),
    solution_aux and solution_direct (reference completions for supervised warm starts), and
    solution: the one of the two whose route pays for the family (aux where it helps).
    `system_prompt`: optional system message (e.g. FORMAT_SYSTEM_PROMPT for instruct models;
    the tiny warm-started model is trained without one).
    """
    from datasets import Dataset

    return Dataset.from_list(generate_geometry_rows(split, n, seed, families, system_prompt))


DEFAULT_SIZES = {"train": 4096, "test": 512}


def _register_builtin_task() -> None:
    """Make the task loadable as data.source=geometry (align/data/loading.py)."""
    from align.data.loading import register_task

    @register_task("geometry")
    def load_geometry(split: str = "train", *, cache_dir: str | None = None, size: int | None = None,
                      seed: int = 0, families: list[str] | None = None, system_prompt: str | None = None):
        """Options: size (default 4096 train / 512 test), seed, families (names), system_prompt."""
        if split not in DEFAULT_SIZES:
            raise ValueError(f"geometry split '{split}' is unknown; use one of {list(DEFAULT_SIZES)}")
        return make_geometry_dataset(split, size or DEFAULT_SIZES[split], seed, families, system_prompt)


_register_builtin_task()
