"""What data parallelism and DeepSpeed ZeRO need from the loop, kept out of the loop itself.

- `fill_deepspeed_config`: the launch config's DeepSpeed JSON completed from our Config, so the
  numbers that matter (clipping, precision, accumulation) come from the recipe, not from the JSON.
- `split_to_count`: every rank runs the same number of micro-batches (under ZeRO each forward and
  backward is a collective; one rank doing an extra micro-batch would hang the others).
- `sync_named_tensors`: the trainer's weights for the rollout engine; under ZeRO-3 gathered one
  module at a time, so no rank ever materialises the whole model on its device.
- `prepare_reference_model` / `outside_zero3_init`: frozen models beside a ZeRO-3 trainer.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from pathlib import Path

import torch

from align.config import ConfigError
from align.models.lora import sync_units, unit_tensors

# DeepSpeed keys the loop depends on; "auto" (or absent) means "align fills it from the recipe".
_AUTO = "auto"


class DistributedConfigError(ConfigError):
    """The launch configuration contradicts the recipe; the message names both and the fix."""


def uses_deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


def zero_stage(accelerator) -> int:
    """The DeepSpeed ZeRO stage the accelerator runs (0 without DeepSpeed)."""
    if not uses_deepspeed(accelerator):
        return 0
    return int(accelerator.deepspeed_config["zero_optimization"].get("stage", 0))


def _fill(section: dict, key: str, value, source: str, what: str) -> None:
    """Set section[key] = value where it is "auto" or absent; a different explicit value is an error."""
    current = section.get(key, _AUTO)
    if current == _AUTO:
        section[key] = value
    elif current != value:
        raise DistributedConfigError(
            f"DeepSpeed config sets {what}={current!r} but {source} gives {value!r}; set it to \"auto\" in the "
            f"DeepSpeed JSON (align fills it from the recipe) or change {source}"
        )


def check_deepspeed_json(path: str | None) -> None:
    """The launch config's DeepSpeed JSON must parse; DeepSpeed's own error is a traceback without the file name."""
    if not path or path == "none":
        return
    import json

    try:
        json.loads(Path(path).read_text())
    except OSError as error:
        raise DistributedConfigError(f"DeepSpeed config {path!r} cannot be read ({error.strerror}); fix deepspeed_config_file in the launch config") from error
    except json.JSONDecodeError as error:
        raise DistributedConfigError(
            f"DeepSpeed config {path!r} is not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); "
            "fix the file (launch/*.json are working examples)"
        ) from error


def fill_deepspeed_config(ds_config: dict, *, max_grad_norm: float, dtype: str, batch_size: int,
                          world_size: int) -> dict:
    """A copy of `ds_config` with the values the training loop depends on filled from the recipe.

    - gradient_clipping = train.max_grad_norm (DeepSpeed clips inside engine.step).
    - bf16 / fp16 enabled iff the model dtype is bfloat16 / float16 (fp32 master weights then).
    - gradient_accumulation_steps = 1: the loop accumulates micro-batches itself (losses are
      additive shares of a globally normalised loss) and marks the last one with
      `accelerator.sync_gradients`; DeepSpeed's own accumulation would divide the loss by GAS.
    - train_micro_batch_size_per_gpu = completions per rank per optimizer step. DeepSpeed only uses
      it for bookkeeping (train_batch_size = micro x GAS x world); token-budget micro-batches vary.
    - ZeRO-3: stage3_gather_16bit_weights_on_model_save = true (the final HF export needs it).
    Explicit values that contradict the recipe raise DistributedConfigError.
    """
    if "zero_optimization" not in ds_config:
        raise DistributedConfigError("DeepSpeed config has no zero_optimization section; add {\"stage\": 2} or {\"stage\": 3}")
    cfg = copy.deepcopy(ds_config)
    _fill(cfg, "gradient_clipping", float(max_grad_norm), "train.max_grad_norm", "gradient_clipping")
    _fill(cfg, "gradient_accumulation_steps", 1, "align's own token-budget accumulation (it needs 1)",
          "gradient_accumulation_steps")
    cfg["train_micro_batch_size_per_gpu"] = max(batch_size // world_size, 1)  # bookkeeping only
    cfg.pop("train_batch_size", None)  # derived by DeepSpeed from the two above
    if cfg["zero_optimization"].get("stage") == 3:
        # The run ends with a consolidated HF export, which under ZeRO-3 needs the weights gathered.
        cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
    for name, torch_dtype in (("bf16", "bfloat16"), ("fp16", "float16")):
        section = cfg.setdefault(name, {})
        _fill(section, "enabled", dtype == torch_dtype, f"model.dtype={dtype}", f"{name}.enabled")
    return cfg


def split_to_count(groups: list[list[int]], count: int) -> list[list[int]]:
    """Split the largest micro-batches in two until there are `count` of them.

    Every piece stays within the token budget (it is a part of a group that was). Ranks whose
    token-budget grouping gave fewer micro-batches than the busiest rank call this with the
    busiest rank's count. Raises ValueError when there are fewer sequences than `count`.
    """
    total = sum(len(g) for g in groups)
    if count > total:
        raise ValueError(f"split_to_count: cannot make {count} micro-batches from {total} sequences")
    out = [list(g) for g in groups]
    while len(out) < count:
        largest = max(range(len(out)), key=lambda i: len(out[i]))
        group = out.pop(largest)
        half = (len(group) + 1) // 2
        out[largest:largest] = [group[:half], group[half:]]
    return out


def max_over_ranks(accelerator, value: int) -> int:
    """The largest `value` any rank holds (every rank must call it)."""
    if accelerator.num_processes == 1:
        return value
    return int(accelerator.gather(torch.tensor([value], device=accelerator.device)).max().item())


COUNTED_OVER_RANKS = {"rollout/dropped_stale"}  # per-rank counts whose total is the figure


def rollout_metrics_over_ranks(accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Rank-local rollout metrics made global (every rank must call it, with the same keys).

    Ranks hold equal numbers of prompts and completions, so the mean of their means is the global
    mean; maxima ("*/max", "*_max") take the maximum, and throughputs ("tokens_per_s/*") and counts
    (COUNTED_OVER_RANKS) the sum. Spreads ("*/std") become the mean of the ranks' spreads, an approximation.
    """
    if accelerator.num_processes == 1 or not metrics:
        return dict(metrics)
    names = sorted(metrics)
    values = torch.tensor([float(metrics[k]) for k in names], dtype=torch.float64, device=accelerator.device)
    per_rank = accelerator.gather(values[None]).cpu()  # [world, K]
    out = {}
    for i, name in enumerate(names):
        column = per_rank[:, i]
        if name.endswith(("/max", "_max")):
            out[name] = float(column.max())
        elif name.startswith("tokens_per_s/") or name in COUNTED_OVER_RANKS:
            out[name] = float(column.sum())
        else:
            out[name] = float(column.mean())
    return out


# ----------------------------------------------------------------------------------- weight sync
@torch.no_grad()
def gathered_named_tensors(model) -> Iterator[tuple[str, torch.Tensor]]:
    """Full (name, tensor) pairs of a ZeRO-3-sharded model, gathering one module at a time.

    Every rank must iterate it to the end (each gather is a collective). Names and values are those
    of `align.models.merged_named_tensors` (LoRA merged, tied weights under every name). Tensors stay
    on the device they were gathered on (no host round trip) and are copies, so a consumer may keep
    one after the module's shards are released; the stream holds one gathered module at a time
    beyond what the consumer keeps. Works unchanged on an unsharded model.
    """
    import deepspeed

    for name, module, is_lora in sync_units(model):
        params = list(module.parameters(recurse=is_lora))
        with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
            # copies, on the device they were gathered on: the gathered parameters are released
            # when the block ends, and a consumer may keep a tensor longer (vLLM buffers a layer)
            yield from unit_tensors(name, module, is_lora, copy=True)


def sync_named_tensors(accelerator, model) -> Iterator[tuple[str, torch.Tensor]] | None:
    """What the rollout engine is loaded from: None means "read `model` directly" (its full weights
    are local); under ZeRO-3 the module-by-module gather above, on every rank."""
    if zero_stage(accelerator) < 3:
        return None
    return gathered_named_tensors(accelerator.unwrap_model(model))


# ------------------------------------------------------------------------------ frozen models
@contextlib.contextmanager
def outside_zero3_init(accelerator) -> Iterator[None]:
    """A context in which from_pretrained builds full, unsharded models even under ZeRO-3
    (rollout engines keep their own copy of the weights; they are not trained).

    transformers decides on zero.Init from a module-level weak reference to the DeepSpeed config;
    it is cleared for the block and restored after. (accelerate's zero3_init_context_manager
    re-registers a stage-3 config, which transformers still reads as "zero.Init on".)
    """
    if zero_stage(accelerator) < 3:
        yield
        return
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def prepare_reference_model(accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """Make a frozen model usable beside the trainer.

    Under ZeRO-3 it is wrapped in an inference-only DeepSpeed engine with the trainer's sharding,
    so its forward gathers layers on the fly like the trainer's (every rank must then run the same
    number of forwards). Otherwise its full weights are local and it is returned on the device.
    Call after `accelerator.prepare` of the trained model (that fills the config's "auto" values).
    """
    if zero_stage(accelerator) < 3:
        return model.to(accelerator.device).eval()
    import deepspeed

    ds_config = copy.deepcopy(accelerator.deepspeed_config)
    for key in ("optimizer", "scheduler"):
        ds_config.pop(key, None)
    # Nothing to offload or step for a frozen model; keep only the parameter sharding.
    ds_config["zero_optimization"].pop("offload_optimizer", None)
    engine, *_ = deepspeed.initialize(model=model, config=ds_config)
    engine.eval()
    return engine
