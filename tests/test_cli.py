"""`python -m align explain|eval`, in process."""

from align.cli.eval import main as evaluate
from align.training.evaluation import pass_at_k
from align.cli.explain import main as explain


def test_explain_prints_batch_arithmetic_and_active_options(cache_dir):
    text = explain(["recipe=grpo_math", f"model.cache_dir={cache_dir}", "loss.beta=0.04", "lora.enabled=true"])
    assert "4 prompts x 8 completions = 32 completions" in text
    assert "KL: beta=0.04 k3 in the loss" in text and "LoRA: r=16" in text and "memory estimate" in text


def test_eval_reports_mean_and_pass_at_k(cache_dir):
    metrics = evaluate(["recipe=grpo_math", f"model.cache_dir={cache_dir}", "data.options.size=8", "eval.k=2",
                        "rollout.engine=hf", "rollout.max_tokens=8"])
    assert 0.0 <= metrics["eval/mean@2"] <= metrics["eval/pass@2"] <= 1.0
    assert "eval/think_answer_format/rate" in metrics  # the recipe's other reward, as a rate


def test_pass_at_k_hand_computed():
    assert pass_at_k(4, 0, 2) == 0.0 and pass_at_k(4, 3, 2) == 1.0
    assert abs(pass_at_k(4, 1, 2) - 0.5) < 1e-12  # 1 - C(3,2)/C(4,2) = 1 - 3/6


def test_explain_shows_the_algorithm_its_needs_and_its_own_section(cache_dir):
    text = explain(["recipe=copg_offline", "model.name=tiny", f"model.cache_dir={cache_dir}"])
    assert "algorithm: copg" in text and "fixed rows from rows.jsonl (no generation, no weight sync)" in text
    assert "phases: reference model, whole groups" in text and "copg: beta=0.1" in text
    assert "surrogate:" not in text and "reference 0.000 " not in text  # a reference model is loaded
    grpo = explain(["recipe=grpo_math", f"model.cache_dir={cache_dir}"])
    assert "surrogate: clip" in grpo and "phases: importance correction, weight sync" in grpo


def test_explain_says_when_a_ratio_option_cannot_act_and_not_when_it_can(cache_dir):
    base = ["recipe=grpo_math", f"model.cache_dir={cache_dir}", "loss.eps_high=0.28", "loss.dual_clip=3.0"]
    inert = "loss.eps_high=0.28, loss.dual_clip=3.0 have no effect here: with train.updates_per_batch=1"
    assert inert in explain(base)
    assert "no effect" not in explain([*base, "train.updates_per_batch=2"])
    assert "no effect" not in explain(["recipe=grpo_math", f"model.cache_dir={cache_dir}"])  # defaults: nothing to say
