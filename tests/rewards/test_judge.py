"""`judge:` LLM judges: strict verdict parsing, the prompts they see, and the tiny policy judging itself."""

from __future__ import annotations

import pytest

from align.rollout import Completion
from rewards.context import ModelRewardError, RewardContext
from rewards.judge import PAIRWISE_PROMPT, POINTWISE_PROMPT, Judge, parse_pairwise, parse_pointwise
from rewards.registry import get_reward_function

PROMPTS = ["What is 2+2?", [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}], "Say hi."]
COMPLETIONS = ["4", [{"role": "assistant", "content": "Blue."}], "hello"]


@pytest.mark.parametrize("text, value", [
    ("Rating: 10", 1.0), ("Rating: 1", 0.0), ("  Rating: 4\n", 3 / 9), ("Rating: 0", None), ("Rating: 11", None),
    ("rating: 5", None), ("Rating: 5/10", None), ("I think Rating: 5", None), ("Rating: 5\nbecause", None), ("", None),
    ("Rating:5", None), ("Rating: 7.5", None),
])
def test_pointwise_verdicts_parse_strictly(text, value):
    assert parse_pointwise(text) == value


@pytest.mark.parametrize("text, value", [
    ("Verdict: better", 1.0), ("Verdict: tie", 0.0), ("Verdict: worse\n", -1.0), ("Verdict: Better", None),
    ("Verdict: better.", None), ("better", None), ("Verdict: better or tie", None), ("Verdict: worse Verdict: tie", None),
])
def test_pairwise_verdicts_parse_strictly(text, value):
    assert parse_pairwise(text) == value


class ScriptedEngine:
    """A rollout engine that answers each judge prompt with the next scripted text, and records calls."""

    def __init__(self, outputs: list[str]):
        self.outputs, self.calls = list(outputs), []

    def generate(self, prompts, n, sampling):
        self.calls.append((prompts, n, sampling))
        return [[Completion(list(p), [1], [0.0], self.outputs.pop(0), "stop", 0)] for p in prompts]

    def close(self):
        self.closed = True


def judge_with(engine, tokenizer, spec="judge:self", **options) -> Judge:
    judge = get_reward_function(spec)
    judge.configure(**options)
    judge.bind(RewardContext(policy_engine=engine, policy_tokenizer=tokenizer,
                             make_engine=lambda *a, **k: pytest.fail("judge:self must not build an engine")))
    return judge


def call(judge, prompts=PROMPTS, completions=COMPLETIONS, **columns):
    logged = {}
    prefix = judge.__name__ + "/"
    scores = judge(prompts, completions, log_metric=lambda k, v: logged.__setitem__(k.removeprefix(prefix), v), **columns)
    return scores, logged


@pytest.fixture(scope="module")
def tokenizer(tiny_path):
    from align.models import load_tokenizer

    return load_tokenizer(tiny_path)


def test_pointwise_scores_malformed_as_none_counted_in_one_greedy_batch(tokenizer):
    engine = ScriptedEngine(["Rating: 8", "The reply is fine. Rating: 9", " Rating: 3 "])
    judge = judge_with(engine, tokenizer)
    scores, logged = call(judge)
    assert scores == [7 / 9, None, 2 / 9]
    assert logged["unparseable_frac"] == pytest.approx(1 / 3) and logged["overlong_frac"] == 0.0
    (prompts, n, sampling), = engine.calls  # one batched call, greedy, one verdict per sample
    assert len(prompts) == 3 and n == 1 and sampling.temperature == 0.0 and sampling.max_tokens == 32
    text = tokenizer.decode(prompts[1])
    # the judge's own chat template around the built-in pointwise text with this sample filled in
    assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_start|>assistant\n")
    assert "System: Be brief.\nUser: Name a colour." in text and "[Assistant's reply]\nBlue." in text
    assert "Rating: N" in text


def test_pairwise_reads_the_reference_column(tokenizer):
    engine = ScriptedEngine(["Verdict: worse", "Verdict: tie", "Verdict: better"])
    judge = judge_with(engine, tokenizer, template="pairwise", reference_column="chosen")
    with pytest.raises(ModelRewardError, match="reference answer in column 'chosen'; the dataset has \\['answer'\\]"):
        call(judge, answer=["a", "b", "c"])
    scores, logged = call(judge, chosen=["Four.", "Red.", "Hi!"])
    assert scores == [-1.0, 0.0, 1.0] and logged["unparseable_frac"] == 0.0
    text = tokenizer.decode(engine.calls[0][0][0])
    assert "[Reference reply]\nFour." in text and "[Assistant's reply]\n4" in text and "Verdict: tie" in text
    assert judge.judge_prompt("q", "a", "r") == PAIRWISE_PROMPT.format(conversation="q", response="a", reference="r")


def test_custom_prompt_and_option_checks(tokenizer):
    judge = judge_with(ScriptedEngine(["Rating: 2"]), tokenizer, prompt="Q: {conversation}\nA: {response}\nRate 1-10.")
    assert judge.judge_prompt("q", "a") == "Q: q\nA: a\nRate 1-10."
    assert POINTWISE_PROMPT.count("{response}") == 1
    with pytest.raises(ModelRewardError, match="prompt lacks \\{reference\\}"):
        get_reward_function("judge:self").configure(template="pairwise", prompt="{conversation} {response}")
    with pytest.raises(ModelRewardError, match="template='scalar'"):
        get_reward_function("judge:self").configure(template="scalar")
    with pytest.raises(ModelRewardError, match="judge:self uses the policy's engine"):
        get_reward_function("judge:self").configure(engine_options={"gpu_memory_utilization": 0.1})


def test_overlong_judge_prompts_score_none_without_generation_or_stop(tokenizer):
    probe = judge_with(ScriptedEngine([]), tokenizer)
    lengths = [len(probe.encode(probe.judge_prompt(p, c))) for p, c in zip(PROMPTS, COMPLETIONS)]
    limit = min(lengths)  # only the shortest judge prompt fits
    assert sorted(lengths)[1] > limit
    engine = ScriptedEngine(["Rating: 5"])
    judge = judge_with(engine, tokenizer, max_prompt_tokens=limit)
    with pytest.warns(UserWarning, match=f"exceed max_prompt_tokens={limit}"):
        scores, logged = call(judge)
    assert scores == [None if n > limit else 4 / 9 for n in lengths]
    assert logged["overlong_frac"] == pytest.approx(2 / 3) and logged["unparseable_frac"] == 0.0
    assert len(engine.calls[0][0]) == 1  # the overlong ones were never generated for
    strict = judge_with(ScriptedEngine([]), tokenizer, max_prompt_tokens=limit, overlong="error")
    with pytest.raises(ModelRewardError, match=f"max_prompt_tokens={limit}; raise it or set overlong=skip"):
        call(strict)


def test_judge_path_builds_its_own_engine_through_the_context(tiny_path):
    built = []

    def make_engine(path, **options):
        built.append((path, options))
        return ScriptedEngine(["Rating: 10"] * 3)

    judge = get_reward_function(f"judge:{tiny_path}")
    judge.configure(max_tokens=8, max_prompt_tokens=1000)
    judge.bind(RewardContext(make_engine=make_engine))
    assert built == [(tiny_path, {"max_model_len": 1008})] and judge.owns_engine
    assert call(judge)[0] == [1.0, 1.0, 1.0]
    judge.close()
    assert judge.engine is None


def test_tiny_policy_as_its_own_judge_is_greedy_and_its_noise_scores_none(tiny_path, tokenizer):
    from align.rollout import HFEngine, SamplingSettings

    engine = HFEngine(tiny_path, seed=0)
    try:
        judge = judge_with(engine, tokenizer, max_tokens=12)
        assert judge.engine is engine
        first, logged = call(judge)
        again, _ = call(judge)
        assert first == again == [None, None, None] and logged["unparseable_frac"] == 1.0
        # what it said: greedy text that is no verdict (an untrained model rambles)
        ids = judge.encode(judge.judge_prompt(PROMPTS[0], COMPLETIONS[0]))
        text = engine.generate([ids], 1, SamplingSettings(max_tokens=12, temperature=0.0))[0][0].text
        assert text and parse_pointwise(text) is None
    finally:
        engine.close()


def test_a_vllm_judge_engine_works_beside_a_vllm_policy_engine(tiny_path, cache_dir):
    """Two vLLM engines in one process (the policy's and the judge's), as the trainer builds them."""
    pytest.importorskip("vllm")
    from align.models import load_tokenizer, resolve_model_path
    from align.rollout import SamplingSettings, make_engine

    policy = make_engine("vllm", tiny_path, kv_cache_bytes=64 << 20)
    judge = get_reward_function("judge:tiny@1").configure(max_tokens=8, max_prompt_tokens=1000)
    try:
        judge.bind(RewardContext(policy_engine=policy, policy_tokenizer=load_tokenizer(tiny_path), cache_dir=cache_dir,
                                 make_engine=lambda path, **kw: make_engine("vllm", path, kv_cache_bytes=64 << 20, **kw)))
        assert type(judge.engine).__name__ == "VLLMEngine" and judge.engine is not policy
        assert judge.__name__ == "judge:tiny@1"
        scores, logged = call(judge)
        assert scores == [None, None, None] and logged["unparseable_frac"] == 1.0  # an untrained judge
        # the judge is the seed-1 model, not the policy: greedy continuations of one prompt differ
        ids = judge.encode(judge.judge_prompt(PROMPTS[0], COMPLETIONS[0]))
        greedy = SamplingSettings(max_tokens=8, temperature=0.0)
        assert judge.engine.generate([ids], 1, greedy)[0][0].token_ids != policy.generate([ids], 1, greedy)[0][0].token_ids
        assert judge.engine_path == resolve_model_path("tiny@1", cache_dir)  # built in the run's cache
    finally:
        judge.close()
        policy.close()
