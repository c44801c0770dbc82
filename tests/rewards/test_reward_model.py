"""`rm:` reward models on a tiny sequence classifier built in code (align.models.tiny.write_tiny_reward_model)."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from rewards.runner import compute_rewards, load_reward_functions
from rewards.context import ModelReward, ModelRewardError, RewardContext, bind_model_rewards
from rewards.models import RewardModel, RunningMoments
from rewards.registry import get_reward_function

PROMPTS = ["What is 2+2?", "Name a colour.", "Say hi.", "Count to three.", "Why is the sky blue?", "Add 7 and 5."]
COMPLETIONS = ["4", "Blue, or perhaps a deep red like a ripe cherry.", "hi", "1, 2, 3",
               "Rayleigh scattering: short wavelengths scatter more, so more blue light reaches us from all directions.", "12"]


@pytest.fixture(scope="module")
def rm_path(tmp_path_factory) -> str:
    from align.models.tiny import write_tiny_reward_model

    return str(write_tiny_reward_model(tmp_path_factory.mktemp("rm") / "tiny-rm", seed=3))


def make_rm(rm_path: str, **options) -> RewardModel:
    reward = get_reward_function(f"rm:{rm_path}")
    reward.configure(**options)
    reward.bind(RewardContext())
    return reward


def call(reward: ModelReward, prompts=PROMPTS, completions=COMPLETIONS) -> tuple[list, dict]:
    logged: dict[str, float] = {}
    prefix = reward.__name__ + "/"  # model rewards log under their own name
    scores = reward(prompts, completions, log_metric=lambda k, v: logged.__setitem__(k.removeprefix(prefix), v))
    return scores, logged


def direct_score(reward: RewardModel, ids: list[int]) -> float:
    with torch.no_grad():
        return float(reward.model(input_ids=torch.tensor([ids])).logits[0, 0])


def test_spec_gives_an_unloaded_reward_that_refuses_to_run_before_binding(rm_path):
    reward = get_reward_function(f"rm:{rm_path}")
    assert isinstance(reward, RewardModel) and reward.model is None and reward.__name__ == "rm:tiny-rm"
    with pytest.raises(ModelRewardError, match="bound to the trainer"):
        reward(["p"], ["c"])
    with pytest.raises(ModelRewardError, match=r"unknown option\(s\) \['batch_size'\]"):
        reward.configure(batch_size=4)
    with pytest.raises(ModelRewardError, match="truncation='middle'"):
        reward.configure(truncation="middle")
    with pytest.raises(ModelRewardError, match="needs a model after the colon"):
        get_reward_function("rm:")


def test_options_reach_the_model_reward_and_name_it(rm_path):
    spec = f"rm:{rm_path}"
    (function,) = load_reward_functions([spec], options={spec: {"batch_tokens": 64, "name": "helpful"}})
    assert function.name == "helpful" and function.fn.options["batch_tokens"] == 64


def test_score_is_the_models_output_on_its_own_chat_template(rm_path):
    reward = make_rm(rm_path)
    scores, _ = call(reward)
    tok = reward.tokenizer
    for prompt, completion, score in zip(PROMPTS, COMPLETIONS, scores):
        text = tok.apply_chat_template([{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
                                       tokenize=False)
        assert "<|im_start|>assistant\n" + completion in text  # the RM's template, with the reply in it
        assert score == pytest.approx(direct_score(reward, tok(text, add_special_tokens=False)["input_ids"]), abs=1e-5)
    # chat_template=none scores plain text: a different input, so different scores
    plain, _ = call(make_rm(rm_path, chat_template="none"))
    assert max(abs(a - b) for a, b in zip(plain, scores)) > 1e-4


def test_batching_by_token_budget_equals_one_by_one_scoring(rm_path):
    batched, logged_batched = call(make_rm(rm_path, batch_tokens=4096))
    single, logged_single = call(make_rm(rm_path, batch_tokens=1))  # every sequence alone
    assert logged_batched["batches"] == 1 and logged_single["batches"] == len(PROMPTS)
    middle, logged_middle = call(make_rm(rm_path, batch_tokens=300))
    assert 1 < logged_middle["batches"] < len(PROMPTS)
    assert batched == pytest.approx(single, abs=1e-5) and middle == pytest.approx(single, abs=1e-5)
    # chat prompts (messages) score like the same text given as a plain user prompt
    chat, _ = call(make_rm(rm_path), [[{"role": "user", "content": p}] for p in PROMPTS],
                   [[{"role": "assistant", "content": c}] for c in COMPLETIONS])
    assert chat == pytest.approx(single, abs=1e-5)


def test_truncation_keeps_the_last_tokens_is_counted_and_warned(rm_path):
    reward = make_rm(rm_path, max_length=48)
    lengths = [len(reward.encode(p, c)) for p, c in zip(PROMPTS, COMPLETIONS)]
    long = [i for i, n in enumerate(lengths) if n > 48]
    assert 0 < len(long) < len(PROMPTS)
    with pytest.warns(UserWarning, match="longer than max_length=48"):
        scores, logged = call(reward)
    assert logged["truncated_frac"] == pytest.approx(len(long) / len(PROMPTS))
    for i in long:
        assert scores[i] == pytest.approx(direct_score(reward, reward.encode(PROMPTS[i], COMPLETIONS[i])[-48:]), abs=1e-5)
    untruncated, _ = call(make_rm(rm_path))
    assert all(abs(scores[i] - untruncated[i]) > 1e-6 for i in long)
    _, logged = call(make_rm(rm_path))
    assert logged["truncated_frac"] == 0.0
    with pytest.raises(ModelRewardError, match=f"sample {long[0]} has {lengths[long[0]]} tokens > max_length=48"):
        call(make_rm(rm_path, max_length=48, truncation="error"))


def test_normalisation_uses_running_moments_and_clip_bounds(rm_path):
    raw, _ = call(make_rm(rm_path))
    reward = make_rm(rm_path, normalize=True)
    first, logged = call(reward)
    t = torch.tensor(raw, dtype=torch.float64)
    expected = (t - t.mean()) / t.std(unbiased=False)
    assert first == pytest.approx(expected.tolist(), abs=1e-5)
    assert logged["raw_mean"] == pytest.approx(sum(raw) / len(raw))
    # second call: moments over both batches, so the same inputs no longer have mean 0
    second, _ = call(reward, PROMPTS[:2], COMPLETIONS[:2])
    both = torch.tensor(raw + raw[:2], dtype=torch.float64)
    assert second == pytest.approx(((t[:2] - both.mean()) / both.std(unbiased=False)).tolist(), abs=1e-5)
    clipped, _ = call(make_rm(rm_path, normalize=True, clip=0.5))
    assert max(abs(v) for v in clipped) == 0.5
    assert clipped == pytest.approx([min(max(v, -0.5), 0.5) for v in expected.tolist()], abs=1e-5)


def test_running_moments_merge_equals_the_moments_of_everything():
    values = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3 + 1
    moments = RunningMoments()
    for chunk in (values[:7], values[7:8], values[8:30], values[30:]):
        moments.update(len(chunk), float(chunk.sum()), float((chunk**2).sum()))
    assert moments.mean == pytest.approx(float(values.mean())) and moments.std == pytest.approx(float(values.std(unbiased=False)))


def test_compute_rewards_weights_it_and_calls_it_in_the_calling_thread(rm_path, monkeypatch):
    spec = f"rm:{rm_path}"
    functions = load_reward_functions([spec, "length_reward"], weights=[2.0, 0.0])
    bound = bind_model_rewards(functions, RewardContext())
    assert [r.__name__ for r in bound] == ["rm:tiny-rm"]
    threads = []
    original = RewardModel._score

    def spy(self, *args):
        threads.append(threading.current_thread())
        return original(self, *args)

    monkeypatch.setattr(RewardModel, "_score", spy)
    result = compute_rewards(functions, PROMPTS, COMPLETIONS, {}, [[0]] * len(PROMPTS), timeout_s=30)
    assert threads == [threading.main_thread()]  # no helper thread for a model reward
    raw, _ = call(make_rm(rm_path))
    assert result.total == pytest.approx([2 * v for v in raw], abs=1e-5)
    assert result.logged_metrics["rm:tiny-rm/truncated_frac"] == [0.0]


def test_a_multi_label_model_needs_label(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from align.models.tiny import build_config, build_tokenizer

    tok = build_tokenizer()
    config = build_config(tok)
    config.num_labels = 2
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ModelRewardError, match="has 2 output labels; set .*label"):
        make_rm(str(tmp_path))
    reward = make_rm(str(tmp_path), label=1)
    scores, _ = call(reward, PROMPTS[:1], COMPLETIONS[:1])
    ids = reward.encode(PROMPTS[0], COMPLETIONS[0])
    with torch.no_grad():
        assert scores[0] == pytest.approx(float(reward.model(input_ids=torch.tensor([ids])).logits[0, 1]), abs=1e-5)
    assert not math.isnan(scores[0])


def test_an_idle_rank_runs_the_same_collectives_and_changes_nothing(rm_path, monkeypatch):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    calls = []
    two_ranks = SimpleNamespace(num_processes=2, device=torch.device("cpu"), distributed_type=DistributedType.MULTI_CPU)
    reward = get_reward_function(f"rm:{rm_path}").configure(normalize=True)
    reward.bind(RewardContext(accelerator=two_ranks))
    monkeypatch.setattr(RewardContext, "sum_over_ranks", lambda self, values: calls.append(list(values)) or list(values))
    reward.idle()  # no prompts on this rank this round: it still joins the moments' reduction, with zeros
    assert calls == [[0, 0, 0]] and reward.moments.count == 0
    with pytest.raises(ModelRewardError, match="placement=shard needs DeepSpeed ZeRO-3"):
        get_reward_function(f"rm:{rm_path}").configure(placement="shard").bind(RewardContext(accelerator=two_ranks))


def test_the_trainer_finds_model_rewards_held_anywhere_in_the_algorithm(rm_path):
    from rewards.context import model_rewards, reward_functions_of

    class Algorithm:  # like GRAO: a judge apart from the logged reward functions
        def __init__(self):
            self.reward_functions = load_reward_functions(["length_reward", f"rm:{rm_path}"])
            self.judge = load_reward_functions(["judge:self"])[0]
            self.cfg = object()

    algo = Algorithm()
    found = model_rewards(reward_functions_of(algo))
    assert [type(r).__name__ for r in found] == ["RewardModel", "Judge"]
