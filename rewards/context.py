"""Model-based rewards (`rm:` reward models, `judge:` LLM judges) and what the trainer hands them.

A plain reward function is pure: strings in, floats out, so it can run anywhere (a helper thread,
a worker process). A model reward is different: it holds a model on the trainer's device, may take
part in collectives (a ZeRO-3-sharded forward, a running mean over all ranks) and, for `judge:self`,
uses the policy's own rollout engine. So:

- it is a `ModelReward` object with TRL's call signature (it plugs into `reward.functions` like any
  other reward, is weighted, and its rewards are logged per function);
- it is created unloaded from its spec (`rewards.registry.get_reward_function("rm:PATH")`), takes
  its `reward.options` through `configure(**options)`, and loads its model in `bind(context)`;
- the trainer calls `bind_model_rewards(reward_functions_of(algorithm), RewardContext(...))` once,
  after it has built its accelerator and rollout engine; calling an unbound model reward is a
  one-line error;
- every rank calls it equally often (a rank with nothing to score in a round calls `idle()`), so
  it may run collectives;
- the runner (`rewards.runner.compute_rewards`) calls it IN the training process and thread
  (`in_process = True`): never in a worker process or a time-limited helper thread, because its
  model lives on this process's device and an abandoned call could leave a collective half done.

Extra numbers (truncations, unparseable verdicts, raw scores before normalisation) go through the
`log_metric(name, value)` hook every reward function receives; they reach metrics.jsonl.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from align.models import resolve_model_path


class ModelRewardError(RuntimeError):
    """A model reward is misconfigured or was used before the trainer bound it; one line, with the fix."""


@dataclass
class RewardContext:
    """What a model reward needs from the trainer, handed over once by `bind_model_rewards`.

    device: where reward models run (the trainer's device).
    dtype: the trainer's dtype name ("float32", "bfloat16", ...), the default for reward models.
    accelerator: the trainer's accelerate.Accelerator (world size, reductions, ZeRO stage), or None
        for a single process outside training (tests, scripts).
    policy_engine / policy_tokenizer: the policy's rollout engine and tokenizer (`judge:self`).
    make_engine: builds another rollout engine of the policy engine's kind (vLLM where the policy's
        is vLLM, transformers otherwise) for a model path; keyword arguments override engine options.
    cache_dir: the trainer's model.cache_dir, so `rm:`/`judge:` accept built-in names like the policy.
    resolve_model: how a model name becomes a folder (the layer above passes one that knows the demo models).
    """

    device: torch.device | str = "cpu"
    dtype: str = "float32"
    accelerator: Any = None
    policy_engine: Any = None
    policy_tokenizer: Any = None
    make_engine: Callable[..., Any] | None = None
    cache_dir: str = "~/.cache/align"  # where built-in model names (tiny, tiny@1, ...) are built
    # (name, cache_dir) -> folder: the trainer passes align.demo's, which also builds tiny-geometry etc.
    resolve_model: Callable[[str, str], str] = resolve_model_path

    @property
    def world_size(self) -> int:
        return 1 if self.accelerator is None else int(self.accelerator.num_processes)

    def sum_over_ranks(self, values: list[float]) -> list[float]:
        """Element-wise sum of `values` over all ranks (every rank must call it, same length)."""
        if self.world_size == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
        return self.accelerator.reduce(t, reduction="sum").tolist()

    def max_over_ranks(self, value: int) -> int:
        """The largest `value` any rank holds (every rank must call it)."""
        if self.world_size == 1:
            return value
        t = torch.tensor([value], device=self.accelerator.device)
        return int(self.accelerator.gather(t).max().item())


class ModelReward:
    """Base of rewards computed by a model. Subclasses set `prefix`, define `_options` (name ->
    default), `_load(context)` and `_score(prompts, completions, columns, log_metric)`."""

    prefix = ""  # "rm" or "judge": the spec is f"{prefix}:{target}"
    in_process = True  # rewards.runner runs it in the calling thread (module docstring)
    _options: dict[str, Any] = {}

    def __init__(self, target: str):
        if not target:
            raise ModelRewardError(f"'{self.prefix}:' needs a model after the colon, e.g. {self.prefix}:path/to/model")
        self.target = target
        self.options = dict(self._options)
        self.context: RewardContext | None = None
        self.__name__ = self._default_name()

    def _default_name(self) -> str:
        # Metric keys use it ("reward/<name>/mean"): the last path component keeps them short.
        return f"{self.prefix}:{self.target.rstrip('/').rsplit('/', 1)[-1]}"

    def configure(self, **options: Any) -> ModelReward:
        """Set options from `reward.options` (unknown names are an error); returns self."""
        unknown = sorted(set(options) - set(self._options) - {"name"})
        if unknown:
            raise ModelRewardError(
                f"{self.prefix}:{self.target}: unknown option(s) {unknown}; known: {sorted(self._options)} and name"
            )
        if "name" in options:
            self.__name__ = str(options.pop("name"))
        self.options.update(options)
        self._check_options()
        return self

    def _check_options(self) -> None:
        """Validate self.options (subclasses raise ModelRewardError naming the option)."""

    def bind(self, context: RewardContext) -> None:
        """Load the model for this context (called once by the trainer)."""
        self.context = context
        self._load(context)

    def _load(self, context: RewardContext) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Free what `bind` loaded."""

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float | None]:
        if self.context is None:
            raise ModelRewardError(
                f"reward {self.__name__!r} has no model loaded: a model reward must be bound to the trainer first "
                "(rewards.context.bind_model_rewards(functions, RewardContext(...)))"
            )
        log_metric = kwargs.pop("log_metric", None) or (lambda name, value: None)
        return self._score(list(prompts), list(completions), kwargs, lambda key, value: log_metric(f"{self.__name__}/{key}", value))

    def idle(self) -> None:
        """Take part in this call's collectives with nothing to score. The trainer calls it on a rank
        that has no prompts in a round (a dynamic-sampling refill smaller than the number of ranks)
        while the other ranks score, so every rank runs the same collectives."""
        if self.context is not None:
            self._score([], [], {}, lambda key, value: None)

    def _score(self, prompts: list, completions: list, columns: dict[str, Any],
               log_metric: Callable[[str, float], None]) -> list[float | None]:
        raise NotImplementedError


def unwrap(fn: Any) -> Any:
    """The object behind functools.partial layers."""
    while hasattr(fn, "func") and hasattr(fn, "keywords"):
        fn = fn.func
    return fn


def model_rewards(functions: Sequence[Any]) -> list[ModelReward]:
    """The ModelReward objects among reward functions (rewards.runner.RewardFunction or callables)."""
    out = []
    for item in functions:
        fn = unwrap(getattr(item, "fn", item))
        if isinstance(fn, ModelReward):
            out.append(fn)
    return out


def reward_functions_of(owner: Any) -> list[Any]:
    """Every reward function an algorithm holds: its `reward_functions` list and any other attribute that
    is a reward function or a list of them (GRAO keeps its judge apart from the logged rewards)."""
    found: list[Any] = []
    for value in vars(owner).values():
        items = value if isinstance(value, (list, tuple)) else [value]
        found += [item for item in items if hasattr(item, "fn") and hasattr(item, "weight")]
    return found


def bind_model_rewards(functions: Sequence[Any], context: RewardContext) -> list[ModelReward]:
    """Load every model reward among `functions` for `context`; returns them (empty when none).
    The same object listed twice is loaded once."""
    bound = list({id(r): r for r in model_rewards(functions)}.values())
    for reward in bound:
        reward.bind(context)
    return bound


def text_of(message_or_text: Any) -> str:
    """The text of a completion or prompt as TRL passes it: a string, or chat messages."""
    if isinstance(message_or_text, str):
        return message_or_text
    if isinstance(message_or_text, list):
        return "\n".join(str(m.get("content", "")) for m in message_or_text)
    raise ModelRewardError(f"expected a string or a list of chat messages, got {type(message_or_text).__name__}")


def as_messages(prompt: Any, completion: Any) -> list[dict[str, str]]:
    """One conversation: the prompt's messages (a plain prompt is one user turn) + the assistant's reply."""
    messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    reply = completion if isinstance(completion, list) else [{"role": "assistant", "content": str(completion)}]
    return messages + list(reply)
