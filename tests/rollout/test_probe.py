"""The probe's pure helpers, against hand-computed cases."""

from __future__ import annotations

import math

import torch

from align.rollout.probe import bit_sum, bit_sums, describe_mismatch, make_probe, mean_abs_difference


def test_probe_is_fixed_by_its_seed():
    a, b, c = make_probe(100, seed=3), make_probe(100, seed=3), make_probe(100, seed=4)
    assert a == b and a != c
    assert len(a.sequences) == 2 and all(len(p) == 144 and len(q) == 8 for p, q in a.sequences)
    assert all(0 <= t < 100 for p, q in a.sequences for t in p + q)


def test_mean_abs_difference_by_hand():
    assert mean_abs_difference([[-1.0, -2.0], [-3.0]], [[-1.5, -2.0], [-2.0]]) == (0.5 + 0.0 + 1.0) / 3
    assert math.isnan(mean_abs_difference([[-1.0]], [[-1.0, -2.0]]))


def test_bit_sum_by_hand_and_in_the_engine_dtype():
    t = torch.tensor([1.0, -2.0, 3.0])
    # bf16 bit patterns 0x3F80, 0xC000 (-16384 as int16), 0x4040
    assert int(bit_sum(t, torch.bfloat16)) == 0x3F80 - 16384 + 0x4040
    assert int(bit_sum(t, torch.float32)) == sum(int(v) for v in t.view(torch.int32))
    # a change below bf16's resolution is no change for a bf16 engine; fp32 sees it
    nudged = torch.tensor([1.0, -2.0, 3.0001])
    assert bit_sum(nudged, torch.bfloat16) == bit_sum(t, torch.bfloat16)
    assert bit_sum(nudged, torch.float32) != bit_sum(t, torch.float32)
    assert bit_sum(torch.tensor([1.0, -2.0, 3.02]), torch.bfloat16) != bit_sum(t, torch.bfloat16)


def test_bit_sums_of_parts_add_up_to_the_fused_tensor_in_any_order():
    """What lets the sync compare vLLM's fused qkv_proj with the q, k, v the trainer sent."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(n, 8, generator=gen) for n in (8, 4, 4))
    parts = bit_sums([("q", q), ("k", k), ("v", v)], torch.bfloat16)
    fused = torch.cat([q, k, v]).to(torch.bfloat16)
    assert sum(parts.values()) == int(bit_sum(fused, torch.bfloat16))
    assert int(bit_sum(fused.flip(0).t().contiguous(), torch.bfloat16)) == sum(parts.values())
    stale = torch.cat([q, k, v * 1.1]).to(torch.bfloat16)
    assert int(bit_sum(stale, torch.bfloat16)) != sum(parts.values())


def test_describe_mismatch_names_the_culprits():
    trainer = {"a": torch.ones(2), "b": torch.zeros(2), "c": torch.full((2,), 2.0)}
    sent = bit_sums([("a", trainer["a"]), ("b", torch.ones(2))], torch.float32)
    engine = {"a": torch.ones(2) * 1.5}
    text = describe_mismatch({"a", "b", "c"}, sent, torch.float32, trainer, engine)
    assert "not sent in the last load: c" in text
    assert "changed in the trainer since they were sent: b" in text
    assert "engine holds different values for: a" in text
    clean = describe_mismatch({"a"}, bit_sums([("a", trainer["a"])], torch.float32), torch.float32,
                              {"a": trainer["a"]}, {"a": trainer["a"]})
    assert "stale state" in clean


def test_model_logprobs_of_ragged_batches_equal_each_sequence_scored_alone(base_model):
    """The probe scores with the trainer's layout (left-padded prompts, logits for completion positions
    only, several sequences per batch): the values equal a plain forward of each sequence alone."""
    from align.rollout.probe import model_logprobs

    gen = torch.Generator().manual_seed(0)
    vocab = base_model.config.vocab_size
    draw = lambda n: torch.randint(0, vocab, (n,), generator=gen).tolist()  # noqa: E731
    sequences = [(draw(p), draw(c)) for p, c in [(7, 3), (2, 5), (12, 1), (5, 4)]]
    got = model_logprobs(base_model, sequences, batch_size=3)  # two batches, one of them ragged
    for (prompt, completion), values in zip(sequences, got):
        with torch.no_grad():
            logits = base_model(input_ids=torch.tensor([prompt + completion])).logits[0].float()
        logp = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
        expected = logp.gather(-1, torch.tensor(completion)[:, None])[:, 0]
        assert len(values) == len(completion)
        torch.testing.assert_close(torch.tensor(values), expected, atol=1e-5, rtol=1e-5)
