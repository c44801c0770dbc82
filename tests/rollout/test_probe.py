"""The probe's pure helpers, against hand-computed cases."""

from __future__ import annotations

import math

import torch

from align.rollout.probe import describe_mismatch, make_probe, mean_abs_difference, tensor_checksum


def test_probe_is_fixed_by_its_seed():
    a, b, c = make_probe(100, seed=3), make_probe(100, seed=3), make_probe(100, seed=4)
    assert a == b and a != c
    assert len(a.sequences) == 4 and all(len(p) == 144 and len(q) == 8 for p, q in a.sequences)
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
