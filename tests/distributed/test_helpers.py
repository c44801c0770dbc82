"""Single-process checks of the distributed helpers: DeepSpeed config filling, equal micro-batch
counts, the module-by-module weight gather, rollout metrics over ranks, and the launch configs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from align.config import ConfigError
from align.models import apply_lora, load_model, merged_named_tensors
from align.runtime.distributed import (
    DistributedConfigError,
    fill_deepspeed_config,
    gathered_named_tensors,
    rollout_metrics_over_ranks,
    split_to_count,
)

LAUNCH = Path(__file__).resolve().parents[2] / "launch"
RECIPE = dict(max_grad_norm=0.5, dtype="float32", batch_size=64, world_size=8)


def _auto_config(stage: int) -> dict:
    return {"zero_optimization": {"stage": stage}, "gradient_clipping": "auto", "gradient_accumulation_steps": "auto",
            "train_micro_batch_size_per_gpu": "auto", "bf16": {"enabled": "auto"}}


def test_fill_takes_clipping_precision_and_accumulation_from_the_recipe():
    filled = fill_deepspeed_config(_auto_config(2), **RECIPE)
    assert filled["gradient_clipping"] == 0.5
    assert filled["gradient_accumulation_steps"] == 1
    assert filled["train_micro_batch_size_per_gpu"] == 8  # 64 completions over 8 ranks
    assert filled["bf16"] == {"enabled": False} and filled["fp16"] == {"enabled": False}
    assert "stage3_gather_16bit_weights_on_model_save" not in filled["zero_optimization"]


def test_fill_enables_bf16_only_for_a_bfloat16_model_and_keeps_the_input():
    original = _auto_config(3)
    filled = fill_deepspeed_config(original, **{**RECIPE, "dtype": "bfloat16"})
    assert filled["bf16"]["enabled"] is True and filled["fp16"]["enabled"] is False
    assert filled["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert original["bf16"]["enabled"] == "auto" and original["gradient_clipping"] == "auto"  # not mutated


def test_fill_accepts_explicit_values_that_agree():
    config = {**_auto_config(2), "gradient_clipping": 0.5, "gradient_accumulation_steps": 1, "bf16": {"enabled": False}}
    assert fill_deepspeed_config(config, **RECIPE)["gradient_clipping"] == 0.5


@pytest.mark.parametrize(("key", "value", "named"), [
    ("gradient_clipping", 1.0, "train.max_grad_norm"),
    ("gradient_accumulation_steps", 4, "gradient_accumulation_steps=4"),
    ("bf16", {"enabled": True}, "model.dtype=float32"),
])
def test_fill_rejects_values_that_contradict_the_recipe_in_one_line(key, value, named):
    with pytest.raises(DistributedConfigError) as err:
        fill_deepspeed_config({**_auto_config(2), key: value}, **RECIPE)
    message = str(err.value)
    assert named in message and '"auto"' in message and "\n" not in message
    assert isinstance(err.value, ConfigError)  # the CLI prints it as one line, no traceback


def test_fill_needs_a_zero_section():
    with pytest.raises(DistributedConfigError, match="zero_optimization"):
        fill_deepspeed_config({"gradient_clipping": "auto"}, **RECIPE)


@pytest.mark.parametrize("name", ["ds_zero2.json", "ds_zero3.json", "ds_zero3_offload.json"])
def test_shipped_deepspeed_configs_fill_for_any_recipe(name):
    config = json.loads((LAUNCH / name).read_text())
    for dtype in ("float32", "bfloat16"):
        filled = fill_deepspeed_config(config, **{**RECIPE, "dtype": dtype})
        assert filled["bf16"]["enabled"] == (dtype == "bfloat16")
        assert filled["gradient_accumulation_steps"] == 1 and filled["gradient_clipping"] == 0.5


@pytest.mark.parametrize("path", sorted(LAUNCH.glob("*.yaml")), ids=lambda p: p.name)
def test_launch_yamls_say_when_to_pick_them_and_point_at_existing_files(path):
    text = path.read_text()
    assert text.startswith("# ") and "ick" in text.split("\n\n")[0]  # "Pick it when ..." up front
    config = yaml.safe_load(text)
    ds_file = config.get("deepspeed_config", {}).get("deepspeed_config_file")
    if ds_file:
        assert (LAUNCH.parent / ds_file).is_file(), ds_file


def test_split_to_count_splits_the_largest_groups_first():
    assert split_to_count([[0, 1, 2, 3], [4]], 3) == [[0, 1], [2, 3], [4]]
    assert split_to_count([[0, 1, 2], [3, 4]], 3) == [[0, 1], [2], [3, 4]]
    assert split_to_count([[0], [1]], 2) == [[0], [1]]  # already there: unchanged


def test_split_to_count_keeps_every_sequence_once():
    groups = [[5, 2, 7, 1, 0], [3, 4], [6]]
    for count in range(3, 9):
        out = split_to_count(groups, count)
        assert len(out) == count and all(out)
        assert sorted(i for g in out for i in g) == list(range(8))


def test_split_to_count_refuses_more_groups_than_sequences():
    with pytest.raises(ValueError, match="cannot make 4 micro-batches from 3 sequences"):
        split_to_count([[0, 1], [2]], 4)


def _assert_same_tensors(a, b, atol=0.0):
    assert [n for n, _ in a] == [n for n, _ in b]
    for (name, x), (_, y) in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=atol, msg=name)


def test_gathered_tensors_match_the_merged_view_of_a_plain_model(tiny_path):
    model = load_model(tiny_path)
    gathered = list(gathered_named_tensors(model))
    _assert_same_tensors(gathered, list(merged_named_tensors(model)))
    assert "lm_head.weight" in dict(gathered)  # the tied head is sent under its own name
    assert all(t.device.type == "cpu" for _, t in gathered)


def test_gathered_tensors_merge_lora_without_touching_the_model(tiny_path):
    model = apply_lora(load_model(tiny_path), r=4, alpha=8)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.2)  # B starts at zero, which would hide a missing merge
    before = {n: p.clone() for n, p in model.named_parameters()}
    gathered = list(gathered_named_tensors(model))
    for name, param in model.named_parameters():  # bit-exact: no merge/unmerge round trip
        assert torch.equal(param, before[name]), name
    _assert_same_tensors(gathered, list(merged_named_tensors(model)), atol=1e-6)
    plain = dict(merged_named_tensors(load_model(tiny_path)))
    assert not torch.equal(dict(gathered)["model.layers.0.self_attn.q_proj.weight"], plain["model.layers.0.self_attn.q_proj.weight"])


def test_gathered_tensors_stream_on_the_model_device(tiny_path):
    """No host round trip and no materialised list (issue 18): a model on the meta device (any
    non-CPU device would do) yields meta tensors, one at a time from a generator."""
    import types

    model = load_model(tiny_path, device="meta")
    stream = gathered_named_tensors(model)
    assert isinstance(stream, types.GeneratorType)
    name, first = next(stream)
    assert first.device.type == "meta"
    assert all(t.device.type == "meta" for _, t in stream)


def test_lora_adapters_keep_the_model_dtype_under_deepspeed(tiny_path):
    """peft upcasts bf16 adapters to float32 unless told not to; DeepSpeed's bf16 engine needs them bf16."""
    default = apply_lora(load_model(tiny_path, dtype="bfloat16"), r=4, alpha=8)
    under_ds = apply_lora(load_model(tiny_path, dtype="bfloat16"), r=4, alpha=8, autocast_adapter_dtype=False)
    lora_dtypes = lambda m: {p.dtype for n, p in m.named_parameters() if "lora_" in n}  # noqa: E731
    assert lora_dtypes(default) == {torch.float32} and lora_dtypes(under_ds) == {torch.bfloat16}


class TwoRanks:
    """An accelerator of two processes whose gather returns this rank's row and a fixed other rank's."""

    num_processes, device = 2, torch.device("cpu")

    def __init__(self, other: dict[str, float]):
        self.other = other

    def gather(self, values):
        names = sorted(self.other)
        return torch.cat([values, torch.tensor([[self.other[k] for k in names]], dtype=values.dtype)])


def test_rollout_metrics_over_ranks_take_the_max_of_maxima_and_the_sum_of_counts():
    """A maximum is the largest rank's, whichever way its name ends; samples dropped as too stale are
    counted over all ranks; a mean stays the mean of the ranks' means."""
    mine = {"rollout/staleness_max": 0.0, "completion_len/max": 5.0, "rollout/dropped_stale": 1.0,
            "rollout/staleness_mean": 0.0, "tokens_per_s/generate": 10.0}
    other = {"rollout/staleness_max": 2.0, "completion_len/max": 3.0, "rollout/dropped_stale": 2.0,
             "rollout/staleness_mean": 1.0, "tokens_per_s/generate": 30.0}
    assert rollout_metrics_over_ranks(TwoRanks(other), mine) == {
        "rollout/staleness_max": 2.0, "completion_len/max": 5.0, "rollout/dropped_stale": 3.0,
        "rollout/staleness_mean": 0.5, "tokens_per_s/generate": 40.0}
