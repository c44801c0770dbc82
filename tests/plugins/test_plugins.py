"""Plug-ins from outside the package (CONTRIBUTING.md's two worked examples): an algorithm in a file
of the user's own, and a loss surrogate registered by one function and one line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from align.algorithms import algorithm_class, load_config
from align.algos import grpo_loss
from align.algos.surrogates import SURROGATES, Surrogate
from align.cli.explain import describe
from align.config import ConfigError
from align.telemetry.plots import read_metrics

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = Path(__file__).with_name("my_algo.py")


@pytest.fixture
def algo_file(tmp_path_factory) -> Path:
    """The example algorithm in a folder outside the repository, as a user would keep it."""
    folder = tmp_path_factory.mktemp("elsewhere")
    return Path(shutil.copy(EXAMPLE, folder / "my_algo.py"))


# ------------------------------------------------------------------ an algorithm outside the package
def test_an_algorithm_from_a_file_brings_its_own_section_and_changes_the_advantages(algo_file):
    cfg = load_config(["recipe=grpo_math", f"algo={algo_file}:ScaledGRPO", "scaled.scale=0.25"])
    assert cfg.scaled.scale == 0.25
    cls = algorithm_class(cfg.algo)
    assert cls.__name__ == "ScaledGRPO" and issubclass(cls, algorithm_class("grpo"))
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    valid = torch.ones_like(rewards, dtype=torch.bool)
    plain = algorithm_class("grpo")(load_config(["recipe=grpo_math"])).advantages(rewards, valid).completions
    scaled = cls(cfg).advantages(rewards, valid).completions
    assert torch.allclose(scaled, 0.25 * plain) and plain.abs().sum() > 0


def test_a_plugin_without_a_config_class_takes_free_form_algo_options(algo_file):
    cfg = load_config(["recipe=grpo_math", f"algo={algo_file}:CountingGRPO", "algo_options.every=3"])
    assert cfg.algo_options == {"every": 3}
    with pytest.raises(ConfigError, match="unknown config key 'algo_options.every'"):
        load_config(["recipe=grpo_math", "algo_options.every=3"])  # a built-in algorithm has no such section


def test_bad_plugin_specs_are_one_line_errors(algo_file, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([f"algo={tmp_path}/nowhere.py:X"])
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        load_config([f"algo={algo_file}:Nope"])
    with pytest.raises(ConfigError, match="not a subclass of align.Algorithm"):
        load_config(["algo=json:JSONDecoder"])
    with pytest.raises(ConfigError, match="registered algorithms: copg, gcpo, grao, grpo, salt"):
        load_config(["algo=grpoo"])


def test_explain_describes_the_plugin_and_its_section(algo_file):
    cfg = load_config(["recipe=grpo_math", f"algo={algo_file}:ScaledGRPO", "scaled.scale=0.25"])
    text = describe(cfg, 10**6, 100, 64, 2, "float32")
    assert "GRPO whose advantages are scaled by a constant" in text and "scaled: scale=0.25" in text


def test_a_plugin_trains_through_accelerate_launch_and_resumes(algo_file, tmp_path, cache_dir):
    run = tmp_path / "run"
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--num_processes", "1", "--cpu"]
    args = [*launch, "align/train.py", "recipe=grpo_math", f"algo={algo_file}:ScaledGRPO", "scaled.scale=2.0",
            "train.steps=2", "train.batch_size=8", "rollout.num_generations=4", "rollout.max_tokens=8",
            "rollout.engine=hf", "log.console=false", "log.report_to=[]", "log.save_every=1",
            f"model.cache_dir={cache_dir}", f"log.run_dir={run}"]
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True, text=True, timeout=600)
    metrics = read_metrics(run / "metrics.jsonl")  # null (a NaN logged) reads as NaN
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2] and (run / "final" / "config.json").exists()
    assert "scaled:\n  scale: 2.0" in (run / "config.yaml").read_text()
    resumed = subprocess.run([*args[:-1], f"log.run_dir={run}", "resume=latest", "train.steps=3"], cwd=ROOT,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]


# ------------------------------------------------------------------------- adding a loss option
def unclipped_token_loss(logp, old_logp, adv_tok, *, mask, is_weights):
    """The importance-weighted policy gradient with no trust region: l = -A * rho (no clip at all)."""
    ratio = torch.exp(logp - old_logp.detach())
    adv = adv_tok if adv_tok.dim() == 2 else adv_tok.unsqueeze(-1).expand_as(logp)
    loss_tok = -adv * ratio
    if is_weights is not None:
        loss_tok = loss_tok * is_weights.detach()
    return loss_tok, {"ratio": ratio.detach()}


@pytest.fixture
def unclipped(monkeypatch):
    # the one registry line, as it would read in align/algos/surrogates.py (reads: the loss.* keys it takes)
    monkeypatch.setitem(SURROGATES, "unclipped", Surrogate(unclipped_token_loss, "-A * ratio, no clip", reads=()))


def test_a_registered_surrogate_is_a_config_value_and_changes_the_gradient(unclipped):
    logp = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-1.5, -1.0]])  # token 0: ratio e^0.5 > 1.2 (clipped by PPO), token 1: ratio 1
    mask = torch.ones(1, 2)
    grads = {}
    for name in ("clip", "unclipped"):
        loss, metrics = grpo_loss(logp, old, torch.tensor([1.0]), mask, surrogate=name, eps_high=0.2)
        grads[name] = torch.autograd.grad(loss, logp)[0]
    assert grads["clip"][0, 0] == 0 and grads["unclipped"][0, 0] < 0  # PPO drops the clipped token; this keeps it
    assert torch.allclose(grads["clip"][0, 1], grads["unclipped"][0, 1])  # ratio 1: the same policy gradient
    cfg = load_config(["recipe=grpo_math", "loss.surrogate=unclipped", "loss.eps_high=0.28"])
    text = describe(cfg, 10**6, 100, 64, 2, "float32")
    assert "surrogate: unclipped: -A * ratio, no clip" in text
    assert "loss.eps_high=0.28 has no effect here: loss.surrogate=unclipped reads " in text  # it reads no clip bound


def test_an_unregistered_surrogate_lists_the_registered_ones():
    with pytest.raises(ConfigError, match="loss.surrogate='unclipped' is not registered; registered surrogates: cispo, clip, sapo, vespo"):
        load_config(["recipe=grpo_math", "loss.surrogate=unclipped"])
