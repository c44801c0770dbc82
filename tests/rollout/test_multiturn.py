"""Multi-turn episodes keep exact token boundaries between policy actions and environment text."""

from __future__ import annotations

import pytest

from align.rollout import SamplingSettings, run_episodes
from align.rollout.multiturn import ACTION, OBSERVATION, PROMPT


class CountdownEnv:
    """Answers every action with its turn number; done after `turns` actions. Reward = action length."""

    def __init__(self, turns: int):
        self.turns, self.seen = turns, []

    def reset(self) -> str:
        return "start"

    def step(self, action_text: str):
        self.seen.append(action_text)
        return f"obs {len(self.seen)}", float(len(action_text)), len(self.seen) >= self.turns


def test_episode_tokens_render_as_the_chat_conversation(hf_engine, tokenizer):
    envs = [CountdownEnv(turns=2), CountdownEnv(turns=3)]
    episodes = run_episodes(hf_engine, tokenizer, envs, SamplingSettings(max_tokens=5, seed=0), max_turns=3,
                            system_prompt="be brief")
    assert [len(e.actions) for e in episodes] == [2, 3] and all(e.done for e in episodes)
    for env, episode in zip(envs, episodes):
        assert episode.actions == env.seen
        assert episode.rewards == [float(len(a)) for a in env.seen]
        assert len(episode.token_ids) == len(episode.labels) == len(episode.steps) == len(episode.logprobs)
        # segments come in order prompt, (action, observation)*, action, with step indices 0, 1, 1, 2, 2, ...
        segments = []
        for label, step in zip(episode.labels, episode.steps):
            if not segments or segments[-1] != (label, step):
                segments.append((label, step))
        turns = len(env.seen)
        expected = [(PROMPT, 0)] + [s for k in range(1, turns) for s in ((ACTION, k), (OBSERVATION, k))] + [(ACTION, turns)]
        assert segments == expected
        assert all(lp < 0 for lp, m in zip(episode.logprobs, episode.action_mask) if m)
        # rendering the conversation with the chat template gives exactly these tokens' text
        messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "start"}]
        for k in range(1, turns):
            action_ids = [t for t, lab, s in zip(episode.token_ids, episode.labels, episode.steps) if lab == ACTION and s == k]
            if action_ids[-1] == tokenizer.eos_token_id:
                action_ids = action_ids[:-1]
            messages += [{"role": "assistant", "content": tokenizer.decode(action_ids)}, {"role": "user", "content": f"obs {k}"}]
        rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        last_action = [t for t, s in zip(episode.token_ids, episode.steps) if s == turns]
        assert tokenizer.decode(episode.token_ids) == rendered + tokenizer.decode(last_action)


def test_max_turns_cuts_episodes(hf_engine, tokenizer):
    episodes = run_episodes(hf_engine, tokenizer, [CountdownEnv(turns=5)], SamplingSettings(max_tokens=3, seed=1), max_turns=2)
    assert len(episodes[0].actions) == 2 and not episodes[0].done
    assert episodes[0].labels[-1] == ACTION
    with pytest.raises(ValueError, match="max_turns"):
        run_episodes(hf_engine, tokenizer, [CountdownEnv(turns=1)], SamplingSettings(), max_turns=0)
