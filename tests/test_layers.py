"""The package's layers (pyproject.toml [tool.importlinter], docs/DESIGN.md): every subpackage has its
place, import-linter finds no import upward and no circle, and an algorithm's rules live in it."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from align.algorithms import load_config
from align.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def contract_layers() -> set[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    layers = next(c for c in config["contracts"] if c["type"] == "layers")["layers"]
    return {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}


def test_every_subpackage_and_module_of_align_is_in_a_layer():
    children = {f"align.{p.stem if p.suffix else p.name}" for p in (ROOT / "align").iterdir()
                if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert children - contract_layers() == set(), "add the new module to the layers in pyproject.toml"
    assert "rewards" in contract_layers()


def test_import_linter_contracts_are_kept():
    proc = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_the_config_layer_imports_nothing_above_it():
    # a fresh interpreter: importing the config layer loads no algorithm, loop or reward module
    code = ("import sys, align.config; bad = [m for m in sys.modules if m.startswith(('align.algorithms', "
            "'align.training', 'rewards', 'align.rollout'))]; print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_gcpo_refuses_reward_functions_it_would_not_use():
    with pytest.raises(ConfigError, match="algo=gcpo builds its reward from gcpo.accuracy_reward"):
        load_config(["recipe=gcpo_geometry", "reward.functions=[math_accuracy,length_reward]"])
    assert load_config(["recipe=gcpo_geometry"]).algo == "gcpo"  # the recipe itself sets none


def test_a_section_of_another_algorithm_is_named_on_the_command_line_and_left_out_of_a_recipe(capsys):
    with pytest.raises(ConfigError, match="'gcpo.eps' is an option of algo=gcpo, and this run is algo=grpo"):
        load_config(["recipe=grpo_math", "gcpo.eps=0.1"])
    cfg = load_config(["recipe=salt_grid", "algo=grpo"])
    assert not hasattr(cfg, "salt") and "the 'salt' section is algo=salt's" in capsys.readouterr().err


def test_the_printed_config_shows_the_active_algorithms_section_only():
    from align.config import config_to_yaml

    text = config_to_yaml(load_config(["recipe=gcpo_geometry"]))
    assert "\ngcpo:\n" in text and "\ngrao:" not in text and "\ncopg:" not in text and "\nsalt:" not in text
