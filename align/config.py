"""The typed run configuration: recipe YAML + `key=value` overrides -> one `Config` object.

Every hyper-parameter lives in one of the dataclasses below, with its default visible. A recipe
(`recipes/NAME.yaml` or a path) overrides some of them; command-line `key=value` pairs override
the recipe. Unknown keys, wrong types and impossible combinations are one-line `ConfigError`s that
name the key (and the closest valid key for a typo). omegaconf does the merging and type checks.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


class ConfigError(ValueError):
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
    engine: str = "auto"  # vllm | hf | auto (the faster one for this model on this machine)
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
    # KL to a frozen reference model (skipped entirely when beta = 0)
    beta: float = 0.0
    kl_kind: str = "k3"  # k1 | k2 | k3 | k3+
    kl_clamp: float | None = 10.0  # clamp the per-token KL estimate to [-c, c] (null = off)
    kl_in_reward: bool = False  # -beta * k1 per token folded into the reward instead of the loss
    # Engine-vs-trainer logprob mismatch: truncated importance sampling weight cap (None = off)
    tis_cap: float | None = 2.0
    # DAPO-style options
    mask_truncated: bool = False  # completions cut at max_tokens carry no loss
    overlong_buffer: int = 0  # soft overlong penalty over the last N tokens before max_tokens
    overlong_penalty: float = 1.0  # the penalty at max_tokens (linear over the buffer)
    dynamic_sampling: bool = False  # drop groups whose rewards are all equal and refill
    dynamic_sampling_max_rounds: int = 3  # generation rounds before uninformative groups fill the batch


@dataclass
class GCPOConfig:
    eps: float = 0.05  # eta: the accuracy difference that flips the contrastive mask
    w_aux: float = 0.5  # weight of the masked aux-construction term
    w_fmt: float = 0.5  # weight of the format reward
    w_len: float = 0.5  # weight of the length term min(L, l_max) / l_max
    l_max: int = 900  # length at which the length term saturates
    use_length: bool = True  # include the length term
    gate_aux_on_correct: bool = False  # aux term only for correct completions
    gate_len_on_correct: bool = False  # length term only for correct completions
    accuracy_reward: str = "geometry_accuracy"  # reward function giving accuracy (also what eval reports)
    format_reward: str = "think_answer_format"  # reward function giving the format score
    aux_reward: str = "aux_construction"  # reward function: > 0 when the completion constructs


@dataclass
class GRAOConfig:
    """GRAO (ALGORITHMS.md section 3): J = A_o*Jexp(o) + beta*A_y*Jimit(y) + lam*A_o*(Jexp(o) - Jimit(y))."""

    beta: float = 0.5  # weight of the imitation term (the reference answer's likelihood); paper 0.5
    lam: float = 0.6  # weight of the regulariser on the gap Jexp(o) - Jimit(y); paper 0.6
    pool_ref: bool = True  # advantage statistics over the G samples AND y (G+1 rewards); False = samples only
    ddof: int = 0  # std of the advantage normalisation: 0 = population std (the paper's Eq. 4)
    adv_eps: float = 1e-6  # added to the std of the advantage normalisation
    reference_column: str = "solution"  # dataset column holding the reference answer y (text)
    # Judge: a reward-function spec (a registered name, file.py:fn, module:fn, or an LLM judge
    # judge:PATH / judge:self, pairwise template by default) called like a reward function with the
    # reference answers as `reference=`; returns +1 (o better than y), 0 (tie), -1, or None (unjudged).
    judge: str = "geometry_judge"


@dataclass
class CoPGConfig:
    """CoPG (ALGORITHMS.md section 4): pairwise squared loss on Rb = R - beta * log(pi / pi_ref)."""

    beta: float = 0.1  # KL strength in the regularised sequence reward; must be > 0 (0 = no gradient)


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
class SALTConfig:
    """SALT (ALGORITHMS.md section 5): each action step gets the mean advantage of the trajectories
    of its group that pass through the same graph edge (state, history, action)."""

    base: str = "grpo"  # trajectory advantages: grpo (mean/std-normalised) | rloo (leave-one-out, unscaled)
    history: int | None = 0  # node = state + last k (state, action) pairs; 0 = a graph, null = prefix tree
    dedup: bool = True  # a trajectory counts once per edge however often it revisits it


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
    max_bad_updates: int = 3  # consecutive NaN/inf updates skipped before the run stops (trainers/numerics.py)
    micro_batch_tokens: int = 8192  # token budget of one forward/backward (padded tokens)
    seed: int = 0  # model init, data order and sampling seeds


@dataclass
class LogConfig:
    run_dir: str | None = None  # default: runs/<recipe>/<timestamp>
    every: int = 1  # log metrics every N steps
    sample_every: int = 10  # write samples (prompts, all G completions) every N steps (0 = never)
    num_samples: int = 4  # prompts per sample log
    tensorboard: bool = True  # write TensorBoard events to run_dir/tb
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
    algo: str = "grpo"  # a registered algorithm: grpo | gcpo | grao | copg | salt (align/trainers/registry.py)
    resume: str | None = None  # latest | path to a checkpoint folder
    resume_force: bool = False  # resume even though the saved config differs (the differences are printed)
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    gcpo: GCPOConfig = field(default_factory=GCPOConfig)
    grao: GRAOConfig = field(default_factory=GRAOConfig)
    copg: CoPGConfig = field(default_factory=CoPGConfig)
    salt: SALTConfig = field(default_factory=SALTConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


CHOICES = {
    "rollout.source": ("generate", "offline", "episodes"),
    "salt.base": ("grpo", "rloo"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
    "rollout.engine": ("auto", "vllm", "hf"),
    "loss.baseline": ("mean", "loo", "none"),
    "loss.scale": ("std", "batch", "none"),
    "loss.small_group": ("zero", "raw"),
    "loss.ratio_level": ("token", "sequence"),
    "loss.agg": ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_sum_const"),
    "loss.kl_kind": ("k1", "k2", "k3", "k3+"),
    "train.lr_schedule": ("constant", "linear", "cosine"),
}


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


def _closest(key: str) -> str:
    from align.aliases import TABLE, suggest_key  # near-identical spellings only: never a different concept

    match = suggest_key(key, all_keys() + list(TABLE))
    return f"; did you mean '{match}'?" if match else "; `python -m align --help` lists every key"


def find_recipe(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    candidate = RECIPES_DIR / f"{name}.yaml"
    if candidate.exists():
        return candidate
    known = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    hint = difflib.get_close_matches(name, known, n=1)
    raise ConfigError(
        f"recipe '{name}' not found" + (f"; did you mean '{hint[0]}'?" if hint else "")
        + f" (built-in recipes: {', '.join(known)}; or pass a path to a .yaml file)"
    )


FREE_FORM = ("data.options", "reward.options")  # dict-valued keys whose sub-keys belong to the task, not the schema


def is_known_key(key: str) -> bool:
    return key in all_keys() or key.startswith(tuple(k + "." for k in FREE_FORM))


def _to_override_pairs(overrides: list[str]) -> list[str]:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"argument '{item}' is not key=value (e.g. train.steps=10)")
        key = item.split("=", 1)[0]
        if not is_known_key(key):
            raise ConfigError(f"unknown config key '{key}'{_closest(key)}")
    return overrides


def load_config(argv: list[str]) -> Config:
    """Build the run config from `recipe=NAME` and `key=value` arguments (recipe optional)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from align.aliases import translate_overrides, translate_tree  # TRL/verl names, before any suggestion

    recipe = next((a.split("=", 1)[1] for a in argv if a.startswith("recipe=")), None)
    overrides = _to_override_pairs(translate_overrides([a for a in argv if not a.startswith("recipe=")], is_known_key))
    schema = OmegaConf.structured(Config)
    layers = []
    if recipe:
        path = find_recipe(recipe)
        recipe_cfg = OmegaConf.create(translate_tree(OmegaConf.to_container(OmegaConf.load(path)), is_known_key, FREE_FORM))
        flat = [k for k in _flatten(OmegaConf.to_container(recipe_cfg)) if not is_known_key(k)]
        if flat:
            raise ConfigError(f"unknown config key '{flat[0]}' in {path}{_closest(flat[0])}")
        layers.append(recipe_cfg)
        layers.append(OmegaConf.create({"recipe": Path(recipe).stem}))
    try:
        layers.append(OmegaConf.from_dotlist(overrides))
        merged = OmegaConf.merge(schema, *layers)
        cfg: Config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        reason = str(err).splitlines()[0]
        raise ConfigError(f"bad value for '{key}': {reason}") from None
    validate(cfg)
    return cfg


def _flatten(tree: Any, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return [prefix.rstrip(".")]
    out = []
    for k, v in tree.items():
        out += _flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + str(k)]
    return out


def _get(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def validate(cfg: Config, world_size: int = 1) -> None:
    """Impossible combinations, each a one-line error naming the key(s) and the fix."""
    from align.trainers.registry import UnknownAlgorithmError, algorithm_entry

    try:
        entry = algorithm_entry(cfg.algo)
    except UnknownAlgorithmError as err:
        raise ConfigError(str(err)) from None
    for key, options in CHOICES.items():
        if _get(cfg, key) not in options:
            raise ConfigError(f"'{key}' is '{_get(cfg, key)}'; choose one of {', '.join(options)}")
    g, batch = cfg.rollout.num_generations, cfg.train.batch_size
    if g < 1:
        raise ConfigError(f"rollout.num_generations must be >= 1, got {g}")
    if g == 1 and (cfg.algo == "gcpo" or cfg.loss.baseline != "none"):
        raise ConfigError(
            f"rollout.num_generations=1 with algo={cfg.algo} loss.baseline={cfg.loss.baseline}: a group of one is its own "
            "baseline, so every advantage is 0 and nothing is learned; use rollout.num_generations>=2 (e.g. 8)"
        )
    if batch < g or batch % g:
        raise ConfigError(
            f"train.batch_size={batch} is not a multiple of rollout.num_generations={g}; "
            f"use e.g. train.batch_size={max(1, round(batch / g)) * g}"
        )
    prompts = batch // g
    if prompts % world_size:
        raise ConfigError(
            f"train.batch_size={batch} gives {prompts} prompts per step, not divisible by {world_size} processes; "
            f"use train.batch_size={math.lcm(prompts, world_size) * g}"
        )
    _check_reward_names(cfg.reward.functions)  # a misspelt name is the real problem, not the weights count
    if cfg.reward.weights is not None and len(cfg.reward.weights) != len(cfg.reward.functions):
        raise ConfigError(
            f"reward.weights has {len(cfg.reward.weights)} entries but reward.functions has "
            f"{len(cfg.reward.functions)}; give one weight per function"
        )
    if cfg.loss.agg == "seq_sum_const" and cfg.rollout.max_tokens < 1:
        raise ConfigError("loss.agg=seq_sum_const needs rollout.max_tokens >= 1 (it is the constant length)")
    if cfg.loss.kl_in_reward and cfg.loss.beta == 0:
        raise ConfigError("loss.kl_in_reward=true has no effect with loss.beta=0; set loss.beta (e.g. 0.04)")
    if cfg.rollout.temperature <= 0:
        raise ConfigError(
            f"rollout.temperature={cfg.rollout.temperature}: training samples need a temperature > 0 "
            "(greedy decoding has no exploration and no sampling distribution to correct for); use e.g. 1.0"
        )
    if cfg.train.updates_per_batch < 1 or cfg.train.steps < 1:
        raise ConfigError("train.steps and train.updates_per_batch must be >= 1")
    _validate_rollout_device(cfg.rollout)
    if cfg.train.max_bad_updates < 1:
        raise ConfigError(f"train.max_bad_updates must be >= 1 (consecutive NaN/inf updates before stopping), got {cfg.train.max_bad_updates}")
    _validate_algorithm(cfg, entry)
    if cfg.resume not in (None, "latest") and not Path(cfg.resume).exists():
        raise ConfigError(f"resume='{cfg.resume}' does not exist; pass resume=latest or a checkpoint folder")


def _validate_rollout_device(r: RolloutConfig) -> None:
    if r.tensor_parallel_size != 1:
        # Each rank generates its own prompts; a TP group would need them gathered per group first.
        raise ConfigError(f"rollout.tensor_parallel_size={r.tensor_parallel_size} is not supported yet (one colocated "
                          "engine per GPU); set rollout.tensor_parallel_size=1 and use ZeRO-3 for models that need more GPUs")
    if r.sleep_mode:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("rollout.sleep_mode=true frees GPU memory and needs a CUDA GPU (vLLM has no sleep mode "
                              "on CPU); set rollout.sleep_mode=false")


def _check_reward_names(specs) -> None:
    """Registry names must exist (RewardSpecError names the closest); file/module specs are checked when loaded."""
    from rewards.registry import get_reward_function

    for spec in specs:
        if isinstance(spec, str) and ":" not in spec:
            get_reward_function(spec)


def _validate_algorithm(cfg: Config, entry) -> None:
    """Combinations that one algorithm or rollout source cannot run."""
    if cfg.rollout.source == "offline":
        if not entry.offline:
            from align.trainers.registry import ALGORITHMS

            able = ", ".join(name for name, e in sorted(ALGORITHMS.items()) if e.offline)
            raise ConfigError(f"rollout.source=offline needs an algorithm that trains from fixed rows ({able}), not algo={cfg.algo}")
        if cfg.log.eval_every and not cfg.data.eval_source:
            raise ConfigError("rollout.source=offline with log.eval_every needs data.eval_source (held-out prompts, e.g. geometry)")
    if cfg.rollout.source == "episodes" and cfg.algo not in ("grpo", "salt"):
        raise ConfigError(f"rollout.source=episodes (agents) trains with algo=salt or algo=grpo, not algo={cfg.algo}")
    if cfg.algo == "salt" and cfg.rollout.source != "episodes":
        raise ConfigError("algo=salt needs multi-turn episodes: set rollout.source=episodes and env.name (e.g. recipe=salt_grid)")
    if cfg.salt.history is not None and (not isinstance(cfg.salt.history, int) or cfg.salt.history < 0):
        raise ConfigError(f"salt.history={cfg.salt.history!r}: must be an int >= 0, or null for the whole prefix")
    if cfg.env.max_turns is not None and cfg.env.max_turns < 1:
        raise ConfigError(f"env.max_turns={cfg.env.max_turns}: must be >= 1 (or null for the environment's own)")
    if cfg.algo == "grao" and cfg.train.updates_per_batch != 1:
        raise ConfigError("algo=grao has no importance ratio (one update per rollout batch); set train.updates_per_batch=1")
    if cfg.algo == "copg" and cfg.copg.beta <= 0:
        raise ConfigError(f"copg.beta={cfg.copg.beta}: must be > 0 (with 0 the CoPG loss has no gradient)")


def config_to_yaml(cfg: Config) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
