"""Every registered algorithm through the one loop, on the tiny default model.

- the loop's loss on a captured batch (padding, micro-batches of whole groups with their reference
  answers, global normalisers, advantages over the batch) equals the `align.algos` function applied
  to the same batch computed independently, sequence by sequence without padding, loss AND gradient;
- bad data is a one-line error naming the column, row or prompt;
- the registry lists its algorithms in the unknown-name error.
A few-step `accelerate launch` run of each new algorithm is in test_algorithms_e2e.py.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from align import algos
from align.config import ConfigError
from align.algorithms import load_config
from align.data import DatasetSourceError
from rewards.runner import RewardFunctionError

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "trainers" / "rewards_for_tests.py"
COMMON = ["model.name=tiny", "rollout.engine=hf", "rollout.num_generations=3", "train.batch_size=12",
          "rollout.max_tokens=10", "log.console=false", "log.report_to=[]",
          "log.eval_every=0", "train.micro_batch_tokens=120"]
# GCPO is GRPO's loss on other rewards (tests/trainers/test_gcpo.py covers its scoring).
RECIPES = {
    "grpo": ["recipe=grpo_math", "loss.beta=0.04", f"reward.functions=[{DIGITS}:digit_fraction]", "reward.weights=null",
             "data.options.size=32"],
    "grao": ["recipe=grao_geometry", "data.options.size=32"],
    "copg": ["recipe=copg_geometry", "data.source=arith", f"reward.functions=[{DIGITS}:digit_fraction]", "reward.weights=null",
             "data.options.size=32"],
}


def make_trainer(tmp_path, cache_dir, *args: str):
    from accelerate import Accelerator

    from align.algorithms import algorithm_class
    from align.training.loop import Trainer

    cfg = load_config([*COMMON, *args, f"model.cache_dir={cache_dir}", f"log.run_dir={tmp_path / 'run'}"])
    return Trainer(cfg, Accelerator(cpu=True), algorithm_class(cfg.algo)(cfg), tmp_path / "run")


def unpadded_logp(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """log p(completion_t | prompt, completion_<t) from one forward of the bare sequence."""
    if not completion:
        return torch.zeros(0)
    logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


def padded(rows: list[torch.Tensor], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    out, mask = torch.zeros(len(rows), width), torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        out[i, : len(row)], mask[i, : len(row)] = row, 1.0
    return out, mask


def reference_loss(trainer, batch, ref_model) -> torch.Tensor:
    """The step's loss straight from align.algos on the whole batch, each sequence forwarded alone."""
    cfg, model, G, P = trainer.cfg, trainer.model, batch.group_size, batch.num_prompts
    seq = [unpadded_logp(model, batch.prompt_ids[r // G], ids) for r, ids in enumerate(batch.completion_ids)]
    width = max(1, max(len(s) for s in seq))
    logp, mask = padded(seq, width)
    if cfg.algo in ("grpo", "gcpo"):
        c = cfg.loss
        ref = None
        if ref_model is not None:
            with torch.no_grad():
                ref = padded([unpadded_logp(ref_model, batch.prompt_ids[r // G], ids)
                              for r, ids in enumerate(batch.completion_ids)], width)[0]
        return algos.grpo_loss(logp, logp.detach(), batch.advantages.reshape(-1), mask, ref_logp=ref, beta=c.beta,
                               kl_kind=c.kl_kind, kl_clamp=c.kl_clamp, agg=c.agg, const_len=cfg.rollout.max_tokens)[0]
    if cfg.algo == "grao":
        answers = [unpadded_logp(model, batch.prompt_ids[p], batch.answer_ids[p]) for p in range(P)]
        logp_y, mask_y = padded(answers, max(len(a) for a in answers))
        return algos.grao_loss(logp.view(P, G, width), mask.view(P, G, width), logp_y, mask_y, batch.advantages,
                               batch.answer_advantages, beta=cfg.grao.beta, lam=cfg.grao.lam)[0]
    with torch.no_grad():
        ref = torch.stack([unpadded_logp(ref_model, batch.prompt_ids[r // G], ids).sum()
                           for r, ids in enumerate(batch.completion_ids)])
    return algos.copg_loss(torch.stack([s.sum() for s in seq]).view(P, G), ref.view(P, G), batch.rewards,
                           beta=cfg.copg.beta, valid=batch.valid)[0]


@pytest.mark.parametrize("algo", sorted(RECIPES))
def test_loop_loss_on_a_captured_batch_equals_the_algos_function(algo, tmp_path, cache_dir):
    trainer = make_trainer(tmp_path, cache_dir, *RECIPES[algo])
    timers = defaultdict(float)
    batch = trainer.source.collect(0, 4, timers).batch
    plan = trainer._plan(batch)
    batch = trainer._advantages(batch, {})
    assert len(plan.micro_batches) > 1  # the budget forces a split: the sum over micro-batches is what is compared
    if trainer.algo.needs.whole_groups:
        G = batch.group_size
        assert all(sorted({r // G for r in mb.rows}) == sorted(r // G for r in mb.rows[::G]) for mb in plan.micro_batches)
    if algo == "grao":
        assert batch.answer_ids is not None and batch.answer_advantages.abs().sum() > 0

    params = [p for p in trainer.model.parameters() if p.requires_grad]
    trainer.model.zero_grad()
    loop_loss = torch.zeros(())
    for i, mb in enumerate(plan.micro_batches):
        micro, _ = trainer._micro_batch(batch, mb, plan, i, with_entropy=False)
        loss, _ = trainer.algo.loss(micro)
        loss.backward()
        loop_loss += loss.detach()
    loop_grads = [p.grad.clone() for p in params]

    trainer.model.zero_grad()
    expected = reference_loss(trainer, batch, trainer.ref_model)
    expected.backward()
    torch.testing.assert_close(loop_loss, expected.detach(), atol=1e-5, rtol=1e-4)
    assert max(g.abs().max().item() for g in loop_grads) > 0  # not vacuous
    for got, p in zip(loop_grads, params):
        torch.testing.assert_close(got, p.grad, atol=1e-5, rtol=1e-3)


def test_grao_without_the_reference_column_names_it(tmp_path, cache_dir):
    with pytest.raises(DatasetSourceError, match="reference-answer column 'worked'.*set grao.reference_column") as err:
        make_trainer(tmp_path, cache_dir, "recipe=grao_geometry", "grao.reference_column=worked", "data.options.size=32")
    assert "\n" not in str(err.value)


def test_grao_judge_outside_minus_one_zero_one_names_the_completion(tmp_path):
    from align.algorithms.grao import GRAO

    judge = tmp_path / "judge.py"
    judge.write_text("def half(prompts, completions, reference, **kw):\n    return [1.0, 0.5][: len(completions)]\n")
    cfg = load_config(["recipe=grao_geometry", f"grao.judge={judge}:half", "reward.functions=[geometry_accuracy]",
                       "reward.weights=null"])
    algo = GRAO(cfg)
    with pytest.raises(RewardFunctionError, match=r"judge 'half' returned 0.5 for completion 1 \(prompt .*'q2'\)") as err:
        algo.score(["q1", "q2"], ["a", "b"], {"solution": ["y", "y"], "answer": ["1", "1"]}, [[1], [2]], 2)
    assert "\n" not in str(err.value)


def test_grao_unjudged_samples_are_left_out_and_counted_not_fatal(tmp_path):
    """An LLM judge's unparseable verdict is None: that sample gets advantage 0 and stays out of its
    group's statistics, the share is logged, and the run goes on (issue 17)."""
    from align.algorithms.grao import GRAO

    judge = tmp_path / "judge.py"
    judge.write_text("def some(prompts, completions, reference, **kw):\n"
                     "    return [{'a': 1.0, 'b': -1.0, 'c': None, 'd': 0.0}[c] for c in completions]\n")
    cfg = load_config(["recipe=grao_geometry", f"grao.judge={judge}:some", "reward.functions=[geometry_accuracy]",
                       "reward.weights=null"])
    algo = GRAO(cfg)
    scores = algo.score(["q1"] * 4, ["a", "b", "c", "d"], {"solution": ["y"] * 4, "answer": ["1"] * 4}, [[1]] * 4, 4)
    assert scores.valid.tolist() == [[True, True, False, True]]
    assert algo.batch_metrics(scores)["reward/unscorable_frac"] == 0.25
    adv = algo.advantages(scores.rewards, scores.valid)
    assert adv.completions[0, 2] == 0 and adv.completions[0, 0] > 0 > adv.completions[0, 1]
    # the statistics are those of the three judged samples and y (R(y) = 0), as if "c" never existed
    judged = algo.advantages(torch.tensor([[1.0, -1.0, 0.0]]), torch.ones(1, 3, dtype=torch.bool))
    torch.testing.assert_close(adv.completions[0, [0, 1, 3]], judged.completions[0])
    torch.testing.assert_close(adv.answers, judged.answers)


def test_grao_llm_judge_defaults_to_the_pairwise_template_and_refuses_pointwise():
    from align.algorithms.grao import GRAO

    algo = GRAO(load_config(["recipe=grao_geometry", "model.name=tiny", "grao.judge=judge:self"]))
    assert algo.judge.fn.options["template"] == "pairwise"
    with pytest.raises(ConfigError, match="template='pointwise'; GRAO needs verdicts -1/0/\\+1") as err:
        GRAO(load_config(["recipe=grao_geometry", "grao.judge=judge:self",
                          'reward.options={"judge:self": {template: pointwise}}']))
    assert "\n" not in str(err.value)


def test_grao_reward_options_for_neither_the_judge_nor_a_logged_function_are_an_error():
    from align.algorithms.grao import GRAO

    with pytest.raises(ConfigError, match="reward.options has 'judge:other'.*neither grao.judge") as err:
        GRAO(load_config(["recipe=grao_geometry", "grao.judge=judge:self",
                          'reward.options={"judge:other": {template: pairwise}}']))
    assert "\n" not in str(err.value)


def test_offline_rows_with_one_completion_per_prompt_stop_the_run(tmp_path, cache_dir):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "What is 1 + 1?", "completion": "2", "reward": 1.0}) + "\n"
                    + json.dumps({"prompt": "What is 2 + 2?", "completion": "4", "reward": 1.0}) + "\n")
    with pytest.raises(DatasetSourceError, match="prompt 'What is 1 \\+ 1\\?' has one row \\(row 0\\)"):
        make_trainer(tmp_path, cache_dir, "recipe=copg_offline", f"data.source={rows}")


def test_offline_source_needs_an_offline_algorithm_and_unknown_algo_lists_the_registry():
    with pytest.raises(ConfigError, match="rollout.source=offline needs an algorithm that trains from fixed rows \\(copg\\)"):
        load_config(["recipe=grpo_math", "rollout.source=offline"])
    with pytest.raises(ConfigError, match="unknown algo 'ppo'; registered algorithms: copg, gcpo, grao, grpo"):
        load_config(["algo=ppo"])
    with pytest.raises(ConfigError, match="copg.beta=0.0: must be > 0"):
        load_config(["recipe=copg_geometry", "copg.beta=0"])


def _micro(group_size: int, **extra):
    from align.algos import MicroBatch, Totals

    g = torch.Generator().manual_seed(0)
    B, T = 2 * group_size, 5
    return MicroBatch(logp=-torch.rand(B, T, generator=g), mask=torch.ones(B, T), advantages=torch.randn(B, generator=g),
                      rewards=torch.randn(B, generator=g), valid=torch.ones(B, dtype=torch.bool), group_size=group_size,
                      totals=Totals(num_tokens=B * T, num_seqs=B, num_prompts=2, num_groups=2), **extra)


@pytest.mark.parametrize("algo, key, value", [("grao", "beta", 0.9), ("grao", "lam", 0.1), ("copg", "beta", 0.7)])
def test_section_keys_change_the_loss(algo, key, value):
    """grao.beta, grao.lam and copg.beta reach the loss (each recipe key does something)."""
    from align.algorithms import algorithm_class

    recipe = {"grao": "grao_geometry", "copg": "copg_geometry"}[algo]
    extra = dict(answer_logp=-torch.rand(2, 4), answer_mask=torch.ones(2, 4), answer_advantages=torch.tensor([1.0, -0.5]))
    mb = _micro(3, **(extra if algo == "grao" else dict(ref_logp=-torch.rand(6, 5))))
    losses = [algorithm_class(algo)(load_config([f"recipe={recipe}", *o])).loss(mb)[0]
              for o in ([], [f"{algo}.{key}={value}"])]
    assert not torch.allclose(losses[0], losses[1])


def test_eval_source_is_what_evaluation_reads(tmp_path):
    """data.eval_source: offline rows train, a task evaluates; and nothing of the rows file is held out."""
    from align.data.holdout import evaluation_rows, training_rows

    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"prompt": f"q{i // 2}", "completion": str(i), "reward": i % 2}) + "\n"
                            for i in range(40)))
    cfg = load_config(["recipe=copg_offline", f"data.source={rows}", "data.eval_source=arith"])
    assert len(training_rows(cfg)) == 40
    assert evaluation_rows(cfg)[0]["prompt"].startswith("What is")
    other = load_config(["recipe=copg_offline", f"data.source={rows}", "data.eval_source=geometry"])
    assert isinstance(evaluation_rows(other)[0]["prompt"], list)  # geometry prompts are chat messages
