"""`align explain recipe=NAME [key=value ...]`: what one optimizer step does, before running it.

Prints the batch arithmetic, which estimators and corrections are active, and a memory estimate of
the trainer/engine split. Nothing is trained; the model is instantiated on the meta device only to
count its parameters.
"""

from __future__ import annotations

from align.config import Config, load_config

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def count_parameters(cfg: Config) -> tuple[int, int, int, int]:
    """(total parameters, vocab size, hidden size, layers) of the configured model, without loading weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from align.models import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(cfg.model.name, cfg.model.cache_dir))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    return total, config.vocab_size, config.hidden_size, config.num_hidden_layers


def describe(cfg: Config, n_params: int, vocab: int, hidden: int, layers: int, dtype: str, world: int = 1) -> str:
    g, batch, lc = cfg.rollout.num_generations, cfg.train.batch_size, cfg.loss
    prompts = batch // g
    b = BYTES[dtype]
    trainable = n_params if not cfg.lora.enabled else _lora_params(hidden, layers, cfg.lora.r)
    gib = 1 / 2**30
    weights = n_params * b
    grads = trainable * b
    adam = trainable * 2 * b  # AdamW keeps two moments in the parameter dtype
    ref = weights if lc.beta > 0 else 0
    logits = cfg.train.micro_batch_tokens * vocab * 4  # fp32 log-softmax of one micro-batch
    acts = cfg.train.micro_batch_tokens * hidden * layers * 16 * b  # rough: ~16 saved tensors per layer
    engine_kv = cfg.rollout.kv_cache_mb << 20
    lines = [
        f"recipe {cfg.recipe or '(none)'}: algo={cfg.algo}, model={cfg.model.name} ({n_params / 1e6:.2f}M params, {dtype})",
        "",
        "per optimizer step:",
        f"  {prompts} prompts x {g} completions = {batch} completions, <= {batch * cfg.rollout.max_tokens} completion tokens",
        f"  {prompts // world} prompts per process on {world} process(es); {cfg.train.updates_per_batch} update(s) per rollout batch",
        f"  micro-batches of <= {cfg.train.micro_batch_tokens} padded tokens; {cfg.train.steps} steps = {cfg.train.steps * prompts} prompts",
        "",
        "active:",
        f"  advantages: baseline={lc.baseline}, scale={lc.scale}" + (" (Dr.GRPO)" if lc.scale == "none" else ""),
        f"  surrogate: clip [{1 - lc.eps_low:g}, {1 + lc.eps_high:g}]"
        + (f", dual clip {lc.dual_clip}" if lc.dual_clip else "") + (f", delta {lc.delta}" if lc.delta else "")
        + (", sequence-level ratio (GSPO)" if lc.ratio_level == "sequence" else "") + f", aggregation {lc.agg}",
        "  KL: " + ("off (no reference model loaded)" if lc.beta == 0 else
                    f"beta={lc.beta} {lc.kl_kind} " + ("in the reward" if lc.kl_in_reward else "in the loss")),
        "  engine/trainer mismatch: " + (f"TIS, weights capped at {lc.tis_cap}" if lc.tis_cap else "uncorrected"),
        f"  dynamic sampling: {'on, up to ' + str(lc.dynamic_sampling_max_rounds) + ' rounds' if lc.dynamic_sampling else 'off'}; "
        f"overlong penalty: {'last ' + str(lc.overlong_buffer) + ' tokens' if lc.overlong_buffer else 'off'}; "
        f"truncated completions {'masked' if lc.mask_truncated else 'kept'}",
        f"  LoRA: {'r=' + str(cfg.lora.r) + ', alpha=' + str(cfg.lora.alpha) if cfg.lora.enabled else 'off (full fine-tuning)'}",
        "",
        "memory estimate per process (no ZeRO sharding):",
        f"  trainer: weights {weights * gib:.3f} + grads {grads * gib:.3f} + AdamW {adam * gib:.3f}"
        f" + reference {ref * gib:.3f} + logits {logits * gib:.3f} + activations ~{acts * gib:.3f} GiB",
        f"  engine: weights {weights * gib:.3f} + KV cache {engine_kv * gib:.3f} GiB (rollout.kv_cache_mb on CPU;"
        f" rollout.gpu_memory_utilization={cfg.rollout.gpu_memory_utilization} of the GPU on GPU)",
    ]
    return "\n".join(lines)


def _lora_params(hidden: int, layers: int, r: int) -> int:
    # all-linear on a transformer block: ~7 projections, each adding r * (in + out) parameters
    return layers * 7 * r * 2 * hidden


def main(argv: list[str]) -> str:
    from align.trainers.base import resolve_dtype

    cfg = load_config(argv)
    n, vocab, hidden, layers = count_parameters(cfg)
    return describe(cfg, n, vocab, hidden, layers, resolve_dtype(cfg.model.dtype))
