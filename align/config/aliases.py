"""TRL (1.16) and verl names for our config keys and values, consulted before any fuzzy matching.

A user arriving with a TRL `GRPOConfig` or a verl Hydra command line writes `learning_rate=1e-6`,
`loss_type=dapo` or `actor_rollout_ref.actor.kl_loss_type=low_var_kl`. Each foreign key here either
translates (key and value; the translation is printed once) or is refused with one line that says
exactly what it is called here, or why there is no equivalent. Fuzzy matching on the remaining
unknown keys must never turn a foreign name into a different concept (`num_iterations` is mu, not
`rollout.num_generations`), so it only proposes near-identical spellings (`suggest_key`).

`TABLE` is also the source of the README's "Coming from TRL or verl" table (`markdown_table`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from align.config.schema import CHOICES, REPORT_TO, Config, ConfigError, _get, all_keys

# verl writes most actor/rollout keys under this prefix; the table lists them without it.
VERL_PREFIX = "actor_rollout_ref."


@dataclass(frozen=True)
class Alias:
    """One foreign key. `targets`: our keys it sets (the value passes through `values` when given).

    values: foreign value (lower-cased text) -> our value, or NA = "no equivalent" (an error
    quoting `note`). A value not in the table is an error listing the accepted ones.
    note: shown in the error when there is no target (what to write here instead), and in the README.
    translate: for values that need arithmetic or set several keys; returns {our key: value}.
    """

    origin: str  # "TRL" | "verl"
    targets: tuple[str, ...] = ()
    values: dict[str, Any] | None = None
    note: str = ""
    translate: Callable[[Any], dict[str, Any]] | None = field(default=None, compare=False)
    foreign_default: str = ""  # the library's default, when it differs from ours (README table)


def _to(*targets: str, values: dict[str, Any] | None = None, note: str = "", default: str = "", origin: str = "TRL") -> Alias:
    return Alias(origin, targets, values, note, None, default)


def _none(note: str, origin: str = "TRL") -> Alias:
    return Alias(origin, (), None, note)


def _verl(*targets: str, values: dict[str, Any] | None = None, note: str = "", default: str = "") -> Alias:
    return _to(*targets, values=values, note=note, default=default, origin="verl")


def _verl_none(note: str) -> Alias:
    return _none(note, origin="verl")


class _NoEquivalent:
    """A foreign value with no counterpart here (None cannot mark it: `null` is a real value, e.g. loss.tis_cap)."""

    def __repr__(self) -> str:
        return "NA"


NA = _NoEquivalent()

# Value tables shared by a TRL key, a verl key and our own key (a foreign value under our key translates too).
AGG_TRL = {"dapo": "token_mean", "bnpo": "token_mean", "grpo": "seq_mean_token_mean", "dr_grpo": "seq_sum_const",
           "luspo": "seq_mean_token_sum"}
# TRL's loss_type names a surrogate and an aggregation at once (grpo_trainer.py _compute_loss). LUSPO
# is PPO's clip with TRL's per-sequence token sum; the paper's setup also sets importance_sampling_level=sequence.
LOSS_TYPE_TRL = {name: ("clip", agg) for name, agg in AGG_TRL.items()} | {
    "cispo": ("cispo", "token_mean"), "sapo": ("sapo", "seq_mean_token_mean"), "vespo": ("vespo", "token_mean")}
AGG_VERL = {"token-mean": "token_mean", "seq-mean-token-mean": "seq_mean_token_mean",
            "seq-mean-token-sum": "seq_mean_token_sum", "seq-mean-token-sum-norm": "seq_sum_const"}
SCALE_TRL = {"group": "std", "true": "std", "batch": "batch", "none": "none", "false": "none"}
KL_VERL = {"kl": "k1", "k1": "k1", "mse": "k2", "k2": "k2", "low_var_kl": "k3", "k3": "k3", "low_var_kl+": "k3+",
           "k3+": "k3+", "abs": NA, "full": NA}
SCHEDULE_TRL = {"linear": "linear", "cosine": "cosine", "constant": "constant", "constant_with_warmup": "constant"}
BATCH_NOTE = ("here the batch is train.batch_size = completions per optimizer step over all processes "
              "(prompts x rollout.num_generations); micro-batching is by tokens (train.micro_batch_tokens)")

TABLE: dict[str, Alias] = {
    # ---- TRL GRPOConfig (and TrainingArguments / ModelConfig / ScriptArguments) ----
    "learning_rate": _to("train.lr"),
    "num_iterations": _to("train.updates_per_batch"),
    "max_completion_length": _to("rollout.max_tokens", default="512"),
    "num_generations": _to("rollout.num_generations"),
    "temperature": _to("rollout.temperature"),
    "top_p": _to("rollout.top_p"),
    "top_k": _to("rollout.top_k"),
    "beta": _to("loss.beta"),
    "epsilon": _to("loss.eps_low", "loss.eps_high", note="sets both clip bounds, as TRL does when epsilon_high is unset"),
    "epsilon_high": _to("loss.eps_high"),
    "delta": _to("loss.delta"),
    "importance_sampling_level": _to("loss.ratio_level", values={"token": "token", "sequence": "sequence"}),
    "loss_type": Alias("TRL", ("loss.surrogate", "loss.agg"), None,
                       "a surrogate and an aggregation: " + ", ".join(f"{k} = {s} + {a}" for k, (s, a) in LOSS_TYPE_TRL.items()),
                       lambda v: _loss_type(v), "dapo"),
    "sapo_temperature_pos": _to("loss.sapo_tau_pos"),
    "sapo_temperature_neg": _to("loss.sapo_tau_neg"),
    "vespo_k_pos": _to("loss.vespo_k_pos"),
    "vespo_lambda_pos": _to("loss.vespo_lambda_pos"),
    "vespo_k_neg": _to("loss.vespo_k_neg"),
    "vespo_lambda_neg": _to("loss.vespo_lambda_neg"),
    "scale_rewards": _to("loss.scale", values=SCALE_TRL),
    "mask_truncated_completions": _to("loss.mask_truncated"),
    "reward_funcs": _to("reward.functions"),
    "reward_weights": _to("reward.weights"),
    "max_steps": _to("train.steps"),
    "warmup_steps": _to("train.warmup_steps"),
    "lr_scheduler_type": _to("train.lr_schedule", values=SCHEDULE_TRL, default="linear"),
    "weight_decay": _to("train.weight_decay"),
    "max_grad_norm": _to("train.max_grad_norm"),
    "seed": _to("train.seed"),
    "gradient_checkpointing": _to("model.gradient_checkpointing", default="true"),
    "bf16": _to("model.dtype", values={"true": "bfloat16", "false": "float32"}, default="true"),
    "use_peft": _to("lora.enabled"),
    "lora_r": _to("lora.r"),
    "lora_alpha": _to("lora.alpha"),
    "lora_dropout": _to("lora.dropout"),
    "lora_target_modules": _to("lora.target_modules"),
    "model_name_or_path": _to("model.name"),
    "dataset_name": _to("data.source"),
    "dataset_train_split": _to("data.split"),
    "dataset_test_split": _to("data.eval_split"),
    "output_dir": _to("log.run_dir"),
    "logging_steps": _to("log.every"),
    "report_to": Alias("TRL", ("log.report_to",), None, "any of tensorboard, wandb, trackio, mlflow (offline, under the run folder); none: none",
                       lambda v: _report_to(v, "TRL"), "none"),
    "project": _to("log.project", default="huggingface"),
    "run_name": _none("a run's name in the trackers is its folder: log.run_dir (output_dir)"),
    "save_steps": _to("log.save_every"),
    "save_total_limit": _to("log.keep_last"),
    "eval_steps": _to("log.eval_every"),
    "use_vllm": _to("rollout.engine", values={"true": "vllm", "false": "hf"}),
    # AsyncGRPOConfig (trl.experimental.async_grpo, trl#5293): how many weight versions generation may run ahead
    "max_staleness": _to("rollout.max_staleness", note="TRL's AsyncGRPOConfig; here with rollout.engine=server"),
    "vllm_gpu_memory_utilization": _to("rollout.gpu_memory_utilization"),
    "vllm_tensor_parallel_size": _to("rollout.tensor_parallel_size"),
    "vllm_enable_sleep_mode": _to("rollout.sleep_mode"),
    "vllm_importance_sampling_correction": _to("loss.tis_cap", values={"true": 2.0, "false": None},
                                               note="true keeps our token-level cap 2.0"),
    "vllm_importance_sampling_clip_max": _to("loss.tis_cap", default="3.0 (sequence_mask)"),
    "vllm_importance_sampling_cap": _to("loss.tis_cap"),
    "vllm_importance_sampling_mode": _to(values={"token_truncate": "token_truncate"}, default="sequence_mask",
                                         note="only token_truncate is implemented (loss.tis_cap); TRL's default sequence_mask is not"),
    "per_device_train_batch_size": _none(BATCH_NOTE),
    "gradient_accumulation_steps": _none(BATCH_NOTE),
    "generation_batch_size": _none(BATCH_NOTE),
    "steps_per_generation": _none(BATCH_NOTE + "; several updates on one rollout batch: train.updates_per_batch"),
    "num_train_epochs": _none("runs are counted in optimizer steps: train.steps"),
    "max_prompt_length": _none("prompts are not truncated here; filter long prompts out of the data"),
    "top_entropy_quantile": _to("loss.top_entropy_quantile", note="one threshold over the whole step's tokens "
                                "(TRL's is per micro-batch), from the entropies of the policy the step starts from"),
    "entropy_coef": _to("loss.entropy_coef", note="the bonus is the mean entropy over the step's loss tokens"),
    "use_adaptive_entropy": _none("adaptive entropy control (Skywork-OR1) is not implemented; loss.entropy_coef is fixed"),
    "sync_ref_model": _to("loss.ref_sync"),
    "ref_model_mixup_alpha": _to("loss.ref_sync_alpha"),
    "ref_model_sync_steps": _to("loss.ref_sync_every"),
    "multi_objective_aggregation": _none("rewards are summed with reward.weights, then normalised (TRL's sum_then_normalize)"),
    # ---- verl (Hydra keys; actor_rollout_ref. may be omitted) ----
    "actor.optim.lr": _verl("train.lr"),
    "actor.optim.weight_decay": _verl("train.weight_decay", default="0.01"),
    "actor.optim.lr_warmup_steps": _verl("train.warmup_steps"),
    "actor.optim.warmup_style": _verl("train.lr_schedule", values={"constant": "constant", "cosine": "cosine"}),
    "actor.optim.lr_scheduler_type": _verl("train.lr_schedule", values={"constant": "constant", "cosine": "cosine"}),
    "actor.ppo_epochs": _verl("train.updates_per_batch"),
    "actor.clip_ratio": _verl("loss.eps_low", "loss.eps_high"),
    "actor.clip_ratio_low": _verl("loss.eps_low"),
    "actor.clip_ratio_high": _verl("loss.eps_high"),
    "actor.clip_ratio_c": _verl("loss.dual_clip", default="3.0"),
    "actor.loss_agg_mode": _verl("loss.agg", values=AGG_VERL, default="token-mean (token_mean)"),
    "actor.kl_loss_coef": _verl("loss.beta", default="0.001"),
    "actor.kl_loss_type": _verl("loss.kl_kind", values=KL_VERL, default="low_var_kl (k3)"),
    "actor.use_kl_loss": _verl_none("the KL term is on when loss.beta > 0 (in the loss; loss.kl_in_reward=true puts it in the reward)"),
    "actor.grad_clip": _verl("train.max_grad_norm"),
    "actor.entropy_coeff": _verl("loss.entropy_coef", note="here the bonus is always a token mean (verl aggregates it "
                                 "with loss_agg_mode)"),
    "actor.ppo_mini_batch_size": _verl_none(BATCH_NOTE + "; one rollout batch is one optimizer step (x train.updates_per_batch)"),
    "actor.ppo_micro_batch_size_per_gpu": _verl_none(BATCH_NOTE),
    "actor.ppo_max_token_len_per_gpu": _verl("train.micro_batch_tokens"),
    "actor.policy_loss.loss_mode": _verl(values={"vanilla": "vanilla"}, note="only the vanilla clipped surrogate (and GSPO: loss.ratio_level=sequence)"),
    "rollout.n": _verl("rollout.num_generations", default="1"),
    "rollout.tensor_model_parallel_size": _verl("rollout.tensor_parallel_size"),
    "rollout.response_length": _verl("rollout.max_tokens"),
    "model.path": _verl("model.name"),
    "model.lora_rank": Alias("verl", ("lora.r", "lora.enabled"), None, "lora_rank > 0 turns LoRA on",
                             lambda v: {"lora.r": v, "lora.enabled": int(v) > 0}),
    "model.lora_alpha": _verl("lora.alpha"),
    "model.target_modules": _verl("lora.target_modules"),
    "model.enable_gradient_checkpointing": _verl("model.gradient_checkpointing"),
    "data.train_files": _verl("data.source"),
    "data.val_files": _verl_none("evaluation reads data.eval_split of data.source (a folder with train/test files)"),
    "data.prompt_key": _verl("data.prompt_column"),
    "data.max_response_length": _verl("rollout.max_tokens", default="512"),
    "data.max_prompt_length": _verl_none("prompts are not truncated here; filter long prompts out of the data"),
    "data.train_batch_size": _verl_none("verl counts prompts; here train.batch_size counts completions: "
                                        "train.batch_size = data.train_batch_size x rollout.num_generations"),
    "data.reward_fn_key": _verl_none("the verl adapter passes the data_source column: reward.functions=[verl:FILE.py:compute_score]"),
    "custom_reward_function.path": _verl_none("write reward.functions=[verl:PATH.py:compute_score] (path and function name together)"),
    "custom_reward_function.name": _verl_none("write reward.functions=[verl:PATH.py:NAME] (path and function name together)"),
    "algorithm.adv_estimator": Alias("verl", ("loss.baseline",), None, "grpo: the default (mean baseline); rloo: loo",
                                     lambda v: _adv_estimator(v)),
    "algorithm.norm_adv_by_std_in_grpo": _verl("loss.scale", values={"true": "std", "false": "none"}),
    "algorithm.use_kl_in_reward": _verl("loss.kl_in_reward"),
    "algorithm.kl_ctrl.kl_coef": _verl("loss.beta"),
    "algorithm.filter_groups.enable": _verl("loss.dynamic_sampling"),
    "algorithm.filter_groups.max_num_gen_batches": _verl("loss.dynamic_sampling_max_rounds"),
    "reward_model.overlong_buffer.len": _verl("loss.overlong_buffer"),
    "reward_model.overlong_buffer.penalty_factor": _verl("loss.overlong_penalty"),
    "trainer.total_training_steps": _verl("train.steps"),
    "trainer.total_epochs": _verl_none("runs are counted in optimizer steps: train.steps"),
    "trainer.save_freq": _verl("log.save_every"),
    "trainer.test_freq": _verl("log.eval_every"),
    "trainer.default_local_dir": _verl("log.run_dir"),
    "trainer.logger": Alias("verl", ("log.report_to",), None, "console and file are always on here (the progress line, metrics.jsonl)",
                            lambda v: _report_to(v, "verl"), "[console,wandb]"),
    "trainer.project_name": _verl("log.project", default="verl_examples"),
    "trainer.experiment_name": _verl_none("a run's name in the trackers is its folder: log.run_dir (trainer.default_local_dir)"),
}

def _loss_type(value: Any) -> dict[str, Any]:
    text = _text(value)
    if text not in LOSS_TYPE_TRL:
        raise ConfigError(f"'loss_type={value}' (TRL): value not understood here; accepted: {', '.join(LOSS_TYPE_TRL)}")
    surrogate, agg = LOSS_TYPE_TRL[text]
    return {"loss.surrogate": surrogate, "loss.agg": agg}


def _cispo_cap(pairs: list[tuple[str, Any]]) -> bool:
    """Whether `epsilon_high` means CISPO's absolute cap here: TRL reads it so under loss_type=cispo."""
    return any((k == "loss_type" or k == "loss.surrogate") and _text(v) == "cispo" for k, v in pairs)


def _report_to(value: Any, origin: str) -> dict[str, Any]:
    """TRL's `report_to` (a name, a list, "none" or "all") or verl's `trainer.logger` (a list) -> log.report_to."""
    names = []
    for item in value if isinstance(value, (list, tuple)) else [value]:
        text = _text(item)
        if text in ("none", ""):
            continue
        if origin == "verl" and text in ("console", "file"):  # the progress line and metrics.jsonl are always written
            continue
        if text == "all":
            raise ConfigError(f"'report_to=all' ({origin}): name the trackers, e.g. log.report_to=[{','.join(REPORT_TO)}]")
        names.append(text)
    return {"log.report_to": names}


def _adv_estimator(value: Any) -> dict[str, Any]:
    baselines = {"grpo": "mean", "rloo": "loo"}
    if str(value).lower() not in baselines:
        raise ConfigError(f"'algorithm.adv_estimator={value}' (verl) has no equivalent here; accepted: grpo, rloo "
                          "(GAE/PPO critics are not implemented)")
    return {"loss.baseline": baselines[str(value).lower()]}


# Foreign values accepted under our own keys too (e.g. loss.agg=token-mean, loss.kl_kind=low_var_kl).
VALUES_OF_OUR_KEYS: dict[str, dict[str, Any]] = {
    "loss.agg": {k: v for k, v in {**AGG_TRL, **AGG_VERL}.items() if v is not NA},
    "loss.kl_kind": {k: v for k, v in KL_VERL.items() if v is not NA},
    "loss.scale": SCALE_TRL,
    "train.lr_schedule": SCHEDULE_TRL,
    "log.report_to": {"none": [], **{name: [name] for name in REPORT_TO}},  # TRL's spellings: one name, or none
}

_announced: set[str] = set()


def lookup(key: str) -> tuple[str, Alias] | None:
    """(the table's spelling, its entry) for a foreign key, or None."""
    for candidate in (key, key.removeprefix(VERL_PREFIX)):
        if candidate in TABLE:
            return candidate, TABLE[candidate]
    return None


def translate_pair(key: str, value: Any, cispo: bool = False) -> dict[str, Any] | None:
    """{our key: value} for a foreign `key=value`, or None when `key` is not foreign.

    value: the parsed value (YAML scalar, list...). cispo: the same command line or recipe sets
    loss_type=cispo, under which TRL's `epsilon_high` is CISPO's absolute cap (loss.cispo_cap), not a
    clip bound. Raises ConfigError when the key or value has no equivalent here, with what to write instead.
    """
    if cispo and key == "epsilon_high":
        return _announce(key, {"loss.cispo_cap": value})
    stripped = key.removeprefix(VERL_PREFIX)
    if stripped != key and stripped in all_keys():  # verl spells some keys as we do: rollout.temperature, ...
        if stripped == "rollout.top_k" and value == -1:  # verl's "off" is -1, ours 0
            value = 0
        return _announce(key, {stripped: value})
    found = lookup(key)
    if found is None:
        return None
    name, alias = found
    if alias.translate is not None:
        return _announce(key, alias.translate(value))
    mapped = value
    if alias.values is not None:
        mapped = _map_value(key, name, alias, value)
    if not alias.targets:
        if alias.values is not None:
            return _announce(key, {})  # an accepted value that is already how we work
        raise ConfigError(f"'{key}' ({alias.origin}) has no equivalent here: {alias.note}")
    return _announce(key, {target: mapped for target in alias.targets})


def translate_our_value(key: str, value: Any) -> Any:
    """A foreign value under our own key (loss.agg=token-mean) -> ours; anything else unchanged."""
    table = VALUES_OF_OUR_KEYS.get(key)
    text = _text(value)
    if table is None or text not in table or table[text] == value:
        return value
    _announce(f"{key}={value}", {key: table[text]})
    return table[text]


def _map_value(key: str, name: str, alias: Alias, value: Any) -> Any:
    text = _text(value)
    if text not in alias.values:
        accepted = ", ".join(k for k, v in alias.values.items() if v is not NA)
        raise ConfigError(f"'{key}={value}' ({alias.origin}): value not understood here; accepted: {accepted}"
                          + (f" ({alias.note})" if alias.note else ""))
    mapped = alias.values[text]
    if mapped is NA:
        raise ConfigError(f"'{key}={value}' ({alias.origin}) has no equivalent here"
                          + (f": {alias.note}" if alias.note else "")
                          + (f"; {alias.targets[0]} takes one of {', '.join(_ours(alias.targets[0]))}" if alias.targets else ""))
    return mapped


def _ours(key: str) -> list[str]:
    return list(CHOICES.get(key, ()))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip().lower()


def _announce(key: str, mapping: dict[str, Any]) -> dict[str, Any]:
    """Say once per process (rank 0 only) what a foreign key became."""
    if key not in _announced and os.environ.get("RANK", "0") == "0":
        _announced.add(key)
        became = " ".join(f"{k}={_dump(v)}" for k, v in mapping.items())
        print(f"align: '{key}' is {became} here" if became else f"align: '{key}' is already how align works", file=sys.stderr)
    return mapping


def _dump(value: Any) -> str:
    """A value as it would be written on the command line (the inverse of yaml parsing)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_dump(v) for v in value) + "]"
    return str(value)


def translate_overrides(argv: list[str], is_known: Callable[[str], bool]) -> list[str]:
    """Rewrite foreign `key=value` arguments into ours; other arguments pass through untouched.

    Keys that set several of ours (epsilon -> eps_low and eps_high) go first, so a more specific key
    given on the same command line (epsilon_high) wins whatever the order.
    """
    broad, out = [], []
    cispo = _cispo_cap([tuple(item.split("=", 1)) for item in argv if "=" in item])
    for item in argv:
        if "=" not in item:
            out.append(item)
            continue
        key, raw = item.split("=", 1)
        if is_known(key):
            mapped = translate_our_value(key, raw)
            out.append(item if mapped == raw else f"{key}={_dump(mapped)}")
            continue
        mapping = translate_pair(key, yaml.safe_load(raw) if raw else raw, cispo)
        if mapping is None:
            out.append(item)  # unknown: load.py reports it (with a near-spelling suggestion)
            continue
        pairs = [f"{k}={raw if (v is not None and _same(v, raw)) else _dump(v)}" for k, v in mapping.items()]
        (broad if len(mapping) > 1 else out).extend(pairs)
    return broad + out


def _same(value: Any, raw: str) -> bool:
    try:
        return yaml.safe_load(raw) == value
    except yaml.YAMLError:
        return False


def translate_tree(tree: dict, is_known: Callable[[str], bool], free_form: tuple[str, ...]) -> dict:
    """A recipe's nested dict with foreign keys (at any depth, dotted or nested) rewritten into ours."""
    flat: dict[str, Any] = {}
    broad: dict[str, Any] = {}
    top = [(k, v) for k, v in tree.items() if not isinstance(v, dict)]
    cispo = _cispo_cap(top + [("loss.surrogate", (tree.get("loss") or {}).get("surrogate"))])

    def walk(node: Any, prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and not is_known(key) and key not in free_form and lookup(key) is None:
                walk(v, key + ".")
            elif is_known(key):
                flat[key] = translate_our_value(key, v)
            else:
                mapping = translate_pair(key, v, cispo)
                if mapping is None:
                    flat[key] = v  # left for load.py's unknown-key error
                else:
                    (broad if len(mapping) > 1 else flat).update(mapping)

    walk(tree, "")
    merged = {**broad, **flat}
    nested: dict = {}
    for key, value in merged.items():
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return nested


def suggest_key(key: str, keys: list[str]) -> str | None:
    """A key that is a near-identical spelling of `key` (a typo), or None.

    Edit distance at most 2 (and under a third of the length), on the whole key or on the leaf
    name: typos are caught, while different words that share letters (num_iterations /
    num_generations, loss_type / loss.tis_cap) are not offered as if they meant the same.
    """
    leaf = key.rsplit(".", 1)[-1]
    best: tuple[int, str] | None = None
    for candidate in keys:
        for a, b in ((key, candidate), (leaf, candidate.rsplit(".", 1)[-1])):
            d = _distance(a, b)
            if d <= 2 and d * 3 < max(len(a), 1) and (best is None or d < best[0]):
                best = (d, candidate)
    return best[1] if best else None


def _distance(a: str, b: str) -> int:
    """Damerau-Levenshtein (optimal string alignment) distance: a swap of two letters costs 1."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def markdown_table() -> str:
    """The README table: TRL's and verl's names beside ours, with the defaults that differ."""
    defaults = Config()
    rows = ["| TRL 1.16 | verl | here | note |", "|---|---|---|---|"]
    groups: dict[tuple[str, ...], dict[str, list[str]]] = {}
    for name, alias in TABLE.items():
        # Keys with no equivalent share a row per explanation.
        entry = groups.setdefault(alias.targets or ("—", alias.note), {"TRL": [], "verl": [], "notes": [], "differs": []})
        entry[alias.origin].append(f"`{name}`" + (f" (default {alias.foreign_default})" if alias.foreign_default else ""))
        if alias.note and alias.note not in entry["notes"]:
            entry["notes"].append(alias.note)
        if alias.foreign_default:
            entry["differs"].append(name)
    for targets, entry in groups.items():
        if targets[0] == "—":
            ours = "—"
        else:
            ours = " + ".join(f"`{t}`" for t in targets)
            if entry["differs"]:
                ours += f" (default {_dump(_get(defaults, targets[0]))})"
        rows.append(f"| {', '.join(entry['TRL'])} | {', '.join(entry['verl'])} | {ours} | {'; '.join(entry['notes'])} |")
    return "\n".join(rows)
