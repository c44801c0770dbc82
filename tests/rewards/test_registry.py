"""The reward registry: built-in names, file:function and module:function specs, and its errors."""

from __future__ import annotations

import pytest

import rewards
from rewards import RewardSpecError, get_reward_function, register, registered_names
from rewards.format import think_answer_format
from rewards.math import math_accuracy

BUILTIN = {"math_accuracy", "math_accuracy_relaxed", "think_answer_format", "answer_tag_format", "length_reward", "code_passes_tests"}


def test_builtin_names_resolve_to_their_functions():
    assert BUILTIN <= set(registered_names())
    assert get_reward_function("math_accuracy") is math_accuracy
    assert get_reward_function("think_answer_format") is think_answer_format


def test_unknown_name_is_one_line_with_closest_names_and_the_path_form():
    with pytest.raises(RewardSpecError) as info:
        get_reward_function("math_acuracy")
    message = str(info.value)
    assert "\n" not in message
    assert "'math_acuracy'" in message and "did you mean math_accuracy" in message
    assert "path/to/file.py:function" in message


def test_file_spec_loads_the_function_from_that_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text("def shout(prompts, completions, **kwargs):\n    return [float(c.isupper()) for c in completions]\n")
    fn = get_reward_function(f"{path}:shout")
    assert fn(prompts=["p", "p"], completions=["YES", "no"]) == [1.0, 0.0]


def test_module_spec_loads_a_function_from_an_importable_module():
    assert get_reward_function("rewards.length:length_reward") is get_reward_function("length_reward")


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("/no/such/dir/file.py:f", "does not exist"),
        ("rewards.math:math_acuracy", "did you mean math_accuracy"),
        ("no_such_package_xyz.mod:f", "not importable"),
        ("rewards.math:DEFAULT_NOTHING", "has no attribute"),
        (":f", "must look like"),
    ],
)
def test_bad_specs_give_one_line_errors(spec, expected):
    with pytest.raises(RewardSpecError) as info:
        get_reward_function(spec)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_register_adds_a_name_and_refuses_a_different_function_under_it():
    @register("test_registry_constant_one")
    def constant_one(prompts, completions, **kwargs):
        return [1.0] * len(completions)

    assert get_reward_function("test_registry_constant_one") is constant_one
    with pytest.raises(RewardSpecError, match="already registered"):

        @register("test_registry_constant_one")
        def other(prompts, completions, **kwargs):
            return [0.0] * len(completions)


def test_geometry_module_is_in_the_lazy_builtin_list():
    assert "rewards.geometry" in rewards.BUILTIN_MODULES
