"""Issue 10: defects that gave no error, only a run that learned less. Each test failed on the old code."""

from __future__ import annotations

import torch

from align.runtime.precision import training_precision
from align.runtime.seeds import derived_seed
from tests.trainers.in_process import make_trainer


def _trainable(trainer) -> dict[str, torch.Tensor]:
    model = trainer.acc.unwrap_model(trainer.model)
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


# 1. bf16 full fine-tuning: fp32 master weights + autocast, so a step of ~lr moves every weight.
def test_a_bf16_step_changes_every_trainable_tensor(cache_dir, tmp_path):
    trainer = make_trainer(cache_dir, tmp_path, "model.dtype=bfloat16", "train.lr=1e-6")
    before = _trainable(trainer)
    assert all(t.dtype == torch.float32 for t in before.values())  # master weights
    trainer.step(0)
    after = _trainable(trainer)
    for name, tensor in before.items():
        changed = (after[name] != tensor).float().mean().item()
        assert changed > 0, f"{name} did not move"
        if tensor.ndim == 2 and "embed" not in name:  # every element of a linear weight gets a gradient
            assert changed > 0.9, (name, changed)
    assert trainer.precision.autocast == torch.bfloat16


def test_bf16_lora_keeps_a_half_precision_base_and_trains_fp32_adapters(cache_dir, tmp_path):
    trainer = make_trainer(cache_dir, tmp_path, "model.dtype=bfloat16", "lora.enabled=true", "train.lr=1e-6")
    before = _trainable(trainer)
    assert before and all(t.dtype == torch.float32 for t in before.values())
    model = trainer.acc.unwrap_model(trainer.model)
    assert model.get_base_model().model.norm.weight.dtype == torch.bfloat16
    trainer.step(0)
    after = _trainable(trainer)
    assert all((after[n] != t).any() for n, t in before.items() if "lora_B" in n)


def test_precision_plan():
    assert training_precision("bfloat16", lora=False, deepspeed=False).weights == "float32"
    assert training_precision("bfloat16", lora=False, deepspeed=True).autocast is None  # DeepSpeed keeps masters
    assert training_precision("float32", lora=False, deepspeed=False).autocast is None


# 3. temperature: the trainer's logprobs are of softmax(z / T), the distribution that was sampled.
def test_trainer_logprobs_are_of_the_tempered_distribution(cache_dir, tmp_path):
    from align.runtime.batching import completion_logits, pad_sequences

    trainer = make_trainer(cache_dir, tmp_path, "rollout.temperature=0.7")
    seqs = pad_sequences([[5, 6, 7], [8, 9]], [[10, 11], [12, 13, 14]], [0, 1], trainer.tokenizer.pad_token_id)
    got, _ = trainer._logp(trainer.model, seqs)
    with torch.no_grad():
        want = torch.log_softmax(completion_logits(trainer.model, seqs).float() / 0.7, -1)
    want = want.gather(-1, seqs.completion_ids[..., None])[..., 0]
    mask = seqs.completion_mask.bool()
    torch.testing.assert_close(got[mask], want[mask], rtol=0, atol=1e-5)


# 4. LoRA syncs never write the frozen base weights (merge/unmerge in place drifted them in bf16).
def test_fifty_lora_syncs_leave_bf16_base_weights_bit_identical(tiny_path):
    from align.models import apply_lora, load_model, merged_named_tensors

    model = apply_lora(load_model(tiny_path, "bfloat16"), r=4, alpha=8)
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)  # a trained adapter (peft starts B at zero)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    for _ in range(50):
        merged = dict(merged_named_tensors(model))
    for name, tensor in base.items():
        assert torch.equal(dict(model.named_parameters())[name], tensor), name
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    want = layer.base_layer.weight + layer.get_delta_weight("default").to(torch.bfloat16)
    assert torch.equal(merged["model.layers.0.self_attn.q_proj.weight"], want)
    assert "lm_head.weight" in merged  # tied head still sent


# 6. kl_in_reward: the penalty shapes the rewards that advantages are computed from.
def test_kl_in_reward_penalises_the_rewards_before_advantages(cache_dir, tmp_path):
    trainer = make_trainer(cache_dir, tmp_path, "loss.beta=0.5", "loss.kl_in_reward=true", "loss.kl_kind=k3")
    with torch.no_grad():  # move the policy away from the reference so the KL is not zero
        for p in trainer.acc.unwrap_model(trainer.model).parameters():
            p.add_(0.05 * torch.randn_like(p))
    seen = {}
    advantages = trainer.algo.advantages
    trainer.algo.advantages = lambda rewards, *a: seen.setdefault("rewards", rewards) is not None and advantages(rewards, *a)
    collect = trainer.source.collect
    trainer.source.collect = lambda *a: seen.setdefault("rollout", collect(*a))
    metrics, _ = trainer.step(0)
    rollout = seen["rollout"].batch
    penalty = rollout.rewards - seen["rewards"]
    assert (penalty > 0).all() and metrics["kl_in_reward/penalty"] > 0  # k3 >= 0 per token, summed per completion
    assert metrics["kl"] == 0  # and the KL term is not also in the loss


# 9. mu > 1: loss metrics over every update, not update 0 (where the ratio is 1 and nothing clips).
def test_clip_metrics_cover_every_update(cache_dir, tmp_path):
    trainer = make_trainer(cache_dir, tmp_path, "train.updates_per_batch=3", "train.lr=3e-2", "loss.eps_low=0.01",
                           "loss.eps_high=0.01")
    metrics, _ = trainer.step(0)
    assert metrics["clip_frac_low"] + metrics["clip_frac_high"] > 0


# 10. seeds: no two prompts share a random stream, across ranks, refill rounds and steps.
def test_sample_seeds_never_collide_across_ranks_rounds_and_prompts():
    n, prompts, ranks, rounds = 8, 16, 4, 3
    def sample_seeds(call_seed):  # the engines give sample j of prompt i the seed call_seed + i * n + j
        return {call_seed + i * n + j for i in range(prompts) for j in range(n)}
    seen: set[int] = set()
    for step in range(3):
        for rank in range(ranks):
            for round_ in range(rounds):
                seeds = sample_seeds(derived_seed(0, step, round_, rank))
                assert not seeds & seen
                seen |= seeds
    old = [sample_seeds(0 * 1_000_003 + 0 * 1009 + rank * 31 + 0) for rank in range(2)]  # the old formula
    assert old[0] & old[1]
