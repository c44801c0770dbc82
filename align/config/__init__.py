"""The config layer: the typed schema (schema.py), recipe + override loading and the checks every
algorithm shares (load.py), and TRL's / verl's names for our keys (aliases.py). It imports only
align.errors: the algorithms' own sections come in through `AlgorithmSection` (see load.py)."""

from align.config.inert import inert_ratio_options
from align.config.load import (
    AlgorithmCatalog,
    config_to_yaml,
    find_recipe,
    load_config,
    requested_algo,
    validate_common,
)
from align.config.schema import (
    CHOICES,
    RECIPES_DIR,
    AlgorithmSection,
    Config,
    ConfigError,
    DataConfig,
    EnvConfig,
    EvalConfig,
    LogConfig,
    LoraConfig,
    LossConfig,
    ModelConfig,
    RewardConfig,
    RolloutConfig,
    TrainConfig,
    all_keys,
    config_class,
)

__all__ = [
    "CHOICES", "RECIPES_DIR", "AlgorithmCatalog", "AlgorithmSection", "Config", "ConfigError", "DataConfig", "EnvConfig",
    "EvalConfig", "LogConfig", "LoraConfig", "LossConfig", "ModelConfig", "RewardConfig", "RolloutConfig", "TrainConfig",
    "all_keys", "config_class", "config_to_yaml", "find_recipe", "inert_ratio_options", "load_config", "requested_algo",
    "validate_common",
]
