"""ServerPool (one process over several vLLM servers) against fake servers: which rank owns which server,
prompts dealt in order, seeds that do not depend on the dealing, every server synced and closed.
The pool on two real servers trains in tests/rollout/test_server.py (slow)."""

from __future__ import annotations

import pytest

from align.rollout import SamplingSettings, servers_of_rank
from align.rollout.base import SyncReport
from align.rollout.server_pool import ServerPool, deal
from align.runtime.seeds import derived_seed


class FakeServer:
    """Samples are (server, prompt, the seed the prompt was sampled with) so that the test sees both."""

    def __init__(self, url: str, max_model_len: int = 512, fail_close: bool = False):
        self.url, self.max_model_len, self.fail_close = url, max_model_len, fail_close
        self.loaded: list[list[str]] = []
        self.closed = False
        self._version = 0

    def generate_slice(self, prompts, n, sampling, first=0):
        return [[(self.url, tuple(p), None if sampling.seed is None else derived_seed(sampling.seed, first + i), j)
                 for j in range(n)] for i, p in enumerate(prompts)]

    def score(self, sequences):
        return [[float(len(c))] for _, c in sequences]

    def sync_from(self, model, *, verify=True, version=None, named_tensors=None):
        self.loaded.append([name for name, _ in named_tensors])
        self._version = self._version + 1 if version is None else version
        return SyncReport(self._version, 0.001 * len(self.url), 0.5)

    @property
    def weight_version(self):
        return self._version

    def close(self):
        self.closed = True
        if self.fail_close:
            raise RuntimeError(f"{self.url} is gone")


def test_each_server_belongs_to_one_rank_and_fewer_servers_are_shared():
    servers = ["a", "b", "c", "d"]
    assert [servers_of_rank(servers, r, 2) for r in range(2)] == [["a", "c"], ["b", "d"]]
    assert servers_of_rank(servers, 0, 1) == servers
    assert [servers_of_rank(["a", "b"], r, 4) for r in range(4)] == [["a"], ["b"], ["a"], ["b"]]
    assert [servers_of_rank(["a", "b"], r, 2) for r in range(2)] == [["a"], ["b"]]


def test_prompts_are_dealt_in_contiguous_slices_and_come_back_in_order():
    assert deal(5, 2) == [range(0, 3), range(3, 5)] and deal(1, 3) == [range(0, 1), range(1, 1), range(1, 1)]
    pool = ServerPool([FakeServer("a", 512), FakeServer("b", 256)])
    prompts = [[i + 1] for i in range(5)]
    groups = pool.generate(prompts, 2, SamplingSettings(max_tokens=4))
    assert [g[0][1] for g in groups] == [tuple(p) for p in prompts] and all(len(g) == 2 for g in groups)
    assert [g[0][0] for g in groups] == ["a", "a", "a", "b", "b"]  # both servers sample
    assert pool.generate([[1]], 2, SamplingSettings(max_tokens=4))[0][0][0] == "a"  # one prompt: one server
    assert pool.max_model_len == 256  # a prompt may land on either
    assert pool.score([([1], [2, 3]), ([4], [5])]) == [[2.0], [1.0]]


def test_a_seeded_call_samples_as_one_server_would_whatever_the_dealing():
    sampling = SamplingSettings(max_tokens=4, seed=7)
    prompts = [[i + 1] for i in range(7)]
    alone = FakeServer("a").generate_slice(prompts, 3, sampling)
    for servers in (2, 3):
        pooled = ServerPool([FakeServer(f"s{i}") for i in range(servers)]).generate(prompts, 3, sampling)
        assert [[s[1:] for s in g] for g in pooled] == [[s[1:] for s in g] for g in alone]


def test_every_server_gets_the_whole_sync_and_all_are_closed_even_after_a_failure():
    a, b = FakeServer("a"), FakeServer("bb", fail_close=True)
    pool = ServerPool([a, b])
    gathered = iter([("w1", None), ("w2", None)])  # a ZeRO-3 gather: an iterator walked once
    report = pool.sync_from(None, named_tensors=gathered)
    assert a.loaded == b.loaded == [["w1", "w2"]]
    assert (report.weight_version, report.probe_diff, report.seconds) == (1, pytest.approx(0.002), 1.0)
    assert pool.weight_version == 1
    b._version = 5
    with pytest.raises(RuntimeError, match="weight versions"):
        pool.sync_from(None, named_tensors=[("w1", None)])
    with pytest.raises(RuntimeError, match="bb is gone"):
        pool.close()
    assert a.closed and b.closed
    with pytest.raises(ValueError, match="at least two"):
        ServerPool([a])
