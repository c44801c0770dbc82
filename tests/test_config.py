"""Config: recipes + overrides -> typed Config; bad input is one line naming the key and the fix."""

import pytest

from align.config import Config, ConfigError, all_keys, config_to_yaml
from align.algorithms import load_config, validate


def one_line_error(argv) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(argv)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_overrides_are_typed_and_win_over_recipe(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("algo: gcpo\ntrain:\n  steps: 7\n  lr: 3.0e-7\n")
    cfg = load_config([f"recipe={recipe}", "train.steps=3", "loss.beta=0.04", "rollout.stop=[a,b]"])
    assert isinstance(cfg, Config)
    assert (cfg.recipe, cfg.algo, cfg.train.steps, cfg.train.lr) == ("mine", "gcpo", 3, 3e-7)
    assert cfg.loss.beta == 0.04 and cfg.rollout.stop == ["a", "b"]


def test_unknown_key_names_closest_valid_key():
    assert "unknown config key 'train.stpes'" in one_line_error(["train.stpes=3"])
    assert "did you mean 'train.steps'" in one_line_error(["train.stpes=3"])
    assert "did you mean 'loss.beta'" in one_line_error(["los.beta=1"])


def test_unknown_key_inside_a_recipe_file(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  setps: 3\n")
    msg = one_line_error([f"recipe={recipe}"])
    assert "train.setps" in msg and str(recipe) in msg and "train.steps" in msg


def test_wrong_type_names_the_key():
    msg = one_line_error(["train.steps=many"])
    assert "train.steps" in msg and "many" in msg


def test_batch_not_divisible_by_group_size_suggests_a_fix():
    msg = one_line_error(["train.batch_size=20", "rollout.num_generations=8"])
    assert "train.batch_size=20" in msg and "rollout.num_generations=8" in msg and "train.batch_size=16" in msg


def test_prompts_not_divisible_by_processes():
    cfg = load_config(["train.batch_size=24", "rollout.num_generations=8"])
    with pytest.raises(ConfigError, match="not divisible by 2 processes; use train.batch_size=48"):
        validate(cfg, world_size=2)


def test_bad_choice_lists_the_options():
    msg = one_line_error(["loss.agg=mean"])
    assert "loss.agg" in msg and "seq_mean_token_mean" in msg


def test_unknown_recipe_suggests_closest():
    assert "gcpo_geometry" in one_line_error(["recipe=gcpo_geometri"])


def test_not_key_value():
    assert "is not key=value" in one_line_error(["train.steps"])


def test_every_recipe_in_the_repo_loads():
    from align.config import RECIPES_DIR

    recipes = sorted(RECIPES_DIR.glob("*.yaml"))
    assert recipes
    for path in recipes:
        cfg = load_config([f"recipe={path.stem}"])
        assert cfg.recipe == path.stem


def test_the_smollm2_recipe_fits_30_cpu_minutes_and_evaluates_only_at_its_ends():
    """Issue 30 item 5: the defaults are what bench/learning_smollm2.py measured (README "A real model")."""
    from align.data.word_problems import generate_word_problem_rows

    cfg = load_config(["recipe=grpo_smollm2"])
    assert cfg.train.max_minutes == 30 and cfg.train.steps >= 100  # the clock stops it, not the step count
    assert cfg.log.eval_every >= cfg.train.steps  # step 0 and the last step: no evaluation inside the budget
    assert cfg.lora.enabled and cfg.rollout.temperature == 0.5
    families = cfg.data.options["families"]
    assert sorted(families) == ["add", "groups", "share", "take_away"]  # the one-step families
    held_out = generate_word_problem_rows("test", 256, families=families)
    assert len(held_out) == 256 and {r["family"] for r in held_out} == set(families)
    assert load_config(["recipe=grpo_smollm2", "data.options.size=16"]).data.options == {"families": families, "size": 16}


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(["train.steps=5", "lora.enabled=true"])
    saved = tmp_path / "config.yaml"
    saved.write_text(config_to_yaml(cfg))
    assert load_config([f"recipe={saved}"]).train.steps == 5
    assert "lora.enabled" in all_keys()


def test_task_options_are_free_form(tmp_path):
    recipe = tmp_path / "task.yaml"
    recipe.write_text("data:\n  source: arith\n  options:\n    size: 50\n")
    cfg = load_config([f"recipe={recipe}", "data.options.seed=3"])
    assert cfg.data.options == {"size": 50, "seed": 3}
    # An environment's keyword arguments too (they were refused as unknown keys, in a recipe and on the command line).
    recipe.write_text("algo: salt\nrollout:\n  source: episodes\nenv:\n  name: grid\n  options:\n    size: 5\n")
    cfg = load_config([f"recipe={recipe}", "env.options.seed=3", "reward.functions=[]", "reward.weights=null"])
    assert cfg.env.options == {"size": 5, "seed": 3}


def test_generating_ahead_is_refused_where_it_cannot_work_each_error_naming_the_key():
    from align.algorithms import load_config

    server = ["rollout.engine=server", "rollout.servers=[http://127.0.0.1:1]"]
    cases = {
        "must be an integer >= 0": ["recipe=grpo_math", "rollout.max_staleness=-1"],
        "needs an engine that generates beside the trainer: rollout.engine=server": ["recipe=grpo_math", "rollout.engine=hf",
                                                                                     "rollout.max_staleness=1"],
        "rollout.source=offline does not": ["recipe=copg_offline", *server, "rollout.max_staleness=1"],
        "loss.tis_cap, which is null": ["recipe=grpo_math", *server, "rollout.max_staleness=1", "loss.tis_cap=null"],
        "GRAO's loss has no importance ratio for bypass": ["recipe=grao_geometry", *server, "rollout.max_staleness=1",
                                                            "loss.off_policy_correction=bypass"],
        "'loss.off_policy_correction' is 'tis'": ["recipe=grpo_math", "loss.off_policy_correction=tis"],
    }
    for message, argv in cases.items():
        with pytest.raises(ConfigError, match=message):
            load_config(argv)
    cfg = load_config(["recipe=grpo_math", *server, "rollout.max_staleness=2", "loss.off_policy_correction=bypass"])
    assert (cfg.rollout.max_staleness, cfg.loss.off_policy_correction) == (2, "bypass")
    cfg = load_config(["recipe=grao_geometry", *server, "rollout.max_staleness=1"])  # decoupled: weighted samples
    assert cfg.rollout.max_staleness == 1
    cfg = load_config(["recipe=salt_grid", *server, "rollout.max_staleness=1"])  # whole episodes played ahead
    assert (cfg.rollout.source, cfg.rollout.max_staleness) == ("episodes", 1)


def test_ratio_options_are_inert_with_one_update_unless_pi_old_is_the_behaviour_policy():
    from align.config import inert_ratio_options

    one = load_config(["recipe=grpo_math", "loss.delta=1.5"])
    assert inert_ratio_options(one) == ["warning: loss.delta=1.5 has no effect here: with train.updates_per_batch=1 the ratio "
                                        "pi_theta / pi_old is exactly 1 at the only update (set train.updates_per_batch > 1 "
                                        "for it to act)"]
    # GRAO and CoPG do not read it at all: said so, not silently
    assert inert_ratio_options(one, has_ratio=False) == ["warning: loss.delta=1.5 has no effect here: algo=grpo does not read "
                                                         "it (its loss has no importance ratio)"]
    assert inert_ratio_options(load_config(["recipe=grpo_math", "loss.delta=1.5", "train.updates_per_batch=2"])) == []
    # bypass: pi_old is the engine's mu, so the ratio moves even at the only update
    assert inert_ratio_options(load_config(["recipe=grpo_math", "loss.delta=1.5", "loss.off_policy_correction=bypass"])) == []


def test_options_of_another_surrogate_are_said_to_be_inert():
    from align.algos import SURROGATES
    from align.config import inert_ratio_options

    cfg = load_config(["recipe=grpo_math", "loss.surrogate=sapo", "loss.cispo_cap=2.0", "loss.sapo_tau_neg=3.0",
                       "train.updates_per_batch=2"])
    assert inert_ratio_options(cfg, True, SURROGATES["sapo"].reads) == [
        "warning: loss.cispo_cap=2.0 has no effect here: loss.surrogate=sapo reads loss.sapo_tau_pos, loss.sapo_tau_neg, "
        "loss.ratio_level"]
    # VESPO's parameters act through the engine weights even at ratio 1: not said to be inert
    vespo = load_config(["recipe=grpo_math", "loss.surrogate=vespo", "loss.vespo_k_pos=1.0"])
    assert inert_ratio_options(vespo, True, SURROGATES["vespo"].reads) == []
    cispo = load_config(["recipe=grpo_math", "loss.surrogate=cispo", "loss.cispo_cap=2.0"])
    assert "loss.cispo_cap=2.0 has no effect here: with train.updates_per_batch=1" in inert_ratio_options(
        cispo, True, SURROGATES["cispo"].reads)[0]
