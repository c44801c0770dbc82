"""TR-DPO's soft update of the reference: TRL's own mixing on the same models, LoRA merged, tied weights once."""

from __future__ import annotations

import pytest
import torch

from align.models import apply_lora, load_model, mix_into_reference


def _perturbed(path: str, seed: int):
    model = load_model(path, "float32", "cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.01)
    return model


def test_mixing_matches_trls_sync_ref_model(tiny_path):
    pytest.importorskip("trl")
    from trl.trainer.callbacks import SyncRefModelCallback

    policy = _perturbed(tiny_path, 0)
    ours, theirs = _perturbed(tiny_path, 1), _perturbed(tiny_path, 1)
    mix_into_reference(ours, policy, 0.3)
    SyncRefModelCallback._sync_target_model(policy, theirs, 0.3)
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)
    assert not torch.equal(next(ours.parameters()), next(_perturbed(tiny_path, 1).parameters()))


def test_a_lora_policy_counts_as_base_plus_delta(tiny_path):
    """The reference is the plain model; the policy's LoRA layers enter as W + B A (TRL refuses PEFT here)."""
    policy = apply_lora(load_model(tiny_path, "float32", "cpu"), r=4, alpha=8)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a non-zero delta (B starts at 0)
    reference = load_model(tiny_path, "float32", "cpu")
    start = {n: p.detach().clone() for n, p in reference.named_parameters()}
    mix_into_reference(reference, policy, 1.0)  # alpha 1: the reference becomes the merged policy
    merged = policy.merge_and_unload()
    for name, p in merged.named_parameters():
        torch.testing.assert_close(dict(reference.named_parameters())[name], p.detach(), msg=name)
    changed = [n for n, p in reference.named_parameters() if not torch.equal(p, start[n])]
    assert changed and all("proj" in n for n in changed)  # only the adapted layers moved


def test_bad_alpha_is_refused(tiny_path):
    model = load_model(tiny_path, "float32", "cpu")
    with pytest.raises(ValueError, match="alpha=0"):
        mix_into_reference(model, model, 0.0)
