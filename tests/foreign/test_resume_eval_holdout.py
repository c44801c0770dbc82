"""Safe resume (config comparison, nothing overwritten), which reward evaluation calls accuracy,
and the held-out slice of train when there is no eval split."""

from __future__ import annotations

import json

import pytest

from align.config import ConfigError, config_to_yaml
from align.algorithms import load_config
from align.data.holdout import evaluation_rows, training_rows
from align.training.evaluation import eval_rewards
from align.training.resume import check_resume, config_path
from rewards.runner import load_reward_functions


def fake_run(run_dir, argv):
    """A run folder as train.py leaves it: config.yaml and one complete checkpoint."""
    ckpt = run_dir / "checkpoints" / "step-000002"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text(json.dumps({"step": 2}))
    (run_dir / "config.yaml").write_text(config_to_yaml(load_config(argv)))
    (run_dir / "metrics.jsonl").write_text("")
    return ckpt


BASE = ["recipe=grpo_math", "train.steps=2"]


def test_resume_with_the_same_config_finds_the_checkpoint(tmp_path):
    ckpt = fake_run(tmp_path, BASE)
    # train.steps and log.* may change between the two halves of a run
    cfg = load_config(["recipe=grpo_math", "train.steps=4", "log.every=2", "resume=latest"])
    assert check_resume(cfg, tmp_path) == ckpt


def test_resume_refuses_a_changed_config_naming_the_keys(tmp_path):
    fake_run(tmp_path, BASE)
    cfg = load_config(["recipe=grpo_math", "resume=latest", "data.source=geometry", "reward.functions=[math_accuracy]",
                       "reward.weights=null"])
    with pytest.raises(ConfigError) as err:
        check_resume(cfg, tmp_path)
    msg = str(err.value)
    assert "data.source ('arith' there, 'geometry' now)" in msg and "reward.functions" in msg and "reward.weights" in msg
    assert "resume_force=true" in msg and "\n" not in msg and "train.steps" not in msg


def test_resume_force_continues_and_says_what_changed(tmp_path):
    ckpt = fake_run(tmp_path, BASE)
    said = []
    cfg = load_config(["recipe=grpo_math", "resume=latest", "train.lr=5e-4", "resume_force=true"])
    assert check_resume(cfg, tmp_path, said.append) == ckpt
    assert len(said) == 1 and "train.lr (0.0001 there, 0.0005 now)" in said[0]


def test_a_fresh_run_never_writes_into_an_old_run(tmp_path):
    fake_run(tmp_path, BASE)
    with pytest.raises(ConfigError, match="already holds a run"):
        check_resume(load_config(BASE), tmp_path)
    # the resumed half writes its config beside the original
    original = (tmp_path / "config.yaml").read_text()
    second = config_path(tmp_path)
    assert second.name.startswith("config.resume-") and (tmp_path / "config.yaml").read_text() == original


class FakeAlgorithm:
    def __init__(self, specs):
        self.reward_functions = load_reward_functions(specs)


def test_eval_accuracy_is_the_accuracy_reward_not_the_first_listed():
    cfg = load_config(["reward.functions=[think_answer_format,math_accuracy]"])
    accuracy, rates = eval_rewards(FakeAlgorithm(["think_answer_format", "math_accuracy"]), cfg)
    assert accuracy.name == "math_accuracy" and [f.name for f in rates] == ["think_answer_format"]


def test_eval_accuracy_option_picks_the_reward_and_can_load_another():
    cfg = load_config(["reward.functions=[think_answer_format,math_accuracy]", "eval.accuracy=think_answer_format"])
    accuracy, rates = eval_rewards(FakeAlgorithm(["think_answer_format", "math_accuracy"]), cfg)
    assert accuracy.name == "think_answer_format" and [f.name for f in rates] == ["math_accuracy"]
    cfg = load_config(["reward.functions=[think_answer_format]", "eval.accuracy=math_accuracy"])
    accuracy, rates = eval_rewards(FakeAlgorithm(["think_answer_format"]), cfg)
    assert accuracy.name == "math_accuracy" and [f.name for f in rates] == ["think_answer_format"]


def test_eval_accuracy_ambiguous_is_an_error_and_gcpo_uses_its_own():
    cfg = load_config(["reward.functions=[think_answer_format,length_reward]"])
    with pytest.raises(ConfigError, match="set eval.accuracy="):
        eval_rewards(FakeAlgorithm(["think_answer_format", "length_reward"]), cfg)
    cfg = load_config(["algo=gcpo", "gcpo.accuracy_reward=math_accuracy"])
    accuracy, _ = eval_rewards(FakeAlgorithm(["think_answer_format", "math_accuracy", "aux_construction"]), cfg)
    assert accuracy.name == "math_accuracy"


def test_missing_eval_split_holds_out_a_disjoint_deterministic_slice(tmp_path):
    path = tmp_path / "one_file.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": str(i)}) + "\n" for i in range(50)))
    cfg = load_config([f"data.source={path}", "eval.holdout=4"])
    warnings = []
    train = training_rows(cfg, warnings.append)
    held = evaluation_rows(cfg, warnings.append)
    assert len(held) == 4 and len(train) == 46
    assert not set(train["prompt"]) & set(held["prompt"])
    assert set(train["prompt"]) | set(held["prompt"]) == {f"q{i}" for i in range(50)}
    assert list(evaluation_rows(cfg, warnings.append)["prompt"]) == list(held["prompt"])  # same rows every time
    assert len(warnings) == 3 and all("no 'test' split" in w for w in warnings)
    # eval.holdout=0: all rows train, and evaluation says what is missing
    cfg = load_config([f"data.source={path}", "eval.holdout=0"])
    assert len(training_rows(cfg)) == 50
    with pytest.raises(Exception, match="single split"):
        evaluation_rows(cfg)


def test_eval_accuracy_changes_what_align_eval_reports(cache_dir):
    from align.cli.eval import main as evaluate

    common = ["recipe=grpo_math", f"model.cache_dir={cache_dir}", "data.options.size=4", "eval.k=1",
              "rollout.engine=hf", "rollout.max_tokens=4"]
    default = evaluate(common)
    chosen = evaluate(common + ["eval.accuracy=think_answer_format"])
    assert "eval/think_answer_format/rate" in default and "eval/math_accuracy/rate" not in default
    assert "eval/math_accuracy/rate" in chosen and "eval/think_answer_format/rate" not in chosen


def test_a_folder_left_by_a_run_that_failed_before_step_1_is_reused(tmp_path):
    # config.yaml, a step-0 evaluation row and a crashed save's leftover, but no step and no checkpoint
    (tmp_path / "config.yaml").write_text(config_to_yaml(load_config(BASE)))
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 0, "eval/accuracy": 0.1}) + "\n")
    (tmp_path / "checkpoints" / ".tmp-step-000001").mkdir(parents=True)
    assert check_resume(load_config(BASE), tmp_path) is None
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n")
    with pytest.raises(ConfigError, match="already holds a run"):
        check_resume(load_config(BASE), tmp_path)
