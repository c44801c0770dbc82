"""generate/score on both engines: shapes, n, finish reasons, stop strings, seeds, and logprobs that
agree with the transformers forward pass of the same weights."""

from __future__ import annotations

import pytest

from align.rollout import SamplingSettings, chat_prompt_ids
from align.rollout.probe import mean_abs_difference, model_logprobs


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [chat_prompt_ids(tokenizer, [{"role": "user", "content": text}]) for text in ("Angle A = 30.", "2+2=", "x")]


def test_shapes_n_and_finish_reasons(engine, prompts, tokenizer):
    groups = engine.generate(prompts, 4, SamplingSettings(max_tokens=12, seed=0))
    assert len(groups) == len(prompts) and all(len(g) == 4 for g in groups)
    reasons = set()
    for prompt, group in zip(prompts, groups):
        for c in group:
            assert c.prompt_ids == prompt
            assert 1 <= len(c.token_ids) <= 12 and len(c.logprobs) == len(c.token_ids)
            assert all(lp <= 0.0 for lp in c.logprobs)
            assert c.weight_version == engine.weight_version
            reasons.add(c.finish_reason)
            if c.finish_reason == "length":
                assert len(c.token_ids) == 12 and tokenizer.eos_token_id not in c.token_ids
            else:  # no stop strings: only EOS stops, and it is the last token, counted with its logprob
                assert c.finish_reason == "stop" and c.token_ids[-1] == tokenizer.eos_token_id
                assert tokenizer.eos_token_id not in c.token_ids[:-1]
            assert c.text == tokenizer.decode([t for t in c.token_ids if t != tokenizer.eos_token_id], skip_special_tokens=True)
    assert "length" in reasons


def test_eos_finishes_with_stop(engine, prompts, tokenizer):
    # 40 tokens from a random model: some samples hit EOS (~1/111 per step), which must read "stop"
    groups = engine.generate(prompts, 6, SamplingSettings(max_tokens=40, seed=3))
    stopped = [c for g in groups for c in g if c.finish_reason == "stop"]
    assert stopped and all(c.token_ids[-1] == tokenizer.eos_token_id for c in stopped)


def test_stop_strings_end_text_before_the_string(engine, prompts, tokenizer):
    stop = ["a", "e", "7", "Q", "x"]
    groups = engine.generate(prompts, 6, SamplingSettings(max_tokens=40, stop=stop, seed=5))
    by_stop = 0
    for c in (c for g in groups for c in g):
        full = tokenizer.decode(c.token_ids, skip_special_tokens=True)
        assert not any(s in c.text for s in stop)
        if c.finish_reason == "stop" and c.token_ids[-1] != tokenizer.eos_token_id:
            by_stop += 1
            # the token that completed the stop string is kept, the text ends right before it
            assert any(s in full for s in stop) and full.startswith(c.text)
            assert not any(s in tokenizer.decode(c.token_ids[:-1], skip_special_tokens=True) for s in stop)
    assert by_stop >= 3


def test_seed_makes_sampling_reproducible(engine, prompts):
    settings = SamplingSettings(max_tokens=10, seed=11, top_k=20, top_p=0.9, temperature=0.8)
    tokens = lambda groups: [[c.token_ids for c in g] for g in groups]  # noqa: E731
    first = tokens(engine.generate(prompts, 3, settings))
    assert first == tokens(engine.generate(prompts, 3, settings))
    assert first != tokens(engine.generate(prompts, 3, SamplingSettings(**{**vars(settings), "seed": 12})))
    # samples of one prompt differ from each other (each gets its own seed)
    assert len({tuple(t) for t in first[0]}) == 3


def test_logprobs_match_transformers_forward(engine, prompts, base_model):
    groups = engine.generate(prompts, 2, SamplingSettings(max_tokens=16, seed=2))
    flat = [c for g in groups for c in g]
    sequences = [(c.prompt_ids, c.token_ids) for c in flat]
    reference = model_logprobs(base_model, sequences)
    assert mean_abs_difference([c.logprobs for c in flat], reference) < 1e-4
    assert mean_abs_difference(engine.score(sequences), reference) < 1e-4


def test_greedy_picks_the_most_likely_token(engine, prompts, base_model):
    import torch

    c = engine.generate(prompts[:1], 1, SamplingSettings(max_tokens=6, temperature=0.0))[0][0]
    ids = torch.tensor([c.prompt_ids + c.token_ids])
    with torch.no_grad():
        logits = base_model(ids).logits[0, len(c.prompt_ids) - 1 : -1]
    assert c.token_ids == logits.argmax(-1).tolist()


def test_bad_prompts_get_one_line_errors(engine):
    with pytest.raises(TypeError, match=r"prompts\[0\] must be a list of token ids"):
        engine.generate(["hello"], 1, SamplingSettings())
    with pytest.raises(ValueError, match=r"n \(samples per prompt\) must be >= 1"):
        engine.generate([[1, 2]], 0, SamplingSettings())
    with pytest.raises(ValueError, match="top_p"):
        SamplingSettings(top_p=0.0)
    with pytest.raises(ValueError, match="pass a list of strings"):
        SamplingSettings(stop="\n")
