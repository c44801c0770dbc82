"""align: group-based RL (GRPO, GCPO, GRAO, CoPG, SALT) for language models, on vLLM rollouts."""

__version__ = "0.1.0"
