"""Recipe YAML + `key=value` overrides -> one validated `Config`.

A recipe (`recipes/NAME.yaml` or a path) overrides some defaults; command-line `key=value` pairs
override the recipe. Unknown keys, wrong types and impossible combinations are one-line
`ConfigError`s that name the key (and the closest valid key for a typo). omegaconf does the merging
and type checks; TRL's and verl's names are translated first (aliases.py).

This layer knows no algorithm: the caller passes an `AlgorithmCatalog` that says which section an
`algo=` value brings (align.algorithms.load_config passes the registry). The checks here are the
ones every algorithm shares; each algorithm checks its own section in its `validate(cfg)`.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from pathlib import Path
from typing import Any, Protocol

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from align.config.aliases import TABLE, suggest_key, translate_overrides, translate_tree
from align.config.schema import (
    CHOICES,
    RANGES,
    RECIPES_DIR,
    REPORT_TO,
    AlgorithmSection,
    Config,
    ConfigError,
    RolloutConfig,
    _get,
    all_keys,
    config_class,
    in_range,
    nullable,
    range_text,
)

FREE_FORM = ("data.options", "reward.options", "env.options")  # dict-valued keys whose sub-keys belong to the task or env, not the schema
# Keys that were renamed: the error says what to write now.
RENAMED = {"log.tensorboard": "log.report_to ([tensorboard], the default, writes run_dir/tb; [] writes nothing)"}


class AlgorithmCatalog(Protocol):
    """What the loader needs to know of the algorithms, supplied by the layer that has them."""

    def section(self, algo: str) -> AlgorithmSection | None:
        """The config section `algo` brings (None: none); an unknown name raises ConfigError."""

    def section_owner(self, name: str) -> str | None:
        """The registered algorithm whose section is called `name`, if any (for a clear error)."""


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


class _Keys:
    """The keys a run of one algorithm accepts, and the one-line error for any other."""

    def __init__(self, schema: type, section: AlgorithmSection | None, algo: str, catalog: AlgorithmCatalog):
        self.keys = set(all_keys(schema))
        self.free = FREE_FORM + ((section.name,) if section is not None and section.schema is None else ())
        self.algo, self.catalog = algo, catalog

    def known(self, key: str) -> bool:
        return key in self.keys or key.startswith(tuple(k + "." for k in self.free))

    def unknown(self, key: str, where: str = "") -> ConfigError:
        if key in RENAMED:
            return ConfigError(f"'{key}'{where} is now {RENAMED[key]}")
        owner = self.catalog.section_owner(key.split(".", 1)[0])
        if owner is not None and owner != self.algo:
            return ConfigError(f"'{key}'{where} is an option of algo={owner}, and this run is algo={self.algo}; "
                               f"remove it, or set algo={owner}")
        # near-identical spellings only: never a different concept
        match = suggest_key(key, sorted(self.keys) + list(TABLE))
        hint = f"; did you mean '{match}'?" if match else "; `python -m align --help` lists every key"
        return ConfigError(f"unknown config key '{key}'{where}{hint}")


def read_recipe(path: Path) -> dict:
    """The recipe file's keys, or a one-line error for a file that is not a YAML mapping of them."""
    import yaml  # OmegaConf's parser: its errors carry the line

    try:
        tree = OmegaConf.to_container(OmegaConf.load(path))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        tabs = " (a tab: YAML indents with spaces only)" if "\t" in path.read_text() else ""
        raise ConfigError(f"recipe {path} is not valid YAML{where}: {getattr(err, 'problem', err)}{tabs}") from None
    if tree is None or tree == {}:  # an empty file would run the defaults silently
        raise ConfigError(f"recipe {path} is empty; give its keys (e.g. train: {{steps: 10}}), or leave recipe= out")
    if not isinstance(tree, dict):
        raise ConfigError(f"recipe {path} holds a {type(tree).__name__}, not a mapping of keys "
                          "(e.g. train: {steps: 10})")
    return tree


def _algo_of(argv: list[str], recipe_tree: dict) -> str:
    """`algo=` from the command line, else from the recipe, else the schema's default."""
    given = [a.split("=", 1)[1] for a in argv if a.split("=", 1)[0] == "algo"]
    return given[-1] if given else str(recipe_tree.get("algo", Config.algo))


def requested_algo(argv: list[str]) -> str:
    """The `algo` that `recipe=NAME` and `algo=` among `argv` ask for (before any loading)."""
    recipe = next((a.split("=", 1)[1] for a in argv if a.startswith("recipe=")), None)
    return _algo_of(argv, read_recipe(find_recipe(recipe)) if recipe else {})


def load_config(argv: list[str], catalog: AlgorithmCatalog) -> Config:
    """Build the run config from `recipe=NAME` and `key=value` arguments (recipe optional).

    The config is not yet validated against the algorithm; align.algorithms.load_config does both."""
    recipe = next((a.split("=", 1)[1] for a in argv if a.startswith("recipe=")), None)
    argv = [a for a in argv if not a.startswith("recipe=")]
    for item in argv:
        if "=" not in item:
            raise ConfigError(f"argument '{item}' is not key=value (e.g. train.steps=10)")
    path = find_recipe(recipe) if recipe else None
    recipe_tree = read_recipe(path) if path else {}
    algo = _algo_of(argv, recipe_tree)
    section = catalog.section(algo)
    schema = config_class(section)
    keys = _Keys(schema, section, algo, catalog)
    overrides = translate_overrides(argv, keys.known)  # TRL/verl names, before any suggestion
    for item in overrides:
        if not keys.known(item.split("=", 1)[0]):
            raise keys.unknown(item.split("=", 1)[0])
    layers = []
    if path:
        recipe_tree = _without_other_sections(recipe_tree, path, keys)
        recipe_cfg = OmegaConf.create(translate_tree(recipe_tree, keys.known, keys.free))
        flat = [k for k in _flatten(OmegaConf.to_container(recipe_cfg)) if not keys.known(k)]
        if flat:
            raise keys.unknown(flat[0], f" in {path}")
        layers.append(recipe_cfg)
        layers.append(OmegaConf.create({"recipe": Path(recipe).stem}))
    try:
        layers.append(OmegaConf.from_dotlist(overrides))
        merged = OmegaConf.merge(OmegaConf.structured(schema), *layers)
        cfg: Config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        reason = str(err).splitlines()[0]
        raise ConfigError(f"bad value for '{key}': {reason}") from None
    return _reset_dead_key(cfg, schema)


def _reset_dead_key(cfg: Config, schema: type) -> Config:
    """For the liveness mutation check only (scripts/check_liveness.py): ALIGN_DEAD_KEY=some.key resets that key to its schema default."""
    key = os.environ.get("ALIGN_DEAD_KEY")
    section, _, name = (key or "").rpartition(".")
    if key and key in all_keys(schema):  # a key of another algorithm's section: nothing to reset in this run
        setattr(_get(cfg, section) if section else cfg, name, _get(schema(), key))
    return cfg


def _without_other_sections(tree: dict, path: Path, keys: _Keys) -> dict:
    """A recipe run with another algorithm (`recipe=salt_grid algo=grpo`) keeps everything but the
    recipe's own algorithm's section, which does not act on this run (said once, not silently)."""
    kept = {}
    for name, value in tree.items():
        owner = keys.catalog.section_owner(name)
        if owner is not None and owner != keys.algo:
            print(f"align: {path.name}: the '{name}' section is algo={owner}'s; this run is algo={keys.algo}, "
                  "so it is left out", file=sys.stderr)
            continue
        kept[name] = value
    return kept


def _flatten(tree: Any, prefix: str = "") -> list[str]:
    if not isinstance(tree, dict):
        return [prefix.rstrip(".")]
    out = []
    for k, v in tree.items():
        out += _flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + str(k)]
    return out


def validate_common(cfg: Config, world_size: int = 1) -> None:
    """The combinations no algorithm can run, each a one-line error naming the key(s) and the fix."""
    for key, options in CHOICES.items():
        if _get(cfg, key) not in options:
            raise ConfigError(f"'{key}' is '{_get(cfg, key)}'; choose one of {', '.join(options)}")
    for name in cfg.log.report_to:
        if name not in REPORT_TO:
            raise ConfigError(f"log.report_to: '{name}' is not a tracker here; choose any of {', '.join(REPORT_TO)} "
                              "(e.g. log.report_to=[wandb,mlflow]), or none")
    if cfg.rollout.temperature <= 0:
        raise ConfigError(
            f"rollout.temperature={cfg.rollout.temperature}: training samples need a temperature > 0 "
            "(greedy decoding has no exploration and no sampling distribution to correct for); use e.g. 1.0"
        )
    _validate_ranges(cfg)
    if cfg.reward.weights and not any(cfg.reward.weights):
        raise ConfigError(f"reward.weights={list(cfg.reward.weights)}: all 0, so every reward is 0 and nothing is learned; "
                          "give at least one function a non-zero weight")
    g, batch = cfg.rollout.num_generations, cfg.train.batch_size
    if g == 1 and cfg.loss.baseline != "none":
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
    if cfg.loss.agg == "seq_sum_const" and cfg.rollout.max_tokens < 1:
        raise ConfigError("loss.agg=seq_sum_const needs rollout.max_tokens >= 1 (it is the constant length)")
    if cfg.loss.dynamic_sampling_oversample != 1 and not cfg.loss.dynamic_sampling:
        raise ConfigError(f"loss.dynamic_sampling_oversample={cfg.loss.dynamic_sampling_oversample} draws extra prompts for "
                          "dynamic sampling to choose from, which is off; set loss.dynamic_sampling=true or leave it at 1")
    if cfg.loss.kl_in_reward and cfg.loss.beta == 0:
        raise ConfigError("loss.kl_in_reward=true has no effect with loss.beta=0; set loss.beta (e.g. 0.04)")
    _validate_rollout_device(cfg.rollout)
    _validate_servers(cfg.rollout)
    _validate_staleness(cfg)
    servers = len(cfg.rollout.servers)
    if cfg.rollout.engine == "server" and servers > world_size and servers % world_size:
        raise ConfigError(f"rollout.servers: {servers} servers for {world_size} training process(es); each process "
                          "deals its prompts over the same number of servers, so give a multiple of the process "
                          "count (or at most one server per process)")
    if cfg.rollout.source == "offline" and cfg.log.eval_every and not cfg.data.eval_source:
        raise ConfigError("rollout.source=offline with log.eval_every needs data.eval_source (held-out prompts, e.g. geometry)")
    if cfg.resume not in (None, "latest") and not Path(cfg.resume).exists():
        raise ConfigError(f"resume='{cfg.resume}' does not exist; pass resume=latest or a checkpoint folder")


def _validate_ranges(cfg: Config) -> None:
    """Every numeric key within its range (schema.RANGES); an optional key may also be null."""
    for key, bounds in RANGES.items():
        value = _get(cfg, key)
        if value is not None and not in_range(value, bounds):
            default = _get(Config(), key)
            raise ConfigError(f"{key}={value!r}: must be {range_text(bounds)}{' (or null)' if nullable(key) else ''}; "
                              f"the default is {'null' if default is None else default}")


def _validate_servers(r: RolloutConfig) -> None:
    if r.engine != "server":
        if r.servers:
            raise ConfigError(f"rollout.servers={r.servers} is only read with rollout.engine=server; set that or drop the servers")
        return
    if not r.servers:
        raise ConfigError("rollout.engine=server needs rollout.servers=[http://HOST:PORT] (start one with `python -m align serve --model M`)")
    bad = [u for u in r.servers if not (isinstance(u, str) and u.startswith(("http://", "https://")))]
    if bad:
        raise ConfigError(f"rollout.servers: {bad[0]!r} is not a URL; write it as http://HOST:PORT")
    if r.sleep_mode:
        raise ConfigError("rollout.sleep_mode=true is for a colocated engine; a server keeps its own memory (set it false)")
    if r.server_timeout_s <= 0:
        raise ConfigError(f"rollout.server_timeout_s must be > 0 seconds, got {r.server_timeout_s}")


def _validate_staleness(cfg: Config) -> None:
    k = cfg.rollout.max_staleness
    if not isinstance(k, int) or k < 0:
        raise ConfigError(f"rollout.max_staleness={k!r}: must be an integer >= 0 (0 = synchronous, k = generate k steps ahead)")
    if k == 0:
        return
    if cfg.rollout.source == "offline":
        raise ConfigError(f"rollout.max_staleness={k} generates ahead, which rollout.source=offline does not "
                          "(its rows are fixed); set rollout.max_staleness=0")
    if cfg.rollout.engine != "server":
        raise ConfigError(f"rollout.max_staleness={k} needs an engine that generates beside the trainer: rollout.engine=server "
                          f"(`python -m align serve`), not {cfg.rollout.engine}, which shares the trainer's process")
    if cfg.loss.off_policy_correction == "decoupled" and cfg.loss.tis_cap is None:
        raise ConfigError(f"rollout.max_staleness={k} with loss.off_policy_correction=decoupled truncates the weight "
                          "pi_current / pi_behaviour at loss.tis_cap, which is null; set loss.tis_cap (e.g. 2.0) or use bypass")


def _validate_rollout_device(r: RolloutConfig) -> None:
    if r.tensor_parallel_size != 1:
        # Each rank generates its own prompts; a TP group would need them gathered per group first.
        raise ConfigError(f"rollout.tensor_parallel_size={r.tensor_parallel_size} is not supported yet (one colocated "
                          "engine per GPU); set rollout.tensor_parallel_size=1 and use ZeRO-3 for models that need more GPUs")
    if r.sleep_mode:
        import torch  # heavy: only when sleep mode is asked for

        if not torch.cuda.is_available():
            raise ConfigError("rollout.sleep_mode=true frees GPU memory and needs a CUDA GPU (vLLM has no sleep mode "
                              "on CPU); set rollout.sleep_mode=false")


def config_to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
