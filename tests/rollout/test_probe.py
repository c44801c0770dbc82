"""The probe's pure helpers, against hand-computed cases."""

from __future__ import annotations

import math

import torch

from align.rollout.probe import bit_sum, bit_sums, describe_mismatch, make_probe, mean_abs_difference, wrap64


def test_probe_is_fixed_by_its_seed():
    a, b, c = make_probe(100, seed=3), make_probe(100, seed=3), make_probe(100, seed=4)
    assert a == b and a != c
    assert len(a.sequences) == 2 and all(len(p) == 144 and len(q) == 8 for p, q in a.sequences)
    assert all(0 <= t < 100 for p, q in a.sequences for t in p + q)


def test_mean_abs_difference_by_hand():
    assert mean_abs_difference([[-1.0, -2.0], [-3.0]], [[-1.5, -2.0], [-2.0]]) == (0.5 + 0.0 + 1.0) / 3
    assert math.isnan(mean_abs_difference([[-1.0]], [[-1.0, -2.0]]))


def test_bit_sum_by_hand_and_in_the_engine_dtype():
    from align.rollout.probe import _SQUARE_WEIGHT as K

    t = torch.tensor([1.0, -2.0, 3.0])
    # bf16 bit patterns 0x3F80, 0xC000 (-16384 as int16), 0x4040
    assert int(bit_sum(t, torch.bfloat16)) == sum(v + K * v * v for v in (0x3F80, -16384, 0x4040))
    assert int(bit_sum(t, torch.float32)) == wrap64(sum(int(v) + K * int(v) ** 2 for v in t.view(torch.int32)))
    # a change below bf16's resolution is no change for a bf16 engine; fp32 sees it
    nudged = torch.tensor([1.0, -2.0, 3.0001])
    assert bit_sum(nudged, torch.bfloat16) == bit_sum(t, torch.bfloat16)
    assert bit_sum(nudged, torch.float32) != bit_sum(t, torch.float32)
    assert bit_sum(torch.tensor([1.0, -2.0, 3.02]), torch.bfloat16) != bit_sum(t, torch.bfloat16)


def test_opposite_changes_of_two_elements_do_not_cancel():
    """One optimizer step in bf16 moves many elements by one unit in the last place, up and down:
    a plain sum of bit patterns missed such a stale tensor now and then."""
    t = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.bfloat16)
    bits = t.view(torch.int16).clone()
    bits[0] += 1
    bits[3] -= 1
    moved = bits.view(torch.bfloat16)
    assert int(moved.view(torch.int16).long().sum()) == int(t.view(torch.int16).long().sum())  # what cancelled
    assert bit_sum(moved, torch.bfloat16) != bit_sum(t, torch.bfloat16)


def test_bit_sums_of_parts_add_up_to_the_fused_tensor_in_any_order():
    """What lets the sync compare vLLM's fused qkv_proj with the q, k, v the trainer sent."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(n, 8, generator=gen) for n in (8, 4, 4))
    for dtype in (torch.bfloat16, torch.float32):  # float32: v^2 wraps around int64, on both sides alike
        parts = wrap64(sum(bit_sums([("q", q), ("k", k), ("v", v)], dtype).values()))
        fused = torch.cat([q, k, v]).to(dtype)
        assert parts == int(bit_sum(fused, dtype))
        assert int(bit_sum(fused.flip(0).t().contiguous(), dtype)) == parts
        assert int(bit_sum(torch.cat([q, k, v * 1.1]), dtype)) != parts


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
