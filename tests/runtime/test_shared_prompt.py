"""The shared-prompt layout (align/runtime/batching.py, PackedSequences) is exact.

Per-token log-probs of the packed forward equal the padded per-sequence forward within 1e-5 (fp32)
and so do the gradients (relative), on the tiny model with both attention kernels that take a 4D
mask, with ragged completions, padding, a one-token prompt, a one-token and an empty completion,
and a row whose prompt no other row shares; also under gradient checkpointing and LoRA. Then the
budget planner: every row once, a part never mixes prompts, parts fit, counts can be met.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from align import algos
from align.models import apply_lora
from align.runtime.batching import (
    PackedSequences,
    completion_logits,
    forward_shape,
    pack_shared_prompts,
    pad_sequences,
    shared_prompt_budget_groups,
    split_parts_to_count,
)

LONG, ONE = [5, 6, 7, 8, 9, 10, 11], [12]
# rows: 4 completions of LONG (ragged, one empty), 2 of a one-token prompt (one of one token), and
# a row with a prompt of its own between them (no sharing for it)
PROMPTS = [LONG, LONG, ONE, [13, 14, 15], LONG, ONE, LONG]
COMPLETIONS = [[20, 21, 22], [23], [24, 25, 26, 27, 28], [29, 30], [], [31], [32, 33, 34, 35, 36, 37]]


def model_with(path: str, attention: str):
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attention)


def logp_and_grads(model, seqs, weights: torch.Tensor):
    model.zero_grad()
    logp = algos.token_logprobs(completion_logits(model, seqs), seqs.completion_ids)
    (logp * seqs.completion_mask * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logp.detach() * seqs.completion_mask, grads


def assert_same(model, prompts=PROMPTS, completions=COMPLETIONS):
    index = list(range(len(prompts)))
    padded = pad_sequences(prompts, completions, index, pad_id=3)
    packed = pack_shared_prompts(prompts, completions, index, pad_id=3)
    assert isinstance(packed, PackedSequences)
    torch.testing.assert_close(packed.completion_ids, padded.completion_ids)
    torch.testing.assert_close(packed.completion_mask, padded.completion_mask)
    weights = torch.linspace(-1.0, 2.0, padded.completion_mask.numel()).view_as(padded.completion_mask)
    want, want_grads = logp_and_grads(model, padded, weights)
    got, got_grads = logp_and_grads(model, packed, weights)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert want_grads.keys() == got_grads.keys() and want_grads
    for name, g in want_grads.items():
        assert (got_grads[name] - g).norm() <= 1e-5 * g.norm() + 1e-12, name
    return padded, packed


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_logprobs_and_gradients_equal_the_padded_forward(attention, tiny_path):
    model = model_with(tiny_path, attention)
    padded, packed = assert_same(model)
    # three packed sequences (LONG, ONE, the unshared row) instead of seven rows, and fewer tokens
    assert packed.input_ids.shape == forward_shape(PROMPTS, COMPLETIONS, True) == (3, 7 + 3 + 1 + 0 + 6)
    assert padded.input_ids.shape == forward_shape(PROMPTS, COMPLETIONS, False)
    assert packed.input_ids.numel() < padded.input_ids.numel()
    # the LM head sees the predicting columns only, not the prompts (but their last token)
    assert len(packed.keep) < packed.input_ids.shape[1]


def test_rows_with_different_prompts_are_not_shared(tiny_path):
    """Each prompt distinct (as in the probe): one packed sequence per row, still exact."""
    prompts, completions = [[5, 6], [5, 6, 7], [5]], [[8, 9], [10], [11, 12, 13]]
    _, packed = assert_same(model_with(tiny_path, "sdpa"), prompts, completions)
    assert packed.input_ids.shape[0] == 3


def test_packed_is_exact_under_gradient_checkpointing_and_lora(tiny_path):
    model = model_with(tiny_path, "sdpa")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    assert_same(model)
    lora = apply_lora(model_with(tiny_path, "sdpa"), r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    for name, p in lora.named_parameters():  # LoRA's B starts at zero: move it so A gets gradient too
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)
    lora.train()
    _, packed = assert_same(lora)


def test_attention_mask_blocks_siblings_and_restarts_positions():
    packed = pack_shared_prompts([[1, 2], [1, 2]], [[3, 4], [5]], [0, 1], pad_id=0)
    assert packed.input_ids.tolist() == [[1, 2, 3, 4, 5]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 3, 2]]
    mask = packed.attention_mask[0, 0].int().tolist()
    assert mask == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 1]]
    assert packed.keep.tolist() == [1, 2]  # column 1 predicts both first tokens, column 2 predicts token 4


def test_budget_keeps_prompts_together_and_splits_only_oversized_groups():
    groups = [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    prompt_lens = [10, 4, 30]
    lens = [5, 5, 5, 1, 2, 3, 20, 20, 20]
    mbs = shared_prompt_budget_groups(groups, prompt_lens, lens, max_tokens=60)
    parts = [part for mb in mbs for part in mb]
    assert sorted(r for part in parts for r in part) == list(range(9))
    assert [0, 1, 2] in parts and [3, 4, 5] in parts  # whole where they fit
    assert [6] in parts and [7] in parts and [8] in parts  # 30 + 3 x 20 > 60: the prompt repeated per part
    for mb in mbs:
        width = max(prompt_lens[part[0] // 3] + sum(lens[r] for r in part) for part in mb)
        assert len(mb) * width <= 60
    assert any(len(mb) == 2 for mb in mbs)


def test_split_parts_to_count_splits_parts_then_rows():
    mbs = [[[0, 1, 2, 3], [4, 5]]]
    out = split_parts_to_count(mbs, 3)
    assert len(out) == 3 and sorted(r for mb in out for part in mb for r in part) == list(range(6))
    assert all(len({r // 4 for r in part}) == 1 for mb in out for part in mb)  # a part stays one prompt's rows
    with pytest.raises(ValueError):
        split_parts_to_count([[[0]]], 2)


def test_packed_is_exact_on_smollm2(smollm2_path):
    """The Llama architecture (SmolLM2-135M-Instruct, 30 layers), SDPA, against a float64 copy of itself.
    Float64 is exact to float32 rounding only: Llama's RMSNorm upcasts to float32 whatever the model's
    dtype, so the gradient of a prompt summed over its completions inside the network (packed) and
    outside it (padded) differ by float32 rounding (measured: 1.1e-7 and 1.4e-7 of the norm; log-probs
    equal). fp32 against float64, two threads here: padded 5.8e-6 and 2.6e-5, packed 2.7e-5 and 6.4e-5
    (embedding, first q_proj); the bound is 1e-3 because summation order moves with the CPU and its
    thread count. An earlier floor (the padded batch against the rows one at a time, both fp32) failed
    on a correct layout at two threads (6.3e-3 against 3.2e-3), so the reference is float64 now."""
    model = model_with(smollm2_path, "sdpa")
    model.requires_grad_(False)
    model.lm_head.weight.requires_grad_(True)  # tied to the embedding: gradient through the head and the prompt
    model.model.layers[0].self_attn.q_proj.weight.requires_grad_(True)  # the far end of the backward
    index = list(range(len(PROMPTS)))
    padded = pad_sequences(PROMPTS, COMPLETIONS, index, pad_id=3)
    weights = torch.linspace(-1.0, 2.0, padded.completion_mask.numel()).view_as(padded.completion_mask)
    packed = pack_shared_prompts(PROMPTS, COMPLETIONS, index, pad_id=3)
    want, want_grads = logp_and_grads(model, padded, weights)
    got, got_grads = logp_and_grads(model, packed, weights)
    exact = copy.deepcopy(model).double()
    lp64_padded, grads64_padded = logp_and_grads(exact, padded, weights.double())
    lp64_packed, grads64_packed = logp_and_grads(exact, packed, weights.double())
    torch.testing.assert_close(lp64_packed, lp64_padded, atol=1e-9, rtol=0)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)  # fp32: rounding only
    assert want_grads.keys() == got_grads.keys() == grads64_padded.keys() and want_grads
    for name, g64 in grads64_padded.items():
        assert (grads64_packed[name] - g64).norm() <= 1e-6 * g64.norm(), name
        for layout, g32 in (("padded", want_grads[name]), ("packed", got_grads[name])):
            assert (g32.double() - g64).norm() <= 1e-3 * g64.norm(), (name, layout)
