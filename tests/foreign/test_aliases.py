"""TRL 1.16 and verl names on the command line and in recipes: translated (key and value) or refused
with what the key is called here; fuzzy suggestions never swap one concept for another."""

from __future__ import annotations

from pathlib import Path

import pytest

from align.config import aliases
from align.config import ConfigError, all_keys
from align.algorithms import load_config

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(autouse=True)
def fresh_announcements():
    aliases._announced.clear()
    yield
    aliases._announced.clear()


def test_trl_keys_and_values_translate():
    cfg = load_config(["learning_rate=3e-6", "num_iterations=2", "max_completion_length=128", "loss_type=dapo",
                       "scale_rewards=batch", "use_peft=true", "lora_r=8", "max_steps=7", "lr_scheduler_type=linear",
                       "num_generations=4", "train.batch_size=16", "beta=0.04", "mask_truncated_completions=true"])
    assert (cfg.train.lr, cfg.train.updates_per_batch, cfg.rollout.max_tokens) == (3e-6, 2, 128)
    assert (cfg.loss.agg, cfg.loss.scale, cfg.lora.enabled, cfg.lora.r) == ("token_mean", "batch", True, 8)
    assert (cfg.train.steps, cfg.train.lr_schedule, cfg.rollout.num_generations) == (7, "linear", 4)
    assert cfg.loss.beta == 0.04 and cfg.loss.mask_truncated
    assert load_config(["max_staleness=2", "rollout.engine=server", "rollout.servers=[http://localhost:8000]"]).rollout.max_staleness == 2


@pytest.mark.parametrize("value, ours", [("group", "std"), ("true", "std"), ("batch", "batch"), ("none", "none"), ("false", "none")])
def test_scale_rewards_values(value, ours):
    assert load_config([f"scale_rewards={value}"]).loss.scale == ours


@pytest.mark.parametrize("value, surrogate, agg", [
    ("dapo", "clip", "token_mean"), ("grpo", "clip", "seq_mean_token_mean"), ("dr_grpo", "clip", "seq_sum_const"),
    ("bnpo", "clip", "token_mean"), ("luspo", "clip", "seq_mean_token_sum"), ("cispo", "cispo", "token_mean"),
    ("sapo", "sapo", "seq_mean_token_mean"), ("vespo", "vespo", "token_mean"),
])
def test_every_trl_loss_type_is_a_surrogate_and_an_aggregation(value, surrogate, agg):
    loss = load_config([f"loss_type={value}"]).loss
    assert (loss.surrogate, loss.agg) == (surrogate, agg)


def test_epsilon_high_is_cispos_absolute_cap_under_loss_type_cispo(tmp_path):
    """TRL reads epsilon_high as CISPO's eps_max (a bound on the weight itself), not as a clip bound."""
    for argv in (["loss_type=cispo", "epsilon_high=5.0"], ["epsilon_high=5.0", "loss_type=cispo"],
                 ["loss.surrogate=cispo", "epsilon_high=5.0"]):
        loss = load_config(argv).loss
        assert (loss.cispo_cap, loss.eps_high) == (5.0, 0.2), argv
    assert load_config(["loss_type=dapo", "epsilon_high=0.28"]).loss.eps_high == 0.28
    recipe = tmp_path / "cispo.yaml"
    recipe.write_text("loss_type: cispo\nepsilon_high: 4.0\n")
    assert load_config([f"recipe={recipe}"]).loss.cispo_cap == 4.0


def test_trl_entropy_and_reference_sync_keys_translate():
    loss = load_config(["top_entropy_quantile=0.2", "entropy_coef=0.01", "sync_ref_model=true", "beta=0.04",
                        "ref_model_mixup_alpha=0.5", "ref_model_sync_steps=64", "sapo_temperature_neg=2.0",
                        "vespo_k_pos=1.5"]).loss
    assert (loss.top_entropy_quantile, loss.entropy_coef, loss.ref_sync, loss.ref_sync_alpha, loss.ref_sync_every) == (
        0.2, 0.01, True, 0.5, 64)
    assert (loss.sapo_tau_neg, loss.vespo_k_pos) == (2.0, 1.5)


def test_verl_keys_and_values_translate_with_or_without_prefix():
    cfg = load_config(["actor_rollout_ref.actor.optim.lr=2e-6", "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
                       "actor.loss_agg_mode=token-mean", "actor_rollout_ref.rollout.n=4", "train.batch_size=16",
                       "actor_rollout_ref.actor.ppo_epochs=3", "actor_rollout_ref.rollout.temperature=0.7",
                       "actor_rollout_ref.actor.clip_ratio_high=0.28", "algorithm.norm_adv_by_std_in_grpo=false",
                       "actor_rollout_ref.model.lora_rank=8"])
    assert (cfg.train.lr, cfg.loss.kl_kind, cfg.loss.agg, cfg.rollout.num_generations) == (2e-6, "k3", "token_mean", 4)
    assert (cfg.train.updates_per_batch, cfg.rollout.temperature, cfg.loss.eps_high, cfg.loss.scale) == (3, 0.7, 0.28, "none")
    assert cfg.lora.enabled and cfg.lora.r == 8
    assert load_config(["actor_rollout_ref.rollout.top_k=-1"]).rollout.top_k == 0  # verl's "off"
    assert load_config(["actor.kl_loss_type=kl"]).loss.kl_kind == "k1"
    assert load_config(["actor.kl_loss_type=mse"]).loss.kl_kind == "k2"
    assert load_config(["actor.loss_agg_mode=seq-mean-token-sum-norm"]).loss.agg == "seq_sum_const"


def test_foreign_values_under_our_own_keys():
    assert load_config(["loss.agg=token-mean"]).loss.agg == "token_mean"
    assert load_config(["loss.kl_kind=low_var_kl"]).loss.kl_kind == "k3"
    assert load_config(["loss.scale=group"]).loss.scale == "std"


def test_a_specific_key_wins_over_a_broad_one_in_any_order():
    for argv in (["epsilon=0.3", "epsilon_high=0.28"], ["epsilon_high=0.28", "epsilon=0.3"]):
        cfg = load_config(argv)
        assert (cfg.loss.eps_low, cfg.loss.eps_high) == (0.3, 0.28), argv


def test_translation_is_said_once(capsys):
    load_config(["learning_rate=3e-6"])
    load_config(["learning_rate=4e-6"])
    err = capsys.readouterr().err
    assert err.count("'learning_rate' is train.lr=3e-6 here") == 1 and "4e-6" not in err


@pytest.mark.parametrize("arg, says", [
    ("loss_type=ppo", "accepted: dapo, bnpo, grpo, dr_grpo, luspo, cispo, sapo, vespo"),
    ("use_adaptive_entropy=true", "loss.entropy_coef is fixed"),
    ("actor.kl_loss_type=abs", "loss.kl_kind takes one of k1, k2, k3, k3+"),
    ("per_device_train_batch_size=4", "train.batch_size = completions per optimizer step"),
    ("data.train_batch_size=128", "train.batch_size = data.train_batch_size x rollout.num_generations"),
    ("actor_rollout_ref.actor.use_kl_loss=true", "loss.beta > 0"),
    ("custom_reward_function.path=my.py", "reward.functions=[verl:PATH.py:compute_score]"),
    ("vllm_importance_sampling_mode=sequence_mask", "accepted: token_truncate"),
    ("scale_rewards=sometimes", "accepted: group, true, batch, none, false"),
])
def test_foreign_key_without_equivalent_says_what_to_write(arg, says):
    with pytest.raises(ConfigError) as err:
        load_config([arg])
    assert says in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("key, never", [
    ("num_iterations", "rollout.num_generations"), ("max_completion_length", "gcpo.use_length"),
    ("loss_type", "loss.tis_cap"), ("scale_rewards", "gcpo.aux_reward"), ("use_peft", "gcpo.use_length"),
    ("actor.optim.lr", "rollout.stop"),
])
def test_no_dangerous_suggestions(key, never):
    # The misleading suggestions: these now translate, and fuzzy matching would not offer them either.
    assert aliases.suggest_key(key, all_keys()) != never
    assert aliases.lookup(key) is not None


@pytest.mark.parametrize("typo, meant", [("train.stpes", "train.steps"), ("num_iteration", "num_iterations"),
                                         ("learning_rat", "learning_rate"), ("kl_loss_type", "actor.kl_loss_type"),
                                         ("loss.tis_cp", "loss.tis_cap")])
def test_typos_get_the_near_spelling(typo, meant):
    with pytest.raises(ConfigError, match=f"did you mean '{meant}'"):
        load_config([f"{typo}=1"])


def test_unrelated_key_gets_no_suggestion():
    with pytest.raises(ConfigError) as err:
        load_config(["num_rollout_workers=4"])
    assert "did you mean" not in str(err.value) and "--help" in str(err.value)


def test_recipe_with_trl_and_nested_verl_keys(tmp_path):
    recipe = tmp_path / "foreign.yaml"
    recipe.write_text("learning_rate: 3.0e-6\nloss_type: dr_grpo\nnum_generations: 4\ntrain:\n  batch_size: 16\n"
                      "actor_rollout_ref:\n  actor:\n    kl_loss_type: mse\n    clip_ratio_high: 0.28\n")
    cfg = load_config([f"recipe={recipe}"])
    assert (cfg.train.lr, cfg.loss.agg, cfg.rollout.num_generations, cfg.train.batch_size) == (3e-6, "seq_sum_const", 4, 16)
    assert (cfg.loss.kl_kind, cfg.loss.eps_high) == ("k2", 0.28)
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss_type: ppo\n")
    with pytest.raises(ConfigError, match="'loss_type=ppo' \\(TRL\\): value not understood"):
        load_config([f"recipe={bad}"])


def test_readme_table_is_generated_from_the_alias_table():
    assert aliases.markdown_table() in README.read_text(), "README is stale: paste align.config.aliases.markdown_table() into it"


def test_every_alias_target_is_a_real_key():
    for name, alias in aliases.TABLE.items():
        for target in alias.targets:
            assert target in all_keys(), (name, target)


def test_explain_accepts_and_translates_foreign_names(cache_dir):
    from align.cli.explain import main as explain

    text = explain(["recipe=grpo_math", f"model.cache_dir={cache_dir}", "num_iterations=2", "loss_type=dapo",
                    "actor_rollout_ref.actor.kl_loss_coef=0.04", "actor_rollout_ref.actor.kl_loss_type=mse"])
    assert "2 update(s) per rollout batch" in text and "aggregation token_mean" in text
    assert "KL: beta=0.04 k2 in the loss" in text
