"""SALT and GRPO on agent episodes through the one loop, on the tiny default model (in process).

- the loop's loss on a captured episode batch equals `align.algos` applied independently (step
  advantages from salt_step_advantages / steps_to_tokens, GRPO token loss on action tokens only);
- observation tokens get zero gradient and stay out of importance correction;
- SALT's token advantages merge shared edges (salt.history, salt.dedup, salt.base change them);
- episodes played ahead (rollout.max_staleness >= 1) survive a checkpoint with their step keys;
- config combinations that cannot run are one-line errors.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from align import algos
from align.algos import GroupBatch
from align.config import ConfigError
from align.algorithms import load_config
from tests.trainers.test_algorithms import make_trainer, padded, unpadded_logp

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "tests" / "envs" / "envs_for_tests.py"
EPISODES = ["recipe=salt_grid", "model.name=tiny", f"env.name={ECHO}:Echo", "env.max_turns=3", "rollout.max_tokens=4",
            "log.eval_every=0", "train.micro_batch_tokens=150"]


def captured(tmp_path, cache_dir, *args):
    trainer = make_trainer(tmp_path, cache_dir, *EPISODES, *args)
    batch = trainer.source.collect(0, 4, defaultdict(float)).batch
    plan = trainer._plan(batch)
    batch = trainer._advantages(batch, metrics := {})
    return trainer, batch, plan, metrics


def loop_loss(trainer, batch, plan, retain_logp=False):
    trainer.model.zero_grad()
    total, logps = torch.zeros(()), []
    for i, mb in enumerate(plan.micro_batches):
        micro, _ = trainer._micro_batch(batch, mb, plan, i, with_entropy=False)
        if retain_logp:
            micro.logp.retain_grad()
            logps.append((mb, micro))
        loss, _ = trainer.algo.loss(micro)
        loss.backward()
        total += loss.detach()
    return total, logps


@pytest.mark.parametrize("algo", ["salt", "grpo"])
def test_loop_loss_on_an_episode_batch_equals_the_algos_functions(algo, tmp_path, cache_dir):
    trainer, batch, plan, metrics = captured(tmp_path, cache_dir, f"algo={algo}")
    G, P = batch.group_size, batch.num_prompts
    assert len(plan.micro_batches) > 1 and batch.rewards.std() > 0
    assert any(0 in m and 1 in m for m in batch.token_mask)  # episodes hold observation tokens
    got, _ = loop_loss(trainer, batch, plan)
    grads = [p.grad.clone() for p in trainer.model.parameters()]

    # Independently: per-sequence forwards, trajectory advantages, then SALT's step advantages.
    trainer.model.zero_grad()
    seq = [unpadded_logp(trainer.model, batch.prompt_ids[r // G], ids) for r, ids in enumerate(batch.completion_ids)]
    width = max(len(s) for s in seq)
    logp, length_mask = padded(seq, width)
    mask = length_mask * padded([torch.tensor(m, dtype=torch.float32) for m in batch.token_mask], width)[0]
    adv = algos.group_advantages(batch.rewards, batch.valid, baseline="mean", scale="std")
    if algo == "salt":
        ids = torch.full((P * G, width), -1, dtype=torch.long)
        for r, row in enumerate(batch.step_ids):
            ids[r, : len(row)] = torch.tensor(row)
        adv_tok = torch.cat([algos.steps_to_tokens(algos.salt_step_advantages(adv[p], batch.steps[p * G:(p + 1) * G]),
                                                   ids[p * G:(p + 1) * G]) for p in range(P)])
        assert metrics["salt/edges_per_group"] > 0 and "salt/sign_flip_frac" in metrics
    else:
        adv_tok = adv.reshape(-1)
    c = trainer.cfg.loss
    expected = algos.grpo_loss(logp, logp.detach(), adv_tok, mask, agg=c.agg, eps_low=c.eps_low, eps_high=c.eps_high)[0]
    expected.backward()
    torch.testing.assert_close(got, expected.detach(), atol=1e-5, rtol=1e-4)
    assert max(g.abs().max().item() for g in grads) > 0
    for g, p in zip(grads, trainer.model.parameters()):
        torch.testing.assert_close(g, p.grad, atol=1e-5, rtol=1e-3)


def test_observation_tokens_get_no_gradient_and_no_importance_weight(tmp_path, cache_dir):
    trainer, batch, plan, _ = captured(tmp_path, cache_dir)
    before, logps = loop_loss(trainer, batch, plan, retain_logp=True)
    for mb, micro in logps:
        for i, r in enumerate(mb.rows):
            n = len(batch.completion_ids[r])
            obs = torch.tensor(batch.token_mask[r]) == 0
            assert micro.logp.grad[i, :n][obs].abs().max() == 0
            assert micro.is_weights[i, :n][obs].eq(1).all()  # engine "log-probs" of env text ignored
    assert sum(micro.logp.grad.abs().sum() for _, micro in logps) > 0  # action tokens do get gradient
    # Garbage engine log-probs on observation tokens change nothing.
    noisy = replace(batch, engine_logprobs=[[lp if m else -50.0 for lp, m in zip(lps, mask)]
                                            for lps, mask in zip(batch.engine_logprobs, batch.token_mask)])
    after, _ = loop_loss(trainer, noisy, plan)
    torch.testing.assert_close(before, after)


def _toy_batch(steps, rewards):
    """One group; every trajectory's step t is one action token."""
    G = len(steps)
    ids = [[t for t in range(len(s))] for s in steps]
    return GroupBatch(prompt_ids=[[1]], completion_ids=[[5] * len(s) for s in steps],
                      rewards=torch.tensor([rewards], dtype=torch.float32), token_mask=[[1] * len(s) for s in steps],
                      step_ids=ids, steps=steps, advantages=None), G


@pytest.mark.parametrize("override", [[], ["salt.history=null"]])
def test_salt_token_advantages_merge_shared_steps(override):
    from align.algorithms.salt import SALT

    cfg = load_config(["recipe=salt_grid", *override])
    algo = SALT(cfg)
    steps = [[("s0", "e"), ("s1", "e")], [("s0", "e"), ("s1", "s")], [("s0", "e"), ("s2", "e")], [("s0", "w"), ("s1", "e")]]
    # Trajectory 3's reward differs from trajectory 0's, so sharing (s1, e) with it changes its advantage
    # (with equal rewards the graph and the prefix tree gave the same number and salt.history could be dead).
    batch, G = _toy_batch(steps, [0.0, 1.0, 1.0, 0.5])
    adv = algo.advantages(batch.rewards, batch.valid).completions
    assert adv[0][0] != adv[0][3]
    out, metrics = algo.token_advantages(batch.with_advantages(adv))
    a = adv[0].tolist()
    # trajectories 0,1,2 share (s0, e): mean of their advantages
    assert out.token_advantages[0][0] == pytest.approx((a[0] + a[1] + a[2]) / 3)
    assert out.token_advantages[3][0] == pytest.approx(a[3])  # a step no one else took keeps its A_i
    if override:  # prefix tree: (s1, e) after (s0, w) is not the same node as after (s0, e)
        assert out.token_advantages[3][1] == pytest.approx(a[3])
    else:  # graph: (s1, e) is shared by trajectories 0 and 3, whatever came before
        assert out.token_advantages[3][1] == pytest.approx((a[0] + a[3]) / 2)
    assert metrics["salt/merged_steps_per_group"] > 0 and metrics["salt/nodes_per_group"] >= 3
    # trajectory 0 failed (A < 0) but its first step is shared with two winners: its sign flips
    assert out.token_advantages[0][0] > 0 > a[0] and metrics["salt/sign_flip_frac"] > 0


def test_salt_base_and_dedup_change_the_advantages():
    from align.algorithms.salt import SALT

    steps = [[("s0", "e"), ("s0", "e")], [("s0", "e"), ("s1", "w")], [("s2", "n")]]
    batch, _ = _toy_batch(steps, [1.0, 0.0, 0.0])
    results = {}
    for args in ([], ["salt.base=rloo"], ["salt.dedup=false"]):
        algo = SALT(load_config(["recipe=salt_grid", *args]))
        adv = algo.advantages(batch.rewards, batch.valid).completions
        results[tuple(args)] = algo.token_advantages(batch.with_advantages(adv))[0].token_advantages
    assert results[()] != results[("salt.base=rloo",)]
    assert results[()] != results[("salt.dedup=false",)]
    rloo = algos.group_advantages(batch.rewards, batch.valid, baseline="loo", scale="none")[0]
    assert results[("salt.base=rloo",)][2] == [pytest.approx(rloo[2].item())]


def test_episode_config_errors():
    with pytest.raises(ConfigError, match="algo=salt needs multi-turn episodes: set rollout.source=episodes"):
        load_config(["recipe=grpo_math", "algo=salt"])
    with pytest.raises(ConfigError, match="rollout.source=episodes .* with algo=salt or algo=grpo, not algo=copg"):
        load_config(["recipe=salt_grid", "algo=copg"])
    with pytest.raises(ConfigError, match="salt.base.*choose one of grpo, rloo"):
        load_config(["recipe=salt_grid", "salt.base=ppo"])
    with pytest.raises(ConfigError, match="salt.history=-1"):
        load_config(["recipe=salt_grid", "salt.history=-1"])


def test_episodes_played_ahead_survive_a_checkpoint_with_their_step_keys(tmp_path, cache_dir):
    """Under rollout.max_staleness >= 1 the next steps' episodes go into the checkpoint as JSON. The
    grid's key of an invalid move is a tuple, which JSON would turn into an unhashable list: read
    back, the episodes, their keys and so SALT's step advantages are the ones played."""
    from align.envs import EnvError
    from align.sources.episodes import Played, episodes_to_batch

    trainer = make_trainer(tmp_path, cache_dir, "recipe=salt_grid", "model.name=tiny", "env.max_turns=2",
                           "log.eval_every=0")
    played, g = trainer.source.play(0, [0, 1]), trainer.cfg.rollout.num_generations
    assert any(isinstance(action, tuple) for keys in played.keys for _, action in keys)  # the untrained model's moves
    back = Played.from_json(json.loads(json.dumps(played.to_json())))
    assert back == played
    batch, again = episodes_to_batch(played, g, "grid"), episodes_to_batch(back, g, "grid")
    advantages = algos.group_advantages(batch.rewards + torch.arange(2 * g).view(2, g))  # with spread
    for p in range(2):
        rows = slice(p * g, (p + 1) * g)
        assert (algos.salt_step_advantages(advantages[p], again.steps[rows])
                == algos.salt_step_advantages(advantages[p], batch.steps[rows]))
    played.keys[0][0] = (frozenset({1}), "n")
    with pytest.raises(EnvError, match="returned a frozenset; .*return a str, int, float, bool, None or a tuple"):
        played.to_json()
