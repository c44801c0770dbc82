"""`judge:PATH_OR_HUB_ID` and `judge:self`: an LLM reads the exchange and gives a verdict, parsed strictly.

    reward.functions=[judge:path/to/judge-model]
    reward.options={"judge:path/to/judge-model": {template: pairwise, reference_column: chosen}}

The judge runs through a second rollout engine of the policy engine's kind (vLLM where the policy's
is vLLM, transformers otherwise), built by the trainer for the judge's folder or hub id; `judge:self`
asks the policy's own engine (same weights as the policy at that step; for small set-ups and tests).
Every call is one batched, greedy generate over all of this rank's completions, so a verdict depends
only on its own input. The judge prompt goes through the judge's own chat template as one user turn.

Built-in templates (the wording is ours; the verdict lines are what the parser accepts):

- `pointwise`: the judge sees the conversation and the reply and must answer with exactly one line
  `Rating: N`, N an integer from 1 (worst) to 10 (best). Reward = (N - 1) / 9, in [0, 1].
- `pairwise` (GRAO, ALGORITHMS.md s.3): the judge also sees a reference answer (the dataset column
  `reference_column`, e.g. HH's chosen reply) and must answer with exactly one line
  `Verdict: better`, `Verdict: tie` or `Verdict: worse` (the reply compared with the reference).
  Reward = +1 / 0 / -1, as GRAO's judge returns.

Parsing is strict: the whole output, stripped of surrounding whitespace, must be the verdict line.
Anything else (reasoning before it, a different spelling, a cut-off output) scores None ("not
applicable": no contribution to the total; a completion no function could score gets advantage 0)
and is counted in reward/<name>/unparseable_frac. A judge prompt longer than max_prompt_tokens is
not cut (cutting would hide the reply or the instructions): it scores None and is counted in
reward/<name>/overlong_frac, or stops training with overlong=error.

Options (reward.options under the spec):
  template          "pointwise" (default) | "pairwise"
  prompt            null (the built-in text) | your own text with {conversation} and {response}
                    (and {reference} for pairwise); the verdict line format stays the template's
  reference_column  dataset column with the reference answer (pairwise; default "reference")
  max_tokens        judge output budget in tokens (default 32)
  max_prompt_tokens longest judge prompt in tokens (default 3072)
  overlong          "skip" (default: None + counted) | "error"
  engine_options    extra rollout-engine arguments for the judge's own engine, e.g.
                    {gpu_memory_utilization: 0.2, dtype: bfloat16} (not for judge:self)
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from align.models import load_tokenizer
from align.rollout import SamplingSettings, chat_prompt_ids
from rewards.context import ModelReward, ModelRewardError, RewardContext, text_of

POINTWISE_PROMPT = """You are grading an AI assistant's reply in a conversation with a user.

[Conversation]
{conversation}

[Assistant's reply]
{response}

Rate the reply for helpfulness, correctness and harmlessness on a scale from 1 (worst) to 10 (best).
Answer with exactly one line of the form
Rating: N
where N is an integer from 1 to 10, and write nothing else."""

PAIRWISE_PROMPT = """You are comparing an AI assistant's reply with a reference reply to the same conversation.

[Conversation]
{conversation}

[Reference reply]
{reference}

[Assistant's reply]
{response}

Is the assistant's reply better than, as good as, or worse than the reference reply, judging
helpfulness, correctness and harmlessness? Answer with exactly one line, one of
Verdict: better
Verdict: tie
Verdict: worse
and write nothing else."""

_RATING = re.compile(r"Rating: (10|[1-9])")
_VERDICT = re.compile(r"Verdict: (better|tie|worse)")
VERDICT_REWARD = {"better": 1.0, "tie": 0.0, "worse": -1.0}


def parse_pointwise(output: str) -> float | None:
    """(N - 1) / 9 for an output that is exactly "Rating: N" (1 <= N <= 10), else None."""
    match = _RATING.fullmatch(output.strip())
    return None if match is None else (int(match.group(1)) - 1) / 9


def parse_pairwise(output: str) -> float | None:
    """+1 / 0 / -1 for an output that is exactly "Verdict: better|tie|worse", else None."""
    match = _VERDICT.fullmatch(output.strip())
    return None if match is None else VERDICT_REWARD[match.group(1)]


TEMPLATES = {"pointwise": (POINTWISE_PROMPT, parse_pointwise), "pairwise": (PAIRWISE_PROMPT, parse_pairwise)}


def render_conversation(prompt: Any) -> str:
    """The prompt as the judge reads it: plain text as is, chat messages as "Role: content" lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in prompt)


class Judge(ModelReward):
    prefix = "judge"
    _options = dict(template="pointwise", prompt=None, reference_column="reference", max_tokens=32,
                    max_prompt_tokens=3072, overlong="skip", engine_options={})

    def __init__(self, target: str):
        super().__init__(target)
        self.engine = self.tokenizer = self.engine_path = None
        self.owns_engine = False
        self._warned_overlong = False

    def _check_options(self) -> None:
        o = self.options
        where = f"reward.options for {self.prefix}:{self.target}"
        if o["template"] not in TEMPLATES:
            raise ModelRewardError(f"{where}: template={o['template']!r}; choose one of {', '.join(TEMPLATES)}")
        if o["overlong"] not in ("skip", "error"):
            raise ModelRewardError(f"{where}: overlong={o['overlong']!r}; choose skip or error")
        for key in ("max_tokens", "max_prompt_tokens"):
            if not (isinstance(o[key], int) and o[key] >= 1):
                raise ModelRewardError(f"{where}: {key}={o[key]!r} must be a positive integer")
        needed = ["{conversation}", "{response}"] + (["{reference}"] if o["template"] == "pairwise" else [])
        if o["prompt"] is not None:
            missing = [field for field in needed if field not in o["prompt"]]
            if missing:
                raise ModelRewardError(f"{where}: prompt lacks {', '.join(missing)}; the {o['template']} template needs {needed}")
        if not isinstance(o["engine_options"], dict):
            raise ModelRewardError(f"{where}: engine_options must be a mapping, e.g. {{gpu_memory_utilization: 0.2}}")
        if self.target == "self" and o["engine_options"]:
            raise ModelRewardError(f"{where}: judge:self uses the policy's engine; engine_options do not apply")

    @property
    def parse(self):
        return TEMPLATES[self.options["template"]][1]

    def _load(self, context: RewardContext) -> None:

        if self.target == "self":
            if context.policy_engine is None or context.policy_tokenizer is None:
                raise ModelRewardError("judge:self needs the policy's rollout engine and tokenizer in the RewardContext")
            self.engine, self.tokenizer, self.owns_engine = context.policy_engine, context.policy_tokenizer, False
            return
        if context.make_engine is None:
            raise ModelRewardError(f"{self.__name__}: the RewardContext has no make_engine to build the judge's engine")
        path = self.engine_path = context.resolve_model(self.target, context.cache_dir)
        self.tokenizer = load_tokenizer(path)
        o = self.options
        self.engine = context.make_engine(path, max_model_len=o["max_prompt_tokens"] + o["max_tokens"], **o["engine_options"])
        self.owns_engine = True

    def close(self) -> None:
        if self.owns_engine and self.engine is not None:
            self.engine.close()
        self.engine = None

    def judge_prompt(self, prompt: Any, completion: Any, reference: Any = None) -> str:
        """The text of the judge's one user turn for this sample."""
        text = self.options["prompt"] or TEMPLATES[self.options["template"]][0]
        fields = {"conversation": render_conversation(prompt), "response": text_of(completion)}
        if self.options["template"] == "pairwise":
            fields["reference"] = text_of(reference)
        return text.format(**fields)

    def encode(self, text: str) -> list[int]:

        if getattr(self.tokenizer, "chat_template", None):
            return chat_prompt_ids(self.tokenizer, [{"role": "user", "content": text}])
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _score(self, prompts, completions, columns, log_metric) -> list[float | None]:

        references = [None] * len(prompts)
        if self.options["template"] == "pairwise":
            column = self.options["reference_column"]
            if column not in columns:
                names = sorted(k for k in columns if k not in ("completion_ids", "trainer_state", "log_extra"))
                raise ModelRewardError(
                    f"{self.__name__}: the pairwise template needs the reference answer in column {column!r}; "
                    f"the dataset has {names}; set reference_column"
                )
            references = columns[column]
        ids = [self.encode(self.judge_prompt(p, c, r)) for p, c, r in zip(prompts, completions, references)]
        limit = self.options["max_prompt_tokens"]
        overlong = [i for i, seq in enumerate(ids) if len(seq) > limit]
        if overlong and self.options["overlong"] == "error":
            raise ModelRewardError(f"{self.__name__}: judge prompt {overlong[0]} has {len(ids[overlong[0]])} tokens > "
                                   f"max_prompt_tokens={limit}; raise it or set overlong=skip")
        if overlong and not self._warned_overlong:
            warnings.warn(f"{self.__name__}: {len(overlong)} of {len(ids)} judge prompts exceed max_prompt_tokens={limit} "
                          "and score None (reward/<name>/overlong_frac counts them every step)", stacklevel=2)
            self._warned_overlong = True
        skipped = set(overlong)
        todo = [i for i in range(len(ids)) if i not in skipped]
        scores: list[float | None] = [None] * len(ids)
        if todo:
            greedy = SamplingSettings(max_tokens=self.options["max_tokens"], temperature=0.0, seed=0)
            outputs = self.engine.generate([ids[i] for i in todo], 1, greedy)
            for i, group in zip(todo, outputs):
                scores[i] = self.parse(group[0].text)
        unparseable = sum(scores[i] is None for i in todo)
        n = max(len(ids), 1)
        log_metric("unparseable_frac", unparseable / n)
        log_metric("overlong_frac", len(overlong) / n)
        return scores
