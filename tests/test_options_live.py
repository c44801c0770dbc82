"""Every config option does something (issue 10: two documented options were accepted and dead).
For each key of the schema, algorithm sections included: set it to another value and observe a
change in a short run (metrics, samples, weights), in GCPO's scoring of a fixed batch, in what the
rollout engine is built with, in the run's files or output; or get a one-line error naming the bad
value; or name the test functions elsewhere that show the effect ("covered").

A new config key fails `test_every_key_has_a_liveness_check` until it gets an entry in LIVE below.
scripts/check_liveness.py checks the checks: with ALIGN_DEAD_KEY=KEY (the key reset to its default
after loading) the tests named for KEY must fail.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest
import yaml

from align.config import ConfigError, all_keys, config_class
from align.algorithms import ALGORITHMS, load_config
from align.telemetry.plots import read_metrics
from tests.trainers.in_process import make_trainer
from tests.trainers.test_salt import ECHO

ROOT = Path(__file__).resolve().parents[1]
# The baseline run: two updates per batch (so ratios move and clipping options matter), a KL term,
# a linear schedule (so train.steps shapes the LR), a reward with spread.
BASE = ["train.updates_per_batch=2", "train.lr=5e-3", "loss.beta=0.1", "train.lr_schedule=linear", "train.steps=4",
        "rollout.max_tokens=8", "rollout.seed_per_prompt=false"]


def every_key() -> set[str]:
    """The schema's keys and every registered algorithm's own section's (gcpo.*, grao.*, ...)."""
    keys = set(all_keys())
    for entry in ALGORITHMS.values():
        section = entry.cls.config_section()
        if section is not None:
            keys |= set(all_keys(config_class(section)))
    return keys


def mentioned_keys() -> set[str]:
    known = set(all_keys())
    text = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in (ROOT / "recipes").glob("*.yaml"))
    found = {k for k in re.findall(r"\b([a-z_]+(?:\.[a-z_]+)+)\b", text) if k in known}
    for recipe in (ROOT / "recipes").glob("*.yaml"):
        def walk(tree, prefix=""):
            for key, value in tree.items():
                name = prefix + key
                if isinstance(value, dict) and name + ".x" not in known and any(k.startswith(name + ".") for k in known):
                    yield from walk(value, name + ".")
                else:
                    yield name
        found |= {k for k in walk(yaml.safe_load(recipe.read_text()) or {}) if k in known}
    return found


# ---------------------------------------------------------------------------------- observers
def _fingerprint(trainer, metrics, samples) -> dict:
    weights = sum(p.detach().double().sum().item() for p in trainer.acc.unwrap_model(trainer.model).parameters())
    numbers = {k: round(v, 9) for k, v in metrics.items() if not k.startswith(("time/", "tokens_per_s"))}
    return {"metrics": numbers, "samples": json.dumps(samples, sort_keys=True, default=str), "weights": round(weights, 6)}


def run(cache_dir, tmp_path, *overrides) -> dict:
    """One in-process GRPO step on the tiny model: what changed in metrics, samples or weights."""
    trainer = make_trainer(cache_dir, tmp_path / "run", *BASE, *overrides)
    metrics, samples = trainer.step(0)
    return _fingerprint(trainer, metrics, samples)


def train_files(cache_dir, tmp_path, *overrides) -> dict:
    """Two steps through Trainer.train: which files and rows it wrote."""
    out = tmp_path / "files"
    trainer = make_trainer(cache_dir, out, *BASE, "train.steps=2", "log.save_every=0", "log.sample_every=0", *overrides)
    trainer.train()
    rows = read_metrics(out / "metrics.jsonl")  # null (a NaN logged) reads as NaN
    samples = out / "samples.jsonl"
    evals = [{k: v for k, v in r.items() if k.startswith("eval")} for r in rows]
    return {"metric_keys": sorted({k for r in rows for k in r}), "steps": [r["step"] for r in rows], "evals": evals,
            "checkpoints": sorted(p.name for p in (out / "checkpoints").glob("*")),
            "samples": samples.read_text().count("\n") if samples.exists() else 0}


def engine_args(cache_dir, tmp_path, monkeypatch, *overrides) -> dict:
    """The arguments the trainer builds its rollout engine with."""
    import align.training.loop as base

    seen = {}

    class Built(Exception):
        pass

    def record(kind, path, **kwargs):
        seen.update(kind=kind, **kwargs)
        raise Built

    monkeypatch.setattr(base, "make_engine", record)
    with pytest.raises(Built):
        make_trainer(cache_dir, tmp_path / "engine", *BASE, *overrides)
    return seen


def gcpo_score(*overrides) -> dict:
    """GCPO's rewards and metrics for a fixed batch of reward-function outputs (2 prompts x 4)."""
    import align.algorithms.gcpo as gcpo
    from rewards.runner import RewardResult

    cfg = load_config(["recipe=gcpo_geometry", *overrides])
    algorithm = gcpo.GCPO(cfg)
    acc = [1, 1, 0, 0, 1, 0, 0, 0]
    fmt = [1, 0, 1, 1, 1, 1, 0, 1]
    aux = [1, 0, 1, 0, 0, 1, 1, 0]
    names = [f.name for f in algorithm.reward_functions]
    result = RewardResult([0.0] * 8, dict(zip(names, [acc, fmt, aux])), [False] * 8)
    original = gcpo.compute_rewards
    gcpo.compute_rewards = lambda *a, **k: result
    try:
        ids = [[1] * n for n in (5, 40, 12, 30, 8, 20, 3, 45)]
        scores = algorithm.score([""] * 8, [""] * 8, {}, ids, 4)
    finally:
        gcpo.compute_rewards = original
    return {"rewards": scores.rewards.tolist(), "metrics": algorithm.batch_metrics(scores)}


def train_output(cache_dir, tmp_path, *overrides) -> str:
    """What two steps through Trainer.train print (stdout and stderr)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        train_files(cache_dir, tmp_path, *overrides)
    # Only what align prints: timings and ETAs vary between runs, each run has its own folder, and the
    # first run of a process also gets one-time warnings and model-building progress bars. None is the
    # key's doing (the folder's name alone made every pair differ: the check passed with log.console dead).
    lines = [line for line in out.getvalue().replace(str(tmp_path), "RUN_DIR").splitlines()
             if line.strip() and "it/s]" not in line and "[WARNING]" not in line]
    return re.sub(r"[0-9.]+", "N", "\n".join(lines))


def config_error(*overrides) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(["recipe=grpo_math", *overrides])
    return str(err.value)


# A reward with zero spread on about half the groups (even answers): dynamic sampling has groups to refill.
HALF_FLAT = (f"reward.functions=[{Path(__file__).parent / 'trainers' / 'rewards_for_tests.py'}:digit_fraction_odd_answers]",
             "reward.weights=null", "train.batch_size=32")

# Agent episodes in a test environment (two turns, rewards with spread), trained by SALT.
EPISODES = ("algo=salt", "rollout.source=episodes", f"env.name={ECHO}:Echo", "env.max_turns=3", "rollout.max_tokens=4",
            "reward.functions=[]", "reward.weights=null")
REWARDS = Path(__file__).parent / "trainers" / "rewards_for_tests.py"
ONE_VALID = (f"reward.functions=[{REWARDS}:first_per_prompt]", "reward.weights=null")  # groups of one valid member
SLOW = (f"reward.functions=[{REWARDS}:slow]", "reward.weights=null")  # 0.2 s per call

# key -> (observer, overrides that change it). Observers: run, gcpo, engine, files, output, cache,
# config, raises, error_run, checkpointing, covered (test functions elsewhere, `path::test_name`).
LIVE: dict[str, tuple[str, tuple[str, ...]]] = {
    # GCPO refuses a reward.functions it would not use (its rewards are the gcpo.* keys): back to the default
    "algo": ("run", ("algo=gcpo", "data.source=geometry", "reward.functions=[math_accuracy]", "reward.weights=null")),
    "model.name": ("run", ("model.name=qwen2-40m",)),
    "model.dtype": ("run", ("model.dtype=bfloat16",)),
    "lora.enabled": ("run", ("lora.enabled=true",)),
    "lora.r": ("run", ("lora.enabled=true", "lora.r=2")),
    "lora.alpha": ("run", ("lora.enabled=true", "lora.alpha=2")),
    "lora.target_modules": ("run", ("lora.enabled=true", "lora.target_modules=[q_proj]")),
    "data.source": ("run", ("data.source=geometry", "reward.functions=[math_accuracy]", "reward.weights=null")),
    "data.prompt_column": ("error_run", ("data.prompt_column=question",)),
    "reward.functions": ("run", ("reward.functions=[math_accuracy]", "reward.weights=null")),
    "reward.weights": ("run", ("reward.weights=[1.0,3.0]",)),
    "reward.options": ("run", ("reward.functions=[math_accuracy,length_reward]", "reward.weights=null",
                               'reward.options={"length_reward": {l_max: 2}}')),
    "rollout.engine": ("engine", ("rollout.engine=vllm",)),
    "rollout.num_generations": ("run", ("rollout.num_generations=2",)),
    "rollout.max_tokens": ("run", ("rollout.max_tokens=4",)),
    "rollout.temperature": ("run", ("rollout.temperature=0.5",)),
    "rollout.gpu_memory_utilization": ("engine", ("rollout.engine=vllm", "rollout.gpu_memory_utilization=0.6")),
    "rollout.tensor_parallel_size": ("engine_or_error", ("rollout.tensor_parallel_size=2",)),
    "rollout.sleep_mode": ("engine_or_error", ("rollout.sleep_mode=true",)),
    "rollout.servers": ("covered", ("tests/rollout/test_server.py::test_three_grpo_steps_on_the_server_every_sync_verified",)),
    "rollout.server_timeout_s": ("engine", ("rollout.engine=server", "rollout.servers=[http://127.0.0.1:1]",
                                            "rollout.server_timeout_s=5")),
    "rollout.seed_per_prompt": ("run", ("rollout.seed_per_prompt=true",)),
    "loss.agg": ("run", ("loss.agg=token_mean",)),
    "loss.scale": ("run", ("loss.scale=none",)),
    "loss.beta": ("run", ("loss.beta=0.5",)),
    "loss.kl_kind": ("run", ("loss.kl_kind=k1",)),
    "loss.kl_in_reward": ("run", ("loss.kl_in_reward=true",)),
    "loss.eps_high": ("run", ("loss.eps_high=0.01",)),
    "loss.dual_clip": ("run", ("loss.dual_clip=1.05", "loss.eps_low=0.01")),
    "loss.delta": ("run", ("loss.eps_high=0.01", "loss.delta=1.02")),
    "loss.ratio_level": ("run", ("loss.ratio_level=sequence",)),
    "loss.surrogate": ("run", ("loss.surrogate=cispo",)),
    "loss.cispo_cap": ("run", ("loss.surrogate=cispo", "loss.cispo_cap=1.0001")),
    "loss.sapo_tau_pos": ("run", ("loss.surrogate=sapo", "loss.sapo_tau_pos=10.0")),
    "loss.sapo_tau_neg": ("run", ("loss.surrogate=sapo", "loss.sapo_tau_neg=10.0")),
    "loss.vespo_k_pos": ("run", ("loss.surrogate=vespo", "loss.vespo_k_pos=0.5")),
    "loss.vespo_lambda_pos": ("run", ("loss.surrogate=vespo", "loss.vespo_lambda_pos=0.5")),
    "loss.vespo_k_neg": ("run", ("loss.surrogate=vespo", "loss.vespo_k_neg=0.5")),
    "loss.vespo_lambda_neg": ("run", ("loss.surrogate=vespo", "loss.vespo_lambda_neg=0.5")),
    "loss.top_entropy_quantile": ("run", ("loss.top_entropy_quantile=0.2",)),
    "loss.entropy_coef": ("run", ("loss.entropy_coef=0.5",)),
    "loss.ref_sync": ("covered", ("tests/trainers/test_loss_options.py::test_reference_moves_by_alpha_every_n_steps_and_resumes",)),
    "loss.ref_sync_every": ("covered", ("tests/trainers/test_loss_options.py::test_reference_moves_by_alpha_every_n_steps_and_resumes",)),
    "loss.ref_sync_alpha": ("covered", ("tests/trainers/test_loss_options.py::test_reference_moves_by_alpha_every_n_steps_and_resumes",)),
    "loss.tis_cap": ("run", ("loss.tis_cap=1.0001", "model.dtype=bfloat16")),
    # bf16 engine logprobs differ from the trainer's: bypass takes them as pi_old, so the ratio moves
    "loss.off_policy_correction": ("run", ("loss.off_policy_correction=bypass", "model.dtype=bfloat16")),
    "rollout.max_staleness": ("covered", ("tests/rollout/test_server.py::test_one_step_ahead_trains_on_batches_one_version_old_reproducibly_and_resumes_exactly",
                                          "tests/rollout/test_server.py::test_salt_plays_whole_episodes_one_step_ahead_reproducibly_and_resumes_exactly")),
    "loss.mask_truncated": ("run", ("loss.mask_truncated=true",)),
    "loss.overlong_buffer": ("run", ("loss.overlong_buffer=4",)),
    "loss.dynamic_sampling": ("run", ("loss.dynamic_sampling=true", *HALF_FLAT)),
    "loss.dynamic_sampling_oversample": ("covered", ("tests/trainers/test_dynamic_sampling.py::test_an_oversampled_first_round_leaves_no_refill_round",)),
    "loss.dynamic_sampling_max_rounds": ("run", ("loss.dynamic_sampling=true", *HALF_FLAT, "loss.dynamic_sampling_max_rounds=1")),
    "gcpo.eps": ("gcpo", ("gcpo.eps=0.9",)),
    "gcpo.w_aux": ("gcpo", ("gcpo.w_aux=2.0",)),
    "gcpo.w_fmt": ("gcpo", ("gcpo.w_fmt=2.0",)),
    "gcpo.w_len": ("gcpo", ("gcpo.use_length=true", "gcpo.w_len=2.0")),
    "gcpo.l_max": ("gcpo", ("gcpo.use_length=true", "gcpo.l_max=10")),
    "gcpo.use_length": ("gcpo", ("gcpo.use_length=true",)),
    "train.steps": ("run", ("train.steps=9",)),
    "train.lr_schedule": ("run", ("train.lr_schedule=cosine",)),
    "train.warmup_steps": ("run", ("train.warmup_steps=2",)),
    "train.weight_decay": ("run", ("train.weight_decay=0.5",)),
    "train.max_grad_norm": ("run", ("train.max_grad_norm=1e-4",)),
    "train.seed": ("run", ("train.seed=7",)),
    "train.micro_batch_tokens": ("run", ("train.micro_batch_tokens=40",)),  # the `micro_batches` metric
    "train.shared_prompt": ("run", ("train.shared_prompt=false",)),  # the `train/forward_tokens` metric
    # memory only: the same numbers by design (tests/trainers/test_lm_head_chunk.py); that test fails if the head is whole
    "train.lm_head_chunk": ("covered", ("tests/trainers/test_lm_head_chunk.py::test_lm_head_chunk_0_gives_the_whole_head",
                                        "tests/trainers/test_lm_head_chunk.py::test_chunked_head_gives_the_whole_heads_log_probs_and_gradient")),
    "train.max_bad_updates": ("covered", ("tests/trainers/test_numerics.py::test_too_many_bad_updates_in_a_row_stop_with_the_last_good_checkpoint",)),
    "train.max_flat_steps": ("covered", ("tests/trainers/test_learning_signal.py::test_a_run_without_learning_signal_stops_naming_the_cause",
                                         "tests/trainers/test_learning_signal.py::test_max_flat_steps_zero_trains_on")),
    "train.cpu_threads": ("covered", ("tests/trainers/test_threads.py::test_train_cpu_threads_reaches_the_thread_setting_of_a_run",
                                      "tests/trainers/test_threads.py::test_an_explicit_count_changes_the_threads")),
    "train.max_minutes": ("files", ("train.max_minutes=1e-6",)),  # stops after the first step
    "data.split": ("run", ("data.split=test",)),
    "data.answer_column": ("raises", ("data.answer_column=no_such_column",)),
    "gcpo.accuracy_reward": ("raises", ("algo=gcpo", "data.source=geometry", "gcpo.accuracy_reward=no_such_reward")),
    "lora.dropout": ("run", ("lora.enabled=true", "lora.dropout=0.5")),
    "loss.baseline": ("run", ("loss.baseline=loo",)),
    "loss.eps_low": ("run", ("loss.eps_low=0.01",)),
    "loss.overlong_penalty": ("run", ("loss.overlong_buffer=4", "loss.overlong_penalty=5.0")),
    "rollout.top_k": ("run", ("rollout.top_k=2",)),
    "rollout.top_p": ("run", ("rollout.top_p=0.3",)),
    "model.gradient_checkpointing": ("checkpointing", ("model.gradient_checkpointing=true",)),
    "log.every": ("files", ("log.every=2",)),
    "log.keep_last": ("files", ("log.save_every=1", "log.keep_last=1")),
    "data.eval_split": ("files", ("log.eval_every=1", "data.eval_split=train")),
    # Covered by the tests named here, which show the effect through `align eval` or a full run.
    "eval.accuracy": ("covered", ("tests/foreign/test_resume_eval_holdout.py::test_eval_accuracy_changes_what_align_eval_reports",)),
    "eval.holdout": ("covered", ("tests/foreign/test_resume_eval_holdout.py::test_missing_eval_split_holds_out_a_disjoint_deterministic_slice",)),
    "eval.k": ("covered", ("tests/test_cli.py::test_eval_reports_mean_and_pass_at_k",)),
    "log.run_dir": ("covered", ("tests/trainers/test_train_e2e.py::test_lora_run",)),  # reads what it wrote there
    "log.report_to": ("covered", ("tests/telemetry/test_trackers.py::test_report_to_empty_writes_no_tracker",)),
    "log.project": ("covered", ("tests/telemetry/test_trackers.py::"
                                "test_wandb_offline_run_holds_config_metrics_at_their_steps_and_the_sample_table",)),
    "train.batch_size": ("run", ("train.batch_size=16",)),
    "train.lr": ("run", ("train.lr=1e-4",)),
    "train.updates_per_batch": ("run", ("train.updates_per_batch=1",)),
    "log.eval_every": ("files", ("log.eval_every=1",)),
    "log.sample_every": ("files", ("log.sample_every=1",)),
    "log.save_every": ("files", ("log.save_every=1",)),
    # Agents (issue 12): SALT runs in a test environment. These once named tests of the environment
    # functions, which take their values as arguments: they passed with the key dead (check_liveness.py).
    "env.name": ("run", (*EPISODES, f"env.name={ECHO}:Endless")),
    "env.options": ("run", (*EPISODES, "env.options.turns=1")),  # Echo's episodes are 2 turns long otherwise
    "env.max_turns": ("run", (*EPISODES, "env.max_turns=1")),
    "env.step_timeout_s": ("raises", (*EPISODES, f"env.name={ECHO}:Hangs", "env.step_timeout_s=0.5")),
    "env.eval_tasks": ("files", (*EPISODES, "log.eval_every=1", "env.eval_tasks=1")),  # Echo has 2 held-out tasks
    "salt.base": ("covered", ("tests/trainers/test_salt.py::test_salt_base_and_dedup_change_the_advantages",)),
    "salt.dedup": ("covered", ("tests/trainers/test_salt.py::test_salt_base_and_dedup_change_the_advantages",)),
    "salt.history": ("covered", ("tests/trainers/test_salt.py::test_salt_token_advantages_merge_shared_steps",)),
}
GEOMETRY = ("data.source=geometry", "reward.functions=[geometry_accuracy]", "reward.weights=null", "train.updates_per_batch=1")
LIVE |= {
    "grao.beta": ("run", ("algo=grao", *GEOMETRY, "grao.beta=3.0")),
    "grao.lam": ("run", ("algo=grao", *GEOMETRY, "grao.lam=3.0")),
    "grao.reference_column": ("raises", ("algo=grao", *GEOMETRY, "grao.reference_column=no_such_column")),
    "grao.judge": ("raises", ("algo=grao", *GEOMETRY, "grao.judge=no_such_judge")),
    "copg.beta": ("run", ("algo=copg", "train.updates_per_batch=1", "copg.beta=1.0")),  # arith: rewards with spread
    "rollout.source": ("covered", ("tests/trainers/test_algorithms_e2e.py::test_sample_writes_rows_that_offline_copg_trains_on_without_generating",)),
    "data.eval_source": ("covered", ("tests/trainers/test_algorithms.py::test_eval_source_is_what_evaluation_reads",)),
}
LIVE |= {
    "recipe": ("config", ("recipe=gcpo_geometry",)),
    "resume": ("covered", ("tests/trainers/test_train_e2e.py::test_resume_reproduces_the_uninterrupted_run",)),
    "resume_force": ("covered", ("tests/foreign/test_resume_eval_holdout.py::test_resume_force_continues_and_says_what_changed",)),
    "model.cache_dir": ("cache", ()),
    "data.options": ("run", ("data.options.seed=3",)),
    "data.system_prompt": ("run", ("data.system_prompt=Answer briefly.",)),
    "env.train_split": ("run", (*EPISODES, "env.train_split=test")),
    "env.system_prompt": ("run", (*EPISODES, "env.system_prompt=Answer briefly.")),
    "env.eval_split": ("files", (*EPISODES, "log.eval_every=1", "env.eval_split=train")),
    "gcpo.format_reward": ("raises", ("algo=gcpo", "data.source=geometry", "gcpo.format_reward=no_such_reward")),
    "gcpo.aux_reward": ("raises", ("algo=gcpo", "data.source=geometry", "gcpo.aux_reward=no_such_reward")),
    "gcpo.gate_aux_on_correct": ("gcpo", ("gcpo.gate_aux_on_correct=true",)),
    "gcpo.gate_len_on_correct": ("gcpo", ("gcpo.use_length=true", "gcpo.gate_len_on_correct=true")),
    "grao.adv_eps": ("run", ("algo=grao", *GEOMETRY, "grao.adv_eps=1.0")),
    "grao.ddof": ("run", ("algo=grao", *GEOMETRY, "grao.ddof=1")),  # the default is 0
    "grao.pool_ref": ("run", ("algo=grao", *GEOMETRY, "grao.pool_ref=false")),
    "log.console": ("output", ("log.console=true",)),
    "log.num_samples": ("files", ("log.sample_every=1", "log.num_samples=1")),
    "loss.adv_eps": ("run", ("loss.adv_eps=1.0",)),
    "loss.ddof": ("run", ("loss.ddof=0",)),
    "loss.kl_clamp": ("run", ("loss.kl_clamp=1e-4",)),
    "loss.small_group": ("run", (*ONE_VALID, "loss.small_group=raw")),
    "reward.timeout_s": ("raises", (*SLOW, "reward.timeout_s=0.05")),  # the error names the limit
    "rollout.kv_cache_mb": ("engine", ("rollout.engine=vllm", "rollout.kv_cache_mb=64")),
    "rollout.probe_tolerance": ("engine", ("rollout.probe_tolerance=0.5",)),
    "rollout.stop": ("run", ("rollout.stop=[a,e,i,o,u]",)),
    "rollout.verify_sync": ("run", ("rollout.verify_sync=false",)),
}
# Baselines the overrides above are compared with (options that only matter beside another one).
PAIRED_BASE = {
    "loss.dual_clip": ("loss.eps_low=0.01",),
    "loss.tis_cap": ("model.dtype=bfloat16",),
    "loss.off_policy_correction": ("model.dtype=bfloat16",),
    "loss.dynamic_sampling": HALF_FLAT,
    "loss.dynamic_sampling_max_rounds": ("loss.dynamic_sampling=true", *HALF_FLAT),
    "loss.delta": ("loss.eps_high=0.01",),
    "loss.cispo_cap": ("loss.surrogate=cispo",),
    "loss.sapo_tau_pos": ("loss.surrogate=sapo",), "loss.sapo_tau_neg": ("loss.surrogate=sapo",),
    "loss.vespo_k_pos": ("loss.surrogate=vespo",), "loss.vespo_lambda_pos": ("loss.surrogate=vespo",),
    "loss.vespo_k_neg": ("loss.surrogate=vespo",), "loss.vespo_lambda_neg": ("loss.surrogate=vespo",),
    "rollout.gpu_memory_utilization": ("rollout.engine=vllm",),
    "rollout.server_timeout_s": ("rollout.engine=server", "rollout.servers=[http://127.0.0.1:1]"),
    "lora.r": ("lora.enabled=true",), "lora.alpha": ("lora.enabled=true",), "lora.target_modules": ("lora.enabled=true",),
    "gcpo.w_len": ("gcpo.use_length=true",), "gcpo.l_max": ("gcpo.use_length=true",),
    "data.source": ("reward.functions=[math_accuracy]", "reward.weights=null"),
    "reward.options": ("reward.functions=[math_accuracy,length_reward]", "reward.weights=null"),
    "grao.beta": ("algo=grao", *GEOMETRY), "grao.lam": ("algo=grao", *GEOMETRY), "copg.beta": ("algo=copg", "train.updates_per_batch=1"),
    "lora.dropout": ("lora.enabled=true",),
    "loss.overlong_penalty": ("loss.overlong_buffer=4",),
    "log.keep_last": ("log.save_every=1",),
    "data.eval_split": ("log.eval_every=1",),
    "env.train_split": EPISODES, "env.system_prompt": EPISODES, "env.eval_split": (*EPISODES, "log.eval_every=1"),
    "env.name": EPISODES, "env.options": EPISODES, "env.max_turns": EPISODES, "env.eval_tasks": (*EPISODES, "log.eval_every=1"),
    "grao.adv_eps": ("algo=grao", *GEOMETRY), "grao.ddof": ("algo=grao", *GEOMETRY), "grao.pool_ref": ("algo=grao", *GEOMETRY),
    "log.num_samples": ("log.sample_every=1",),
    "loss.small_group": ONE_VALID, "gcpo.gate_len_on_correct": ("gcpo.use_length=true",),
    "rollout.kv_cache_mb": ("rollout.engine=vllm",),
}


def test_every_key_has_a_liveness_check():
    assert mentioned_keys() <= every_key() and len(every_key()) > 130  # the walk finds the algorithm sections too
    missing = sorted(every_key() - set(LIVE))
    assert not missing, f"config keys without an entry in LIVE: {missing}"
    assert not set(LIVE) - every_key(), f"LIVE names keys the schema does not have: {sorted(set(LIVE) - every_key())}"


def test_covered_names_test_functions():
    """A "covered" entry names test functions (`path::test_name`, optionally `[param]`) that exist."""
    for key, (observer, names) in LIVE.items():
        if observer == "covered":
            for name in names:
                path, _, test = name.partition("::")
                function = test.split("[")[0]
                assert function.startswith("test_"), (key, name)
                assert re.search(rf"^def {function}\(", (ROOT / path).read_text(), re.M), (key, name)


def test_align_dead_key_resets_the_key_to_its_default(monkeypatch):
    """The liveness mutation check's hook (scripts/check_liveness.py): the key as if never given."""
    assert load_config(["train.lr=0.5"]).train.lr == 0.5
    monkeypatch.setenv("ALIGN_DEAD_KEY", "train.lr")
    assert load_config(["train.lr=0.5", "train.steps=3"]).train.lr == 1e-6
    assert load_config(["train.lr=0.5", "train.steps=3"]).train.steps == 3  # only that key
    assert load_config(["recipe=grpo_math"]).train.lr == 1e-6  # a recipe's value too
    monkeypatch.setenv("ALIGN_DEAD_KEY", "gcpo.eps")
    assert load_config(["algo=gcpo", "gcpo.eps=0.5"]).gcpo.eps == 0.05
    assert load_config(["train.lr=0.5"]).train.lr == 0.5  # another algorithm's section: nothing to reset


@pytest.fixture(scope="module")
def baseline(cache_dir, tmp_path_factory):
    cache = {}

    def get(extra: tuple[str, ...]) -> dict:
        if extra not in cache:
            cache[extra] = run(cache_dir, tmp_path_factory.mktemp("base"), *extra)
        return cache[extra]

    return get


def test_the_baseline_run_is_deterministic(baseline, cache_dir, tmp_path):
    assert run(cache_dir, tmp_path) == baseline(())  # else a "change" below could be noise


@pytest.mark.parametrize("key", sorted(LIVE))
def test_changing_the_key_changes_the_run(key, baseline, cache_dir, tmp_path, monkeypatch):
    observer, overrides = LIVE[key]
    if observer == "run":
        assert run(cache_dir, tmp_path, *overrides) != baseline(PAIRED_BASE.get(key, ())), key
    elif observer == "gcpo":
        assert gcpo_score(*overrides) != gcpo_score(*PAIRED_BASE.get(key, ())), key
    elif observer == "files":
        assert train_files(cache_dir, tmp_path / "a", *overrides) != train_files(cache_dir, tmp_path / "b", *PAIRED_BASE.get(key, ())), key
    elif observer == "raises":  # a value that names nothing: the error says which
        with pytest.raises(Exception, match=overrides[-1].split("=")[1]):
            run(cache_dir, tmp_path, *overrides)
    elif observer == "checkpointing":  # same numbers by design; the model is built to recompute activations
        trainer = make_trainer(cache_dir, tmp_path / "run", *BASE, *overrides)
        assert trainer.acc.unwrap_model(trainer.model).is_gradient_checkpointing
    elif observer == "covered":  # the named tests show it; test_covered_names_test_functions checks they exist
        assert overrides
    elif observer == "output":
        assert train_output(cache_dir, tmp_path / "a", *overrides) != train_output(cache_dir, tmp_path / "b"), key
    elif observer == "cache":  # built-in models are built under it
        cache = tmp_path / "models"
        make_trainer(cache_dir, tmp_path / "run", *BASE, f"model.cache_dir={cache}")
        assert cache.is_dir() and any(cache.rglob("config.json")), key
    elif observer == "config":
        assert load_config(list(overrides)) != load_config(list(PAIRED_BASE.get(key, ()))), key
    elif observer == "error_run":  # a renamed column the data does not have: the error names it
        with pytest.raises(Exception, match=overrides[0].split("=")[1]):
            run(cache_dir, tmp_path, *overrides)
    elif observer in ("engine", "engine_or_error"):
        try:
            changed = engine_args(cache_dir, tmp_path / "a", monkeypatch, *overrides)
        except ConfigError as err:
            assert observer == "engine_or_error" and key in str(err), (key, err)
            return
        assert changed != engine_args(cache_dir, tmp_path / "b", monkeypatch, *PAIRED_BASE.get(key, ())), key
    else:
        raise AssertionError(f"unknown observer {observer}")


# ------------------------------------------------------------------------------ per algorithm
# Each algorithm's run and the shared keys its rollout, loss or advantages read (docs/ALGORITHMS.md):
# GRAO and CoPG have their own advantages and loss (grao.* / copg.beta, no importance ratio), so
# of the loss section they read none of the advantage, surrogate or KL keys; SALT is GRPO's loss
# on step advantages (salt.base=grpo uses loss.scale).
ALGO_RUN = {
    "grpo": (),
    "gcpo": (*LIVE["algo"][1], "model.name=tiny-geometry"),  # the warm start: rewards with spread
    "grao": ("algo=grao", *GEOMETRY),
    "copg": ("algo=copg", "train.updates_per_batch=1"),
    "salt": EPISODES,
}
SLOW_PAIR = pytest.mark.slow
ALGO_READS = [
    # GCPO is left out: in this one-step setting its groups are flat (no change to show); gcpo.* keys are above
    ("grpo", "loss.eps_low=0.01"),
    ("grao", "train.lr=1e-4"), ("grao", "rollout.temperature=0.5"),
    ("copg", "train.lr=1e-4"), ("copg", "rollout.temperature=0.5"),
    ("salt", "loss.eps_low=0.01"), ("salt", "loss.scale=none"),
    pytest.param("grao", "rollout.max_tokens=4", marks=SLOW_PAIR),
    pytest.param("copg", "rollout.max_tokens=4", marks=SLOW_PAIR), pytest.param("salt", "train.lr=1e-4", marks=SLOW_PAIR),
    pytest.param("salt", "loss.beta=0.5", marks=SLOW_PAIR),
]


@pytest.mark.parametrize(("algo", "override"), ALGO_READS)
def test_a_key_the_algorithm_reads_changes_its_run(algo, override, baseline, cache_dir, tmp_path):
    assert run(cache_dir, tmp_path, *ALGO_RUN[algo], override) != baseline(ALGO_RUN[algo]), (algo, override)


def warned_or_refused(algo: str, override: str) -> str:
    """The line saying `override` does nothing under `algo`: its ConfigError, or its inert warning."""
    from align.algorithms import algorithm_class
    from align.config import inert_ratio_options
    from align.algos.surrogates import SURROGATES

    try:
        cfg = load_config([*ALGO_RUN[algo], override])
    except ConfigError as err:
        return str(err)
    cls = algorithm_class(cfg.algo)
    return " ".join(inert_ratio_options(cfg, cls(cfg).needs.importance_correction, SURROGATES[cfg.loss.surrogate].reads,
                                        cls.unread_loss_options))


# (algorithm, key=value) that cannot act in that algorithm's run: refused, or named at the start of the run.
ALGO_IGNORES = [
    ("grao", "loss.eps_low=0.1"), ("grao", "loss.beta=0.5"), ("grao", "loss.scale=none"), ("grao", "train.updates_per_batch=2"),
    ("copg", "loss.eps_high=0.5"), ("copg", "loss.beta=0.5"), ("copg", "loss.baseline=loo"), ("copg", "loss.surrogate=cispo"),
    ("grpo", "gcpo.eps=0.5"), ("grpo", "loss.cispo_cap=2.0"), ("gcpo", "reward.functions=[think_answer_format]"),
    ("salt", "data.source=arith"),
]


@pytest.mark.parametrize(("algo", "override"), ALGO_IGNORES)
def test_a_key_the_algorithm_ignores_is_refused_or_named(algo, override):
    key = override.split("=")[0]
    assert key in warned_or_refused(algo, override), (algo, override)
    assert key not in warned_or_refused(algo, "train.steps=3")  # the line is about the key, not always there
