"""The probe's pure helpers, against hand-computed cases."""

from __future__ import annotations

import math

import torch

from align.rollout.probe import describe_mismatch, make_probe, mean_abs_difference, tensor_checksum


def test_probe_is_fixed_by_its_seed():
    a, b, c = make_probe(100, seed=3), make_probe(100, seed=3), make_probe(100, seed=4)
    assert a == b and a != c
    assert len(a.sequences) == 2 and all(len(p) == 144 and len(q) == 8 for p, q in a.sequences)
    assert all(0 <= t < 100 for p, q in a.sequences for t in p + q)


def test_mean_abs_difference_by_hand():
    assert mean_abs_difference([[-1.0, -2.0], [-3.0]], [[-1.5, -2.0], [-2.0]]) == (0.5 + 0.0 + 1.0) / 3
    assert math.isnan(mean_abs_difference([[-1.0]], [[-1.0, -2.0]]))


def test_checksum_sees_changes():
    t = torch.tensor([1.0, -2.0, 3.0])
    assert tensor_checksum(t) == (2.0, 14.0)
    assert tensor_checksum(t) != tensor_checksum(torch.tensor([1.0, -2.0, 3.001]))


def test_describe_mismatch_names_the_culprits():
    trainer = {"a": torch.ones(2), "b": torch.zeros(2), "c": torch.full((2,), 2.0)}
    sent = {"a": tensor_checksum(trainer["a"]), "b": tensor_checksum(torch.ones(2))}
    engine = {"a": torch.ones(2) * 1.5}
    text = describe_mismatch({"a", "b", "c"}, sent, trainer, engine)
    assert "not sent in the last load: c" in text
    assert "changed in the trainer since they were sent: b" in text
    assert "engine holds different values for: a" in text
    clean = describe_mismatch({"a"}, {"a": tensor_checksum(trainer["a"])}, {"a": trainer["a"]}, {"a": trainer["a"]})
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
