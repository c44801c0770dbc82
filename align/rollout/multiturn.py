"""Multi-turn rollouts: the policy acts, the environment answers, and the token boundary of every
action and observation is kept, so a trainer (SALT) can put loss on action tokens only.

An environment is any object with
    reset() -> str                                   the first user message
    step(action_text) -> (observation_text, reward, done)
(user environments take a task, `reset(task)`; `align.envs.GuardedEnv` binds one to its task and
checks every call, which is how the trainer's episode source calls this runner)

The conversation is rendered with the tokenizer's chat template, but the policy's own tokens are
never re-tokenized: each new prompt is the previous token ids + the observation's ids.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from align.rollout.base import RolloutEngine, SamplingSettings
from align.rollout.prompts import chat_prompt_ids

PROMPT, ACTION, OBSERVATION = "prompt", "action", "observation"


class Environment(Protocol):
    def reset(self) -> str: ...

    def step(self, action_text: str) -> tuple[str, float, bool]: ...


@dataclass
class Episode:
    """One episode as a single token sequence, with per-token labels.

    labels[t] in {"prompt", "action", "observation"}; steps[t] = the step the token belongs to
    (the prompt is step 0's context, action k and the observation answering it are step k);
    logprobs[t] = engine sampling logprob for action tokens, 0.0 elsewhere.
    """

    token_ids: list[int] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    actions: list[str] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    weight_versions: list[int] = field(default_factory=list)
    done: bool = False

    def add(self, ids: Sequence[int], label: str, step: int, logprobs: Sequence[float] | None = None) -> None:
        self.token_ids += list(ids)
        self.labels += [label] * len(ids)
        self.steps += [step] * len(ids)
        self.logprobs += list(logprobs) if logprobs is not None else [0.0] * len(ids)

    @property
    def action_mask(self) -> list[int]:
        return [int(label == ACTION) for label in self.labels]


def chat_observation_formatter(tokenizer) -> Callable[[str, bool], list[int]]:
    """Observation -> token ids that follow the policy's last token, read off the chat template.

    The text is what the template puts between the end of an assistant message and the start of
    the next assistant message (for ChatML: "<|im_end|>" if the action was cut by max_tokens, then
    "\\n<|im_start|>user\\n{obs}<|im_end|>\\n<|im_start|>assistant\\n").
    """
    eos_text = tokenizer.eos_token or ""
    marker = "\x00ACTION\x00"
    base = [{"role": "user", "content": "u"}, {"role": "assistant", "content": marker}]
    before = tokenizer.apply_chat_template(base, tokenize=False)
    after = tokenizer.apply_chat_template(base + [{"role": "user", "content": "\x00OBS\x00"}],
                                          add_generation_prompt=True, tokenize=False)
    if not after.startswith(before) or marker not in before:
        raise ValueError("the chat template re-renders earlier turns (e.g. strips reasoning); pass format_observation= to run_episodes")
    template = before[before.index(marker) + len(marker):] + after[len(before):]

    def format_observation(observation: str, action_ended_with_eos: bool) -> list[int]:
        text = template.replace("\x00OBS\x00", observation)
        if action_ended_with_eos and eos_text and text.startswith(eos_text):
            text = text[len(eos_text):]  # the policy already emitted this token
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    return format_observation


def run_episodes(
    engine: RolloutEngine,
    tokenizer,
    envs: Sequence[Environment],
    sampling: SamplingSettings,
    max_turns: int,
    system_prompt: str | None = None,
    format_observation: Callable[[str, bool], list[int]] | None = None,
) -> list[Episode]:
    """Run one episode per environment, in lockstep batches, for at most `max_turns` actions each."""
    if max_turns < 1:
        raise ValueError(f"run_episodes(max_turns={max_turns}): must be >= 1")
    format_observation = format_observation or chat_observation_formatter(tokenizer)
    episodes = [Episode() for _ in envs]
    for env, episode in zip(envs, episodes):
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else [])
        episode.add(chat_prompt_ids(tokenizer, messages + [{"role": "user", "content": env.reset()}]), PROMPT, 0)
    for step in range(1, max_turns + 1):
        active = [i for i, e in enumerate(episodes) if not e.done]
        if not active:
            break
        step_sampling = SamplingSettings(**{**vars(sampling), "seed": None if sampling.seed is None else sampling.seed + step})
        groups = engine.generate([episodes[i].token_ids for i in active], 1, step_sampling)
        for i, (completion,) in zip(active, groups):
            episode = episodes[i]
            episode.add(completion.token_ids, ACTION, step, completion.logprobs)
            episode.actions.append(completion.text)
            episode.weight_versions.append(completion.weight_version)
            observation, reward, done = envs[i].step(completion.text)
            episode.rewards.append(float(reward))
            episode.done = bool(done)
            if not done and step < max_turns:
                ended_with_eos = bool(completion.token_ids) and completion.token_ids[-1] == tokenizer.eos_token_id
                episode.add(format_observation(observation, ended_with_eos), OBSERVATION, step)
    return episodes
