"""GRAO, online CoPG and offline CoPG: a few steps each through `accelerate launch`, on the tiny default model.

Offline CoPG trains from a rows file that `python -m align sample` wrote: no engine, no generation
and no weight sync during training (no generate/sync timers, no weight versions in its metrics).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from align.telemetry.plots import read_metrics

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DIGITS = ROOT / "tests" / "trainers" / "rewards_for_tests.py"
SMALL = ["model.name=tiny", "rollout.engine=hf", "rollout.num_generations=4", "train.batch_size=8", "rollout.max_tokens=12",
         "log.console=false", "log.report_to=[]", "log.eval_every=0", "train.lr=1e-3",
         "train.steps=2", "log.save_every=0"]


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def launch(cache_dir: str, run_dir: Path, *args: str) -> list[dict]:
    run([str(BIN / "accelerate"), "launch", "--num_processes", "1", "--cpu", "align/train.py", *SMALL, *args,
         f"model.cache_dir={cache_dir}", f"log.run_dir={run_dir}"])
    return read_metrics(run_dir / "metrics.jsonl")  # null (a NaN logged) reads as NaN


def moved(run_dir: Path, tiny_path: str) -> float:
    from safetensors.torch import load_file

    from align.models import load_model

    initial = load_model(tiny_path).state_dict()
    return max((t - initial[n]).abs().max().item() for n, t in load_file(run_dir / "final" / "model.safetensors").items())


def test_grao_run_imitates_the_reference_and_trains(cache_dir, tiny_path, tmp_path):
    rows = launch(cache_dir, tmp_path / "grao", "recipe=grao_geometry", "data.options.size=32")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        # the untrained tiny model is never right, so every sample loses to the worked solution:
        # the pooled advantages make y's positive and the imitation term carries the gradient
        assert r["reward/judge/mean"] == -1.0 and r["adv/answer_mean"] > 0 and r["j_imitate"] != 0
        assert r["grad_norm"] > 0 and r["sync/probe_diff"] < 1e-3
    assert rows[-1]["sync/weight_version"] == 2
    assert rows[-1]["jimit_mean"] > rows[0]["jimit_mean"]  # the reference answers became more likely
    assert moved(tmp_path / "grao", tiny_path) > 1e-4


def test_online_copg_run_moves_away_from_the_reference(cache_dir, tiny_path, tmp_path):
    rows = launch(cache_dir, tmp_path / "copg", "recipe=copg_geometry", "data.source=arith", "data.options.size=32",
                  f"reward.functions=[{DIGITS}:digit_fraction]", "reward.weights=null")
    assert rows[0]["log_ratio_mean"] == 0.0  # step 1: pi = pi_ref
    assert rows[-1]["log_ratio_mean"] != 0.0 and rows[-1]["num_groups"] == 2  # 2 prompts, all groups used
    assert all(r["grad_norm"] > 0 for r in rows) and rows[-1]["sync/weight_version"] == 2


def test_sample_writes_rows_that_offline_copg_trains_on_without_generating(cache_dir, tiny_path, tmp_path):
    out = tmp_path / "rows.jsonl"
    run([sys.executable, "-m", "align", "sample", "recipe=grpo_math", f"reward.functions=[{DIGITS}:digit_fraction]",
         "reward.weights=null", "model.name=tiny", "rollout.engine=hf", "rollout.num_generations=3", "train.batch_size=6", "rollout.max_tokens=12",
         "data.options.size=32", f"model.cache_dir={cache_dir}", "--out", str(out), "--prompts", "6"])
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(written) == 18 and {"prompt", "completion", "completion_ids", "reward", "answer"} <= set(written[0])
    assert len({r["prompt"] for r in written}) == 6 and len({r["reward"] for r in written}) > 1

    rows = launch(cache_dir, tmp_path / "offline", "recipe=copg_offline", f"data.source={out}",
                  "rollout.num_generations=3", "train.batch_size=6")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert not any(k.startswith(("sync/", "time/generate", "weight_version")) for k in r), sorted(r)
        assert r["offline/members_mean"] == 3 and r["num_groups"] == 2
    assert rows[-1]["log_ratio_mean"] != 0.0 and all(r["grad_norm"] > 0 for r in rows)
    assert moved(tmp_path / "offline", tiny_path) > 1e-4
    # the rows' rewards are what was trained on (not rescored): each step's mean is that of 2 prompts' rows
    by_prompt: dict[str, list[float]] = {}
    for r in written:
        by_prompt.setdefault(json.dumps(r["prompt"]), []).append(r["reward"])
    means = [sum(v) / len(v) for v in by_prompt.values()]
    pairs = [(a + b) / 2 for i, a in enumerate(means) for b in means[i + 1 :]]
    for r in rows:
        assert min(abs(r["reward/offline_reward/mean"] - p) for p in pairs) < 1e-5


def test_grao_hh_tiny_runs_on_an_llm_judge_that_never_parses(cache_dir, tmp_path):
    """recipe=grao_hh_tiny: HH-format dialogues, chosen replies as references, the untrained tiny policy
    as its own pairwise judge. Its verdicts never parse: every sample is unjudged and counted, and the
    run finishes instead of stopping at the first malformed verdict."""
    rows = launch(cache_dir, tmp_path / "hh", "recipe=grao_hh_tiny", "model.name=tiny")
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["reward/unscorable_frac"] == 1.0 and r["reward/judge:self/unparseable_frac"] == 1.0
        assert r["grad_norm"] == 0.0  # nothing judged, nothing trained on
