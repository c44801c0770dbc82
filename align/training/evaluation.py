"""Held-out evaluation: accuracy as mean@k and pass@k, overall and per group (e.g. problem family).

`align eval model=PATH data.source=... eval.k=4` (align/cli/eval.py) scores any exported model folder;
the trainer calls `evaluate_engine` with its own engine for periodic evaluation. Which reward is the accuracy:
`eval_rewards` (eval.accuracy, else the algorithm's accuracy reward). A source without an eval split
is evaluated on the slice of train that training held out (align/data/holdout.py).
"""

from __future__ import annotations

from collections import defaultdict

import torch

from align.algorithms import algorithm_class
from align.config import ConfigError
from align.rollout import SamplingSettings
from align.sources.prompts import encode_prompt
from rewards.runner import RewardFunction, compute_rewards, load_reward_functions


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples with c correct (Chen et al., 2021, "Evaluating LLMs trained on code")."""
    if n - c < k:
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def evaluate_engine(engine, tokenizer, dataset, accuracy: RewardFunction, rollout_cfg, k: int = 1, seed: int = 0,
                    extra: list[RewardFunction] = (), group_column: str = "family",
                    subset_columns: tuple[str, ...] = ("aux_helps",)) -> dict[str, float]:
    """Sample k completions per held-out prompt and score them.

    Returns eval/mean@k (mean accuracy over all samples), eval/pass@k, the same per value of
    `group_column` when the dataset has it (eval/<value>/...), and eval/<name>/rate for each `extra`
    function. Each of `subset_columns` the dataset has splits the same numbers by its value under
    eval/<column>/<value>/... (booleans as yes/no), e.g. eval/aux_helps/no/aux_construction/rate:
    GCPO's signal of constructions where they hurt.
    """
    rows = [dataset[i] for i in range(len(dataset))]
    prompt_ids = [encode_prompt(tokenizer, row["prompt"]) for row in rows]
    sampling = SamplingSettings(max_tokens=rollout_cfg.max_tokens, temperature=rollout_cfg.temperature,
                                top_p=rollout_cfg.top_p, top_k=rollout_cfg.top_k, stop=list(rollout_cfg.stop), seed=seed)
    groups = engine.generate(prompt_ids, k, sampling)
    flat = [c for group in groups for c in group]
    chat = isinstance(rows[0]["prompt"], list)
    result = compute_rewards(
        [accuracy, *extra],
        [row["prompt"] for row in rows for _ in range(k)],
        [[{"role": "assistant", "content": c.text}] if chat else c.text for c in flat],
        {key: [row[key] for row in rows for _ in range(k)] for key in rows[0] if key != "prompt"},
        [c.token_ids for c in flat],
    )
    acc = torch.tensor([v or 0.0 for v in result.per_function[accuracy.name]]).view(-1, k)
    metrics = _summary("eval", acc, k)
    rates = {fn.name: torch.tensor([v or 0.0 for v in result.per_function[fn.name]]).view(-1, k) for fn in extra}
    metrics |= {f"eval/{name}/rate": vals.mean().item() for name, vals in rates.items()}
    subsets = {"eval": _indices_by_value(rows, group_column)}
    subsets |= {f"eval/{column}": _indices_by_value(rows, column) for column in subset_columns if column != group_column}
    for prefix, by_value in subsets.items():
        if len(by_value) < 2:  # one value: the same numbers as overall
            continue
        for value, idx in sorted(by_value.items()):
            metrics |= _summary(f"{prefix}/{value}", acc[idx], k)
            metrics |= {f"{prefix}/{value}/{name}/rate": vals[idx].mean().item() for name, vals in rates.items()}
    return metrics


def _indices_by_value(rows: list[dict], column: str) -> dict[str, list[int]]:
    """Row indices per value of `column` (booleans named yes/no); empty when rows lack the column."""
    by_value: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if column not in row:
            return {}
        value = row[column]
        by_value[("yes" if value else "no") if isinstance(value, bool) else str(value)].append(i)
    return by_value


def eval_rewards(algorithm, cfg) -> tuple[RewardFunction, list[RewardFunction]]:
    """(the reward scored as accuracy, the others reported as rates) for evaluation.

    The accuracy is eval.accuracy when set (a reward the algorithm trains with, or any other spec);
    else the algorithm's own accuracy reward (its section's `accuracy_reward`, e.g. gcpo); else the
    one reward function whose name says accuracy/correct, or the only one. Never "the first listed":
    a format reward listed first would be reported as accuracy.
    """
    functions = list(algorithm.reward_functions)

    def named(spec: str) -> RewardFunction | None:
        return next((f for f in functions if f.name == spec or spec.endswith(":" + f.name)), None)

    section = algorithm_class(cfg.algo).section  # the algorithm's own config section, e.g. gcpo
    wanted = cfg.eval.accuracy or getattr(getattr(cfg, section or "", None), "accuracy_reward", None)
    if wanted:
        accuracy = named(wanted)
        if accuracy is None:  # not trained on: load it for evaluation only
            accuracy = load_reward_functions([wanted], None, {k: v for k, v in cfg.reward.options.items() if k == wanted})[0]
    else:
        said = [f for f in functions if any(w in f.name.lower() for w in ("accura", "correct"))]
        candidates = said if said else functions
        if len(candidates) != 1:
            raise ConfigError(
                f"evaluation cannot tell which reward measures accuracy among {[f.name for f in functions]}; "
                "set eval.accuracy=<one of them, or another reward spec>"
            )
        accuracy = candidates[0]
    return accuracy, [f for f in functions if f.name != accuracy.name]


def _summary(prefix: str, acc: torch.Tensor, k: int) -> dict[str, float]:
    correct = (acc > 0.5).sum(-1).tolist()
    return {
        f"{prefix}/mean@{k}": acc.mean().item(),
        f"{prefix}/pass@{k}": sum(pass_at_k(k, c, k) for c in correct) / len(correct),
    }
