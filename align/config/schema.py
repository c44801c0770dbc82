"""The typed run configuration: one `Config` object, every hyper-parameter with its default visible.

The sections every run has live here. An algorithm's own section (`gcpo`, `grao`, ...) is declared
by the algorithm (its config dataclass, align/algorithms) and joins the schema of a run through
`config_class`, so this layer knows no algorithm. Loading and validation: align/config/load.py.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields, is_dataclass, make_dataclass
from pathlib import Path
from typing import Any

from align.errors import UserError

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


class ConfigError(UserError, ValueError):
    """A bad recipe or override; the message is one line naming the key and the fix."""


@dataclass
class ModelConfig:
    name: str = "tiny"  # built-in name (tiny, tiny-geometry, ...), local folder, or hub id
    dtype: str = "auto"  # auto = bfloat16 on GPU, float32 on CPU
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    cache_dir: str = "~/.cache/align"  # where built-in models are built and cached


@dataclass
class LoraConfig:
    enabled: bool = False  # train LoRA adapters (peft) instead of all weights
    r: int = 16  # adapter rank
    alpha: int = 32  # scale alpha / r
    dropout: float = 0.0  # dropout on the adapter input
    target_modules: list[str] = field(default_factory=lambda: ["all-linear"])  # module names, or all-linear


@dataclass
class DataConfig:
    source: str = "geometry"  # built-in task, local file/folder, or hub dataset name
    split: str = "train"  # the training split
    eval_split: str = "test"  # the evaluation split (missing: a held-out slice of train, with a warning)
    prompt_column: str = "prompt"  # column (or dotted.path) holding the prompt; copied to "prompt"
    answer_column: str = "answer"  # column (or dotted.path, e.g. reward_model.ground_truth) copied to "answer"
    system_prompt: str | None = None  # prepended as a system message (plain prompts become chat)
    # Options of a built-in task (e.g. {size: 2000, seed: 1}); each task documents its own.
    options: dict[str, Any] = field(default_factory=dict)
    # Held-out evaluation data (eval_split of it); None = data.source. Needed with rollout.source=offline,
    # whose rows file has no held-out split (e.g. eval_source=geometry).
    eval_source: str | None = None


@dataclass
class RolloutConfig:
    # Where a step's completions come from: generate = sampled from the current policy by the engine;
    # offline = fixed (prompt, completion, reward) rows read from data.source, no generation and no
    # weight sync (docs/OFFLINE.md has the format; CoPG only); episodes = multi-turn agent episodes in
    # the environment of the `env` section (SALT or GRPO), rewards from the environment.
    source: str = "generate"
    engine: str = "auto"  # vllm | hf | auto (the faster one for this model on this machine) | server
    servers: list[str] = field(default_factory=list)  # rollout.engine=server: the vLLM servers' URLs (python -m align serve)
    server_timeout_s: float = 600.0  # rollout.engine=server: longest wait for one server call (generate, sync)
    # Asynchronous rollouts (rollout.engine=server): k >= 1 generates step t+k's batch while step t trains,
    # from weights k versions old; 0 = the synchronous on-policy loop. Schedule: docs/ALGORITHMS.md section 9.
    max_staleness: int = 0
    num_generations: int = 8  # G: completions per prompt
    max_tokens: int = 64  # completion length limit (TRL max_completion_length)
    temperature: float = 1.0  # sampling temperature
    top_p: float = 1.0  # nucleus sampling (1.0 = off)
    top_k: int = 0  # top-k sampling (0 = off)
    stop: list[str] = field(default_factory=list)  # strings that end a completion
    kv_cache_mb: int = 256  # vLLM KV cache on CPU (vLLM would otherwise reserve most of RAM)
    gpu_memory_utilization: float = 0.3  # vLLM's share of GPU memory when colocated
    sleep_mode: bool = False  # GPU only: free the engine's memory during the training phase
    tensor_parallel_size: int = 1  # GPUs one vLLM engine is split over; only 1 for now (config error otherwise)
    # Seed each prompt's samples from its position in the global batch instead of the rank: the same
    # completions on any number of processes (for exact data-parallel checks). Generates prompt by
    # prompt, so it costs batching; off for training runs.
    seed_per_prompt: bool = False
    verify_sync: bool = True  # score a fixed probe in engine and trainer after every sync
    probe_tolerance: float | None = None  # None = per-dtype default


@dataclass
class RewardConfig:
    functions: list[str] = field(default_factory=lambda: ["math_accuracy"])  # names or path.py:function
    weights: list[float] | None = None  # one per function (null = all 1.0); the reward is the weighted sum
    # keyword arguments bound to a function, keyed by its spec, e.g. {length_reward: {l_max: 64}}
    options: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 60.0  # limit per reward-function call


@dataclass
class LossConfig:
    # Advantages (ALGORITHMS.md section 1)
    baseline: str = "mean"  # mean | loo | none
    scale: str = "std"  # std | batch | none (none = Dr.GRPO)
    ddof: int = 1  # std of the group with ddof (1 = unbiased, as TRL)
    adv_eps: float = 1e-6  # added to the std before dividing
    small_group: str = "zero"  # zero | raw (verl's A = r for G = 1)
    # Surrogate
    eps_low: float = 0.2  # clip the ratio below at 1 - eps_low
    eps_high: float = 0.2  # DAPO clip-higher: 0.28
    dual_clip: float | None = None  # e.g. 3.0
    delta: float | None = None  # cap on the unclipped ratio (two-sided clip)
    ratio_level: str = "token"  # token | sequence (GSPO)
    agg: str = "seq_mean_token_mean"  # token_mean | seq_mean_token_mean | seq_mean_token_sum | seq_sum_const
    surrogate: str = "clip"  # the per-token policy-gradient surrogate: clip | cispo | sapo | vespo (align/algos/surrogates.py)
    cispo_cap: float = 5.0  # cispo: absolute cap on the constant importance weight (ScaleRL's eps_max)
    sapo_tau_pos: float = 1.0  # sapo: gate temperature where A > 0 (larger = the gate closes sooner)
    sapo_tau_neg: float = 1.05  # sapo: gate temperature where A <= 0
    vespo_k_pos: float = 2.0  # vespo: power k of phi(w) = e^l w^k e^(-l w) for A >= 0 (damps w < 1)
    vespo_lambda_pos: float = 3.0  # vespo: decay l for A >= 0 (damps w > 1)
    vespo_k_neg: float = 3.0  # vespo: k for A < 0
    vespo_lambda_neg: float = 2.0  # vespo: l for A < 0
    # Which tokens carry the policy gradient, and an entropy bonus
    top_entropy_quantile: float = 1.0  # policy gradient on the top rho of tokens by entropy only (0.2: Beyond the 80/20 Rule)
    entropy_coef: float = 0.0  # subtract coef * mean token entropy from the loss (an exploration bonus)
    # KL to a frozen reference model (skipped entirely when beta = 0)
    beta: float = 0.0
    kl_kind: str = "k3"  # k1 | k2 | k3 | k3+
    kl_clamp: float | None = 10.0  # clamp the per-token KL estimate to [-c, c] (null = off)
    kl_in_reward: bool = False  # -beta * k1 per token folded into the reward instead of the loss
    # TR-DPO's moving reference: every ref_sync_every steps, ref = alpha * policy + (1 - alpha) * ref
    ref_sync: bool = False  # move the reference toward the policy (needs loss.beta > 0, or CoPG)
    ref_sync_every: int = 512  # tau: optimizer steps between two mixes
    ref_sync_alpha: float = 0.6  # alpha: the policy's share of the new reference
    # Engine-vs-trainer logprob mismatch: truncated importance sampling weight cap (None = off)
    tis_cap: float | None = 2.0
    # Samples from an older policy (rollout.max_staleness >= 1): decoupled = ratio to the current policy
    # times the truncated weight pi_current / pi_behaviour (AReaL); bypass = ratio to the behaviour policy.
    off_policy_correction: str = "decoupled"
    # DAPO-style options
    mask_truncated: bool = False  # completions cut at max_tokens carry no loss
    overlong_buffer: int = 0  # soft overlong penalty over the last N tokens before max_tokens
    overlong_penalty: float = 1.0  # the penalty at max_tokens (linear over the buffer)
    dynamic_sampling: bool = False  # drop groups whose rewards are all equal and refill
    dynamic_sampling_max_rounds: int = 3  # generation rounds before uninformative groups fill the batch
    # The first round draws ceil(oversample * prompts per step) prompts (verl DAPO's gen_batch_size over
    # train_batch_size), so that fewer refill rounds follow; under rollout.max_staleness >= 1 the first
    # round is generated ahead, beside training, and refills are not.
    dynamic_sampling_oversample: float = 1.0


@dataclass
class EnvConfig:
    """Multi-turn agents (rollout.source=episodes): the environment the policy acts in (align/envs)."""

    name: str = "grid"  # a registered environment (grid) or path/to/file.py:Class or package.module:Class
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the class (and its tasks())
    max_turns: int | None = None  # actions per episode; None = the class's max_turns
    train_split: str = "train"  # the env's task list to train on (Class.tasks(split, seed))
    eval_split: str = "test"  # held-out tasks for log.eval_every (success rate)
    eval_tasks: int = 64  # how many held-out tasks an evaluation runs (one episode each, sampled)
    step_timeout_s: float = 30.0  # a reset()/step() that takes longer is an error, not a hang
    system_prompt: str | None = None  # a system message before the first observation of every episode


@dataclass
class TrainConfig:
    steps: int = 100  # optimizer steps (TRL max_steps)
    max_minutes: float | None = None  # stop (and save) after this much wall-clock training time
    batch_size: int = 64  # completions per optimizer step, all ranks together (= prompts x G)
    updates_per_batch: int = 1  # mu: optimizer passes over one rollout batch
    lr: float = 1e-6  # AdamW learning rate (TRL learning_rate)
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 0  # linear warmup from 0 over this many optimizer updates
    lr_schedule: str = "constant"  # constant | linear | cosine (after warmup)
    max_grad_norm: float = 1.0  # clip the gradient norm
    max_bad_updates: int = 3  # consecutive NaN/inf updates skipped before the run stops (runtime/numerics.py)
    # steps in a row with every advantage 0 (no learning signal) before the run stops, naming the likely
    # cause (runtime/learning_signal.py); 0 = train on regardless
    max_flat_steps: int = 20
    micro_batch_tokens: int = 8192  # token budget of one forward/backward (padded tokens)
    shared_prompt: bool = True  # forward each prompt once for its G completions (block mask; exact); false = a copy per completion
    # completion tokens per LM-head chunk: the [tokens, vocab] logits (and their gradient) never exist at
    # once (models/lm_head.py says which architectures qualify; others, and ZeRO-3, use the whole head); 0 = whole
    lm_head_chunk: int = 1024
    seed: int = 0  # model init, data order and sampling seeds
    cpu_threads: int | None = None  # torch threads per process on CPU; None = this process's cores / local processes


# log.report_to: the experiment trackers a run can write to (align/telemetry/trackers.py).
REPORT_TO = ("tensorboard", "wandb", "trackio", "mlflow")


@dataclass
class LogConfig:
    run_dir: str | None = None  # default: runs/<recipe>/<timestamp>; also the trackers' run name
    every: int = 1  # log metrics every N steps
    sample_every: int = 10  # write samples (prompts, all G completions) every N steps (0 = never)
    num_samples: int = 4  # prompts per sample log
    # experiment trackers, any of tensorboard (run_dir/tb) wandb trackio mlflow; [] or none: none.
    # Offline, under run_dir, unless WANDB_MODE / TRACKIO_DIR / MLFLOW_TRACKING_URI say otherwise
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    project: str = "align"  # the trackers' project (W&B / trackio project, MLflow experiment)
    save_every: int = 50  # 0 = only at the end
    keep_last: int = 2  # checkpoints kept (older ones are deleted)
    eval_every: int = 0  # 0 = no periodic evaluation
    console: bool = True  # progress bar, sample tables (false: plain lines only)


@dataclass
class EvalConfig:
    accuracy: str | None = None  # reward function scored as accuracy (null: the algorithm's accuracy reward)
    k: int = 1  # samples per prompt: mean@k and pass@k (`align eval`: 4 unless given)
    holdout: int = 64  # train rows held out for evaluation when data.eval_split is missing


@dataclass
class Config:
    recipe: str = ""  # recipes/NAME.yaml or a path; its values sit under the command line's
    # a registered algorithm (grpo | gcpo | grao | copg | salt, align/algorithms/registry.py), or a class of
    # your own: path/to/file.py:Class or package.module:Class (CONTRIBUTING.md, "An algorithm outside the package")
    algo: str = "grpo"
    resume: str | None = None  # latest | path to a checkpoint folder
    resume_force: bool = False  # resume even though the saved config differs (the differences are printed)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


CHOICES = {
    "rollout.source": ("generate", "offline", "episodes"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "rollout.engine": ("auto", "vllm", "hf", "server"),
    "loss.baseline": ("mean", "loo", "none"),
    "loss.scale": ("std", "batch", "none"),
    "loss.small_group": ("zero", "raw"),
    "loss.ratio_level": ("token", "sequence"),
    "loss.agg": ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_sum_const"),
    "loss.kl_kind": ("k1", "k2", "k3", "k3+"),
    "loss.off_policy_correction": ("decoupled", "bypass"),
    "train.lr_schedule": ("constant", "linear", "cosine"),
}

# The range of every numeric key, checked before anything is written (a bad value would otherwise
# surface as a library's traceback mid-run, or, like a negative lora.alpha, train silently).
# (low, low_inclusive, high, high_inclusive); None = unbounded. A null value (an optional key) is not checked.
ANY_POSITIVE = (0, False, None, False)
NON_NEGATIVE = (0, True, None, False)
AT_LEAST_ONE = (1, True, None, False)
UNIT_INTERVAL = (0, False, 1, True)  # (0, 1]
RANGES: dict[str, tuple[float | None, bool, float | None, bool]] = {
    "lora.r": AT_LEAST_ONE, "lora.alpha": ANY_POSITIVE, "lora.dropout": (0, True, 1, False),
    "rollout.server_timeout_s": ANY_POSITIVE, "rollout.num_generations": AT_LEAST_ONE, "rollout.max_tokens": AT_LEAST_ONE,
    "rollout.temperature": ANY_POSITIVE, "rollout.top_p": UNIT_INTERVAL, "rollout.top_k": NON_NEGATIVE,
    "rollout.kv_cache_mb": AT_LEAST_ONE, "rollout.gpu_memory_utilization": UNIT_INTERVAL,
    "rollout.probe_tolerance": ANY_POSITIVE, "reward.timeout_s": ANY_POSITIVE,
    "loss.ddof": NON_NEGATIVE, "loss.adv_eps": NON_NEGATIVE, "loss.eps_low": (0, True, 1, False), "loss.eps_high": NON_NEGATIVE,
    "loss.dual_clip": (1, False, None, False), "loss.delta": (1, False, None, False), "loss.cispo_cap": ANY_POSITIVE,
    "loss.sapo_tau_pos": ANY_POSITIVE, "loss.sapo_tau_neg": ANY_POSITIVE,
    "loss.vespo_k_pos": NON_NEGATIVE, "loss.vespo_lambda_pos": NON_NEGATIVE,
    "loss.vespo_k_neg": NON_NEGATIVE, "loss.vespo_lambda_neg": NON_NEGATIVE,
    "loss.top_entropy_quantile": UNIT_INTERVAL, "loss.beta": NON_NEGATIVE, "loss.kl_clamp": ANY_POSITIVE,
    "loss.ref_sync_every": AT_LEAST_ONE, "loss.ref_sync_alpha": UNIT_INTERVAL, "loss.tis_cap": ANY_POSITIVE,
    "loss.overlong_buffer": NON_NEGATIVE, "loss.overlong_penalty": NON_NEGATIVE,
    "loss.dynamic_sampling_max_rounds": AT_LEAST_ONE, "loss.dynamic_sampling_oversample": (1, True, None, False),
    "env.max_turns": AT_LEAST_ONE, "env.eval_tasks": AT_LEAST_ONE, "env.step_timeout_s": ANY_POSITIVE,
    "train.steps": AT_LEAST_ONE, "train.max_minutes": ANY_POSITIVE, "train.batch_size": AT_LEAST_ONE,
    "train.updates_per_batch": AT_LEAST_ONE, "train.lr": ANY_POSITIVE, "train.weight_decay": NON_NEGATIVE,
    "train.warmup_steps": NON_NEGATIVE, "train.max_grad_norm": ANY_POSITIVE, "train.max_bad_updates": AT_LEAST_ONE,
    "train.max_flat_steps": NON_NEGATIVE,
    "train.micro_batch_tokens": AT_LEAST_ONE, "train.lm_head_chunk": NON_NEGATIVE, "train.seed": NON_NEGATIVE, "train.cpu_threads": AT_LEAST_ONE,
    "log.every": AT_LEAST_ONE, "log.sample_every": NON_NEGATIVE, "log.num_samples": AT_LEAST_ONE,
    "log.save_every": NON_NEGATIVE, "log.keep_last": NON_NEGATIVE, "log.eval_every": NON_NEGATIVE,
    "eval.k": AT_LEAST_ONE, "eval.holdout": NON_NEGATIVE,
}


def range_text(bounds: tuple[float | None, bool, float | None, bool]) -> str:
    """'>= 1', '> 0', 'in (0, 1]', ... for an error message."""
    low, low_in, high, high_in = bounds
    if high is None:
        return f"{'>=' if low_in else '>'} {low:g}"
    return f"in {'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"


def in_range(value: float, bounds: tuple[float | None, bool, float | None, bool]) -> bool:
    low, low_in, high, high_in = bounds
    above = low is None or (value >= low if low_in else value > low)
    below = high is None or (value <= high if high_in else value < high)
    return above and below and math.isfinite(value)


def nullable(key: str) -> bool:
    """Whether the schema lets `key` be null (its type says `| None`)."""
    section, _, name = key.rpartition(".")
    owner = type(_get(Config(), section)) if section else Config
    return "None" in str(next(f.type for f in fields(owner) if f.name == name))


def all_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every dotted key of the schema, e.g. ['recipe', ..., 'loss.beta', ...]."""
    keys = []
    for f in fields(cls):
        default = f.default_factory() if callable(f.default_factory) else f.default
        if is_dataclass(default):
            keys += all_keys(type(default), f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _get(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


@dataclass(frozen=True)
class AlgorithmSection:
    """An algorithm's own config section: its name (the key in recipes and overrides, e.g. `gcpo`)
    and the dataclass of its options, or None for a free-form mapping (a plug-in's `algo_options`)."""

    name: str
    schema: type | None = None


@functools.cache
def config_class(section: AlgorithmSection | None) -> type:
    """The `Config` of a run of one algorithm: the common sections plus that algorithm's own, alone,
    so that the printed config, `--help` and unknown-key errors show only the keys that act."""
    if section is None:
        return Config
    if section.schema is None:
        extra = (section.name, dict[str, Any], field(default_factory=dict))
    else:
        extra = (section.name, section.schema, field(default_factory=section.schema))
    cls = make_dataclass("Config", [extra], bases=(Config,))
    cls.__module__ = __name__  # make_dataclass would name its caller's caller
    return cls

