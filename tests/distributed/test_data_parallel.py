"""Data-parallel invariance end to end: 2 CPU processes (gloo) under DeepSpeed ZeRO-3 / ZeRO-2 /
plain DDP train the tiny model exactly as one process does on the same global batch.

rollout.seed_per_prompt=true seeds each prompt's samples by its place in the global batch, so
both layouts draw the same completions; everything after that (advantages over the global batch,
globally normalised additive losses, micro-batches equalised over ranks, gradient averaging undone,
clipping inside DeepSpeed, reference model sharded under ZeRO-3, module-by-module weight sync with
the probe check) must then give the same losses and weights, up to float summation order.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DIGITS = ROOT / "tests" / "trainers" / "rewards_for_tests.py"
STEPS = 3
# The e2e test's quick GRPO settings, plus: a KL term (reference model), micro-batches small enough
# that ranks end up with several (and possibly different numbers of) them, and a checkpoint at 2.
# A linear LR schedule (the LR must follow the same curve on any number of ranks) and dynamic
# sampling over a reward with zero spread on about half the prompts (refill rounds are decided over
# the global batch: both layouts must consume the same prompts).
SETTINGS = ["recipe=grpo_math", f"reward.functions=[math_accuracy,{DIGITS}:digit_fraction_odd_answers]", "reward.weights=[1.0,1.0]",
            "train.lr_schedule=linear", "loss.dynamic_sampling=true",
            "train.batch_size=16", "rollout.num_generations=4", "rollout.max_tokens=16", "data.options.size=64",
            "rollout.engine=hf", "rollout.seed_per_prompt=true", "loss.beta=0.1", "train.micro_batch_tokens=200",
            "log.report_to=[]", "log.console=false", f"train.steps={STEPS}", "log.save_every=2"]
COMPARED = ["loss", "pg_loss", "kl", "grad_norm", "entropy", "reward/mean", "adv/abs_mean", "completion_len/mean", "logp_mismatch",
            "lr", "zero_std_frac"]


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch(layout: str, cache_dir: str, run_dir: Path, *extra: str, settings: list[str] = SETTINGS) -> None:
    """Run align/train.py as `layout` says: single | zero2 | zero3 (accelerate launch) | ddp (torchrun)."""
    port = _free_port()
    if layout == "single":
        prefix = [str(BIN / "accelerate"), "launch", "--num_processes", "1", "--cpu"]
    elif layout == "ddp":
        prefix = [str(BIN / "torchrun"), "--nproc_per_node", "2", "--master_port", port]
    else:
        prefix = [str(BIN / "accelerate"), "launch", "--config_file", f"launch/{layout}.yaml", "--num_processes", "2",
                  "--main_process_port", port]
    cmd = [*prefix, "align/train.py", *settings, f"model.cache_dir={cache_dir}", f"log.run_dir={run_dir}", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{layout} exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-6000:]}"


def metrics(run_dir: Path) -> dict[int, dict]:
    return {row["step"]: row for row in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())}


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "final" / "model.safetensors")


@pytest.fixture(scope="module")
def runs(cache_dir, tmp_path_factory):
    """Run folders by layout, each launched on first use."""
    base = tmp_path_factory.mktemp("dp")
    done: dict[str, Path] = {}

    def get(layout: str) -> Path:
        if layout not in done:
            launch(layout, cache_dir, base / layout)
            done[layout] = base / layout
        return done[layout]

    return get


def assert_same_training(run: Path, reference: Path, initial_path: str) -> None:
    got, want = metrics(run), metrics(reference)
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1))
    for step in want:
        for name in COMPARED:
            assert got[step][name] == pytest.approx(want[step][name], rel=1e-4, abs=1e-6), (step, name)
        assert got[step]["sync/weight_version"] == step and got[step]["sync/probe_diff"] < 1e-3
    assert any(want[s]["kl"] > 0 for s in want) and all(want[s]["grad_norm"] > 0 for s in want)  # not vacuous
    assert any(want[s]["zero_std_frac"] > 0 for s in want) and want[STEPS]["lr"] < want[1]["lr"]
    # the same prompts consumed: the stream position saved at step 2 (refills included) agrees
    state = "checkpoints/step-000002/trainer_state.json"
    assert json.loads((run / state).read_text())["prompts"] == json.loads((reference / state).read_text())["prompts"]
    from align.models import load_model

    initial = load_model(initial_path).state_dict()
    assert max((theirs_t - initial[n]).abs().max().item() for n, theirs_t in final_weights(reference).items()) > 1e-4
    ours, theirs = final_weights(run), final_weights(reference)
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor, rtol=0, atol=1e-5, msg=name)


def test_zero3_two_processes_match_one_process(runs, tiny_path):
    assert_same_training(runs("zero3"), runs("single"), tiny_path)
    # ZeRO-3 wrote one optimizer shard per rank
    assert len(list((runs("zero3") / "checkpoints" / "step-000003" / "pytorch_model").glob("*optim_states.pt"))) == 2


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["zero2", "ddp"])
def test_zero2_and_ddp_two_processes_match_one_process(runs, layout, tiny_path):
    assert_same_training(runs(layout), runs("single"), tiny_path)


@pytest.mark.slow
def test_zero3_resume_reproduces_the_uninterrupted_run(runs, cache_dir, tmp_path):
    full = runs("zero3")
    resumed_dir = tmp_path / "resumed"
    launch("zero3", cache_dir, resumed_dir, f"resume={full / 'checkpoints' / 'step-000002'}")
    resumed = metrics(resumed_dir)
    assert sorted(resumed) == [STEPS]  # picked up after step 2
    for name in COMPARED:
        assert resumed[STEPS][name] == pytest.approx(metrics(full)[STEPS][name], rel=1e-5, abs=1e-7), name
    for name, tensor in final_weights(full).items():
        torch.testing.assert_close(final_weights(resumed_dir)[name], tensor, rtol=0, atol=1e-6, msg=name)


@pytest.mark.slow
def test_zero3_export_loads_in_transformers_and_vllm(runs):
    pytest.importorskip("vllm")
    from align.models import load_model
    from align.rollout import VLLMEngine
    from align.rollout.probe import make_probe, model_logprobs

    export = runs("zero3") / "final"
    hf = load_model(str(export))
    sequences = make_probe(hf.config.vocab_size, seed=3, prompt_len=20).sequences
    engine = VLLMEngine(str(export), seed=0, kv_cache_bytes=64 << 20)
    try:
        engine_lp = engine.score(sequences)
    finally:
        engine.close()
    hf_lp = model_logprobs(hf, sequences)
    diff = max(abs(a - b) for x, y in zip(engine_lp, hf_lp) for a, b in zip(x, y))
    assert diff < 1e-4, diff


# GRAO and CoPG couple the members of a group in their loss (whole groups per micro-batch, the
# reference answer forwarded beside its group, per-prompt normalisers): the same invariance must hold.
SHARED = ["model.name=tiny", "train.batch_size=16", "rollout.num_generations=4", "rollout.max_tokens=16", "data.options.size=64",
          "rollout.engine=hf", "rollout.seed_per_prompt=true", "train.micro_batch_tokens=400", "train.lr=1e-3",
          "log.report_to=[]", "log.console=false", "train.steps=2", "log.save_every=0", "log.eval_every=0"]
GROUP_ALGOS = {
    "grao": ["recipe=grao_geometry", *SHARED],
    "copg": ["recipe=copg_geometry", "data.source=arith", f"reward.functions=[{DIGITS}:digit_fraction]", "reward.weights=null",
             *SHARED],
}


@pytest.mark.slow
@pytest.mark.parametrize("algo", sorted(GROUP_ALGOS))
def test_grao_and_copg_on_two_zero3_processes_match_one_process(algo, cache_dir, tmp_path, tiny_path):
    for layout in ("single", "zero3"):
        launch(layout, cache_dir, tmp_path / layout, settings=GROUP_ALGOS[algo])
    got, want = metrics(tmp_path / "zero3"), metrics(tmp_path / "single")
    assert sorted(got) == sorted(want) == [1, 2]
    # Per-function reward spreads are the mean of the ranks' spreads (documented in
    # rollout_metrics_over_ranks); the trained-on reward/std is computed over the global batch.
    approximate = lambda k: k != "reward/std" and k.endswith(("/std", "_std"))  # noqa: E731
    compared = [k for k in want[1] if isinstance(want[1][k], float) and not approximate(k)
                and not k.startswith(("time/", "tokens_per_s", "micro_batches", "train/forward_tokens"))]
    assert {"loss", "grad_norm", "reward/mean"} <= set(compared)
    for step in want:
        for name in compared:
            assert got[step][name] == pytest.approx(want[step][name], rel=1e-4, abs=1e-6), (step, name)
    assert all(want[s]["grad_norm"] > 0 for s in want)  # not vacuous
    for name, tensor in final_weights(tmp_path / "single").items():
        torch.testing.assert_close(final_weights(tmp_path / "zero3")[name], tensor, rtol=0, atol=1e-5, msg=name)
