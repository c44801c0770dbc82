"""A catalogue of bad inputs (the README's "When things go wrong"). Each must end in ONE line that names the
culprit and the fix, raised as an error type align reports without a traceback (align/errors.py), and
before anything is overwritten. Most cases are config- or call-level, so the file runs in seconds.
"""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from align.algorithms import load_config, validate
from align.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TEST_REWARDS = ROOT / "tests" / "trainers" / "rewards_for_tests.py"


def config(*overrides: str, recipe: str = "grpo_math"):
    cfg = load_config([f"recipe={recipe}", *overrides])
    validate(cfg, 1)
    return cfg


def rewards_call(return_value, n: int = 2):
    from rewards.runner import RewardFunction, compute_rewards

    function = RewardFunction("my_reward", lambda prompts, completions, **kw: return_value)
    return compute_rewards([function], ["p"] * n, ["c"] * n, {}, [[1]] * n)


def load_rewards(*args, **kwargs):
    from rewards.runner import load_reward_functions

    return load_reward_functions(*args, **kwargs)


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


# ---- cases that need files or objects: each returns the call that must fail ----


def case_missing_prompt_column(tmp):
    from align.data.loading import load_prompt_dataset

    source = write(tmp / "rows.jsonl", '{"question": "1+1?", "answer": "2"}\n')
    return lambda: load_prompt_dataset(source, "train")


def case_missing_answer_column(tmp):
    from align.data.loading import load_prompt_dataset

    source = write(tmp / "rows.jsonl", '{"prompt": "1+1?", "solution": "2"}\n')
    return lambda: load_prompt_dataset(source, "train", answer_column="gold")


def case_empty_dataset(tmp):
    from align.sources.prompts import PromptStream

    return lambda: PromptStream([], seed=0)


def case_missing_dataset_file(tmp):
    from align.data.loading import load_prompt_dataset

    return lambda: load_prompt_dataset(str(tmp / "nowhere" / "train.jsonl"), "train")


def case_prompt_longer_than_context(tmp):
    from align.sources.prompts import check_prompt_lengths

    return lambda: check_prompt_lengths([[1] * 4000], [{"prompt": "a very long prompt"}], max_tokens=256, context=4096)


def case_chat_prompts_without_chat_template(tmp):
    from align.models import load_tokenizer, tiny_model_path
    from align.sources.prompts import encode_prompt

    tokenizer = load_tokenizer(str(tiny_model_path(str(tmp / "cache"))))
    tokenizer.chat_template = None
    return lambda: encode_prompt(tokenizer, [{"role": "user", "content": "hi"}])


def case_lora_target_absent(tmp):
    from align.models import apply_lora, load_model, tiny_model_path

    model = load_model(str(tiny_model_path(str(tmp / "cache"))))
    return lambda: apply_lora(model, r=4, alpha=8, target_modules=["q_proj", "query_key_value"])


def case_model_missing(tmp):
    from align.models import resolve_model_path

    return lambda: resolve_model_path(str(tmp / "no-model"), None)


def case_vocabulary_smaller_than_the_tokenizer(tmp):
    from types import SimpleNamespace

    from align.models import build_tokenizer, check_vocabulary

    tokenizer = build_tokenizer()
    model = SimpleNamespace(config=SimpleNamespace(vocab_size=len(tokenizer) - 5))
    return lambda: check_vocabulary(model, tokenizer, "my-model")


def case_recipe(text: str):
    def make(tmp):
        path = write(tmp / "mine.yaml", text)
        return lambda: config(recipe=path)

    return make


def case_model_folder_without_weights(tmp):
    from align.models import load_model

    (tmp / "config-only").mkdir()
    (tmp / "config-only" / "config.json").write_text(json.dumps({
        "model_type": "llama", "vocab_size": 64, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2}))
    return lambda: load_model(str(tmp / "config-only"))


def _checkpoint(tmp):
    import torch
    from accelerate import Accelerator

    from align.training.checkpoint import save_checkpoint

    acc = Accelerator(cpu=True)
    model, opt = acc.prepare(torch.nn.Linear(3, 2), torch.optim.SGD(torch.nn.Linear(3, 2).parameters(), lr=0.1))
    path = save_checkpoint(acc, tmp, 1, {"position": 1})
    return acc, path


def case_corrupt_checkpoint(tmp):
    from align.training.checkpoint import load_checkpoint

    acc, path = _checkpoint(tmp)
    (path / "model.safetensors").write_bytes(b"not a safetensors file")
    return lambda: load_checkpoint(acc, path)


def case_corrupt_trainer_state(tmp):
    from align.training.checkpoint import load_checkpoint

    acc, path = _checkpoint(tmp)
    (path / "trainer_state.json").write_text('{"step": 1,')
    return lambda: load_checkpoint(acc, path)


def case_partial_checkpoint(tmp):
    from align.training.checkpoint import find_checkpoint

    acc, path = _checkpoint(tmp)
    (path / "trainer_state.json").unlink()
    return lambda: find_checkpoint(tmp, str(path))


def case_resume_checkpoint_folder_missing(tmp):
    from align.training.checkpoint import find_checkpoint

    return lambda: find_checkpoint(tmp, str(tmp / "checkpoints" / "step-000009"))


def case_disk_full_while_checkpointing(tmp):
    from align.training.checkpoint import save_checkpoint

    acc, good = _checkpoint(tmp)

    def full(*args, **kwargs):
        Path(args[0]).mkdir(parents=True, exist_ok=True)
        (Path(args[0]) / "model.safetensors").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    acc.save_state = full
    return lambda: save_checkpoint(acc, tmp, 2, {"position": 2})


def case_zero_json_does_not_parse(tmp):
    from align.runtime.distributed import check_deepspeed_json

    path = write(tmp / "zero3.json", '{"zero_optimization": {"stage": 3},}')
    return lambda: check_deepspeed_json(path)


def case_reward_column_missing(tmp):
    from rewards.runner import compute_rewards

    functions = load_rewards(["math_accuracy"])
    return lambda: compute_rewards(functions, ["p"], ["c"], {"gold": ["1"]}, [[1]])


def case_reward_file_missing(tmp):
    return lambda: load_rewards([f"{tmp}/my_rewards.py:score"])


def case_reward_function_missing(tmp):
    return lambda: load_rewards([f"{TEST_REWARDS}:digit_fractoin"])


def case_code_reward_without_sandbox(tmp):
    import rewards.sandbox as sandbox
    from rewards.code import code_passes_tests

    def call():
        original = sandbox.shutil.which
        sandbox.shutil.which = lambda name: None
        sandbox.bwrap_problem.cache_clear()
        try:
            return code_passes_tests(["p"], ["```python\nx = 1\n```"], tests=["assert x == 1"], isolation="bwrap")
        finally:
            sandbox.shutil.which = original
            sandbox.bwrap_problem.cache_clear()

    return call


# (id, the failing call (given tmp_path), substrings the one-line message must hold: the culprit and the fix)
CASES = [
    ("num_generations=1 with GRPO", lambda t: lambda: config("rollout.num_generations=1", "train.batch_size=8"),
     ["rollout.num_generations=1", "every advantage is 0", "rollout.num_generations>=2"]),
    ("num_generations=1 with GCPO", lambda t: lambda: config("rollout.num_generations=1", "train.batch_size=8", "loss.baseline=none", recipe="gcpo_geometry"),
     ["rollout.num_generations=1 with algo=gcpo", "rollout.num_generations>=2"]),
    ("unknown reward name (and a wrong weights count)", lambda t: lambda: config("reward.functions=[math_acuracy]", "reward.weights=[1.0,2.0]"),
     ["unknown reward 'math_acuracy'", "did you mean math_accuracy"]),
    ("unknown reward name, loaded directly with a wrong weights count", lambda t: lambda: load_rewards(["math_acuracy"], [1.0, 2.0]),
     ["unknown reward 'math_acuracy'", "did you mean math_accuracy"]),
    ("unknown config key", lambda t: lambda: config("train.stpes=3"), ["'train.stpes'", "did you mean 'train.steps'"]),
    ("wrong value type", lambda t: lambda: config("train.steps=many"), ["'train.steps'", "'many'"]),
    ("unknown choice", lambda t: lambda: config("loss.agg=mean_of_means"), ["'loss.agg'", "choose one of"]),
    ("batch not a multiple of the group", lambda t: lambda: config("train.batch_size=10", "rollout.num_generations=4"),
     ["train.batch_size=10", "rollout.num_generations=4", "use e.g. train.batch_size=8"]),
    ("reward weights count", lambda t: lambda: config("reward.weights=[1.0,2.0,3.0]"), ["reward.weights has 3", "one weight per function"]),
    ("KL in the reward without a KL", lambda t: lambda: config("loss.kl_in_reward=true", "loss.beta=0"), ["loss.kl_in_reward", "loss.beta"]),
    ("resume pointing nowhere", lambda t: lambda: config(f"resume={t}/no/such/checkpoint"), ["resume=", "does not exist", "resume=latest"]),
    ("unknown recipe", lambda t: lambda: config(recipe="grpo_maths"), ["recipe 'grpo_maths' not found", "grpo_math"]),
    ("max_bad_updates=0", lambda t: lambda: config("train.max_bad_updates=0"), ["train.max_bad_updates=0: must be >= 1"]),
    # Numeric ranges (config/schema.py RANGES): each was a library traceback mid-run, or (lora.alpha) trained.
    ("top_p=0", lambda t: lambda: config("rollout.top_p=0"), ["rollout.top_p=0.0: must be in (0, 1]", "the default is 1.0"]),
    ("max_tokens=0", lambda t: lambda: config("rollout.max_tokens=0"), ["rollout.max_tokens=0: must be >= 1"]),
    ("negative learning rate", lambda t: lambda: config("train.lr=-1e-6"), ["train.lr=-1e-06: must be > 0"]),
    ("learning rate NaN", lambda t: lambda: config("train.lr=nan"), ["train.lr=nan: must be > 0"]),
    ("lora.r=0", lambda t: lambda: config("lora.enabled=true", "lora.r=0"), ["lora.r=0: must be >= 1", "the default is 16"]),
    ("negative lora.alpha", lambda t: lambda: config("lora.enabled=true", "lora.alpha=-8"), ["lora.alpha=-8: must be > 0"]),
    ("dual clip below 1", lambda t: lambda: config("loss.dual_clip=0.5"), ["loss.dual_clip=0.5: must be > 1 (or null)"]),
    ("recipe file is a list", case_recipe("- train.steps=3\n"), ["mine.yaml holds a list", "mapping of keys"]),
    ("recipe file with a tab", case_recipe("train:\n\tsteps: 3\n"), ["mine.yaml is not valid YAML at line 2", "a tab"]),
    ("recipe file empty", case_recipe(""), ["mine.yaml is empty", "leave recipe= out"]),
    ("model vocabulary smaller than its tokenizer", case_vocabulary_smaller_than_the_tokenizer,
     ["model 'my-model' has", "embedding rows but its tokenizer has", "use the tokenizer saved with these weights"]),
    ("reward returns a string", lambda t: lambda: rewards_call("1.0"), ["'my_reward' returned a str", "one float or None per completion"]),
    ("reward returns the wrong length", lambda t: lambda: rewards_call([1.0]), ["'my_reward' returned 1 rewards for 2 completions"]),
    ("reward returns NaN", lambda t: lambda: rewards_call([1.0, math.nan]), ["'my_reward' returned nan at sample 1", "None for 'not applicable'"]),
    ("reward returns 1e300", lambda t: lambda: rewards_call([1.0, 1e300]), ["'my_reward' returned 1e+300 at sample 1", "scale the reward down"]),
    ("reward returns a non-number", lambda t: lambda: rewards_call([1.0, "high"]), ["'my_reward' returned str 'high' at sample 1", "return a float or None"]),
    ("reward needs a missing column", case_reward_column_missing, ["'math_accuracy'", "needs an 'answer' column", "data.answer_column"]),
    ("reward weight is NaN", lambda t: lambda: load_rewards(["math_accuracy"], [math.nan]), ["reward weight for 'math_accuracy'", "finite number"]),
    ("reward listed twice", lambda t: lambda: load_rewards(["math_accuracy", "math_accuracy"]), ["'math_accuracy' is listed twice"]),
    ("reward options for an unlisted function", lambda t: lambda: load_rewards(["math_accuracy"], options={"length_reward": {"l_max": 5}}),
     ["reward options given for ['length_reward']", "not among the reward functions"]),
    ("reward file missing", case_reward_file_missing, ["my_rewards.py", "does not exist"]),
    ("reward function missing in its file", case_reward_function_missing, ["no attribute 'digit_fractoin'", "did you mean digit_fraction"]),
    ("missing prompt column", case_missing_prompt_column, ["prompt", "question", "data.prompt_column"]),
    ("missing answer column", case_missing_answer_column, ["'gold'", "solution"]),
    ("empty dataset", case_empty_dataset, ["training dataset is empty", "data.source"]),
    ("dataset file missing", case_missing_dataset_file, ["nowhere"]),
    ("prompt longer than the context", case_prompt_longer_than_context, ["a prompt of 4000 tokens", "context of 4096", "lower rollout.max_tokens"]),
    ("chat prompts, tokenizer without a chat template", case_chat_prompts_without_chat_template, ["no chat template", "plain-text prompts"]),
    ("LoRA target module absent from the model", case_lora_target_absent, ["lora.target_modules: ['query_key_value'] not found", "q_proj", "all-linear"]),
    ("model folder missing", case_model_missing, ["no-model", "no such folder"]),
    ("model folder without weights", case_model_folder_without_weights,
     ["config-only", "no weight files", "model.safetensors", "point model.name at the folder"]),
    ("corrupt checkpoint weights", case_corrupt_checkpoint, ["step-000001", "damaged", "earlier checkpoint"]),
    ("corrupt trainer_state.json", case_corrupt_trainer_state, ["step-000001", "damaged", "JSONDecodeError"]),
    ("partial checkpoint", case_partial_checkpoint, ["incomplete", "earlier checkpoint or resume=latest"]),
    ("resume folder missing", case_resume_checkpoint_folder_missing, ["step-000009", "no such checkpoint folder", "resume=latest"]),
    ("disk full while checkpointing", case_disk_full_while_checkpointing, ["step-000002", "no space left", "previous checkpoints are kept"]),
    ("ZeRO JSON that does not parse", case_zero_json_does_not_parse, ["zero3.json", "not valid JSON", "line 1 column"]),
    ("code reward without a sandbox", case_code_reward_without_sandbox, ["bubblewrap (bwrap) is not installed", "apt-get install bubblewrap", "ALIGN_SANDBOX=weak"]),
]


@pytest.mark.parametrize("name, make, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_naming_culprit_and_fix(name, make, expected, tmp_path):
    call = make(tmp_path)
    with pytest.raises(Exception) as info:
        call()
    error = info.value
    assert isinstance(error, UserError), f"{type(error).__name__} would print a traceback: {error}"
    message = str(error)
    assert "\n" not in message, message
    for part in expected:
        assert part in message, f"{part!r} not in: {message}"


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30


def test_disk_full_keeps_the_previous_checkpoint_and_cleans_up(tmp_path):
    from align.training.checkpoint import CheckpointError, find_checkpoint

    call = case_disk_full_while_checkpointing(tmp_path)
    before = find_checkpoint(tmp_path, "latest")
    snapshot = {p.name: p.read_bytes() for p in before.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError):
        call()
    assert find_checkpoint(tmp_path, "latest") == before
    assert {p.name: p.read_bytes() for p in before.iterdir() if p.is_file()} == snapshot
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000001"]  # no half-written folder


def test_unwritable_run_dir_is_one_line_and_writes_nothing(tmp_path):
    # Root ignores permission bits, so "not writable" is a run_dir below a regular file.
    blocker = tmp_path / "results"
    blocker.write_text("keep me")
    proc = subprocess.run(
        [sys.executable, "align/train.py", "recipe=grpo_math", f"log.run_dir={blocker}/run"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("align: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "log.run_dir=" in lines[0] and "choose a writable log.run_dir" in lines[0]
    assert blocker.read_text() == "keep me"


def test_config_errors_exit_with_one_line_before_loading_anything():
    proc = subprocess.run(
        [sys.executable, "align/train.py", "recipe=grpo_math", "rollout.num_generations=1", "train.batch_size=8"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("align: error: rollout.num_generations=1")


@pytest.mark.parametrize("raised, expected", [
    # what safetensors raises on a full disk (seen on a 2 MB tmpfs): not an OSError
    (lambda: __import__("safetensors").SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)"),
     ["step-000002", "no space left", "previous checkpoints are kept"]),
    (lambda: RuntimeError("serializer broke"), ["step-000002", "RuntimeError: serializer broke", "previous checkpoints are kept"]),
])
def test_any_failure_while_checkpointing_cleans_up_and_is_one_line(raised, expected, tmp_path):
    from align.training.checkpoint import CheckpointError, find_checkpoint, save_checkpoint

    acc, good = _checkpoint(tmp_path)

    def fails_midway(folder, *args, **kwargs):
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise raised()

    acc.save_state = fails_midway
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(acc, tmp_path, 2, {"position": 2})
    assert "\n" not in str(info.value) and all(part in str(info.value) for part in expected), str(info.value)
    assert find_checkpoint(tmp_path, "latest") == good
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-000001"]


REAL_DISK_FULL = """
import sys, torch
from accelerate import Accelerator
from align.errors import exit_on_user_error
from align.training.checkpoint import save_checkpoint
acc = Accelerator(cpu=True)
model = torch.nn.Linear(550, 550)  # 1.2 MB of weights: one checkpoint fits the 2 MB disk, two do not
model, opt = acc.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
with exit_on_user_error():
    save_checkpoint(acc, sys.argv[1], 1, {"position": 1})
    save_checkpoint(acc, sys.argv[1], 2, {"position": 2})
"""


@pytest.mark.slow
def test_real_disk_full_while_checkpointing_on_a_small_tmpfs(tmp_path):
    # A private mount namespace (unshare -rm) gives a 2 MB tmpfs without touching the host's mounts.
    import shutil

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("unshare -rm (a private mount namespace) is not available here")
    script = write(tmp_path / "save_twice.py", REAL_DISK_FULL)
    disk = tmp_path / "disk"
    disk.mkdir()
    shell = (f"mount -t tmpfs -o size=2m tmpfs {disk} && {sys.executable} {script} {disk}/run; status=$?; "
             f"ls -A {disk}/run/checkpoints; exit $status")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's align, not an installed one
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", shell], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("align: error: saving step-000002"), proc.stderr[-2000:]
    assert "no space left" in proc.stderr and "previous checkpoints are kept" in proc.stderr
    assert proc.stdout.splitlines()[-1].split() == ["step-000001"]  # ls: no .tmp-step-000002 left behind
