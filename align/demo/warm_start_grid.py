"""Supervised warm start of the tiny built-in model on the grid environment (`model.name=tiny-grid`).

RL from a random model earns no reward, so agents start from a short imitation run on NOISY
demonstrations: at each turn the demonstrator takes a shortest safe move with probability
`expert_prob` and a uniformly random move otherwise (wandering, walking into walls, sometimes into
the pit). The warm-started policy thus succeeds on part of the tasks and wanders on the others,
which leaves RL (and step-level credit) something to fix. Demonstrations use training tasks only.

Episodes are encoded exactly as `run_episodes` renders them at RL time (chat prompt, action
tokens + EOS, the chat template's observation turn), with loss on action tokens only. The result
is cached in the Hugging Face format, keyed by every setting below; same seed -> same weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from align.demo.warm_start import collate, single_threaded
from align.envs.grid import MOVES, GridEnv
from align.models.loading import load_model, load_tokenizer
from align.models.saving import save_pretrained_atomically
from align.models.tiny import spec_hash, tiny_model_path
from align.rollout.multiturn import chat_observation_formatter
from align.rollout.prompts import chat_prompt_ids

GRID_WARM_START_VERSION = 2  # 2: observations as offsets (align/envs/grid.py)


@dataclass(frozen=True)
class GridWarmStartConfig:
    seed: int = 0
    # Small on purpose (a ~0.8M-parameter model, ~200-token episodes): 200 x 16 episodes, ~2 minutes
    # on one thread; the loss reaches ~0.55 (the noisy expert's own entropy is close to that).
    steps: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    expert_prob: float = 0.6  # share of demonstrated moves that are optimal; the rest are random
    size: int = 4
    max_turns: int = 6
    base_preset: str = "tiny"


def grid_warm_start_path_for(cache_dir: str | os.PathLike, config: GridWarmStartConfig) -> Path:
    spec = json.dumps([GRID_WARM_START_VERSION, asdict(config), spec_hash(config.base_preset, config.seed)], sort_keys=True)
    key = hashlib.sha256(spec.encode()).hexdigest()[:12]
    return Path(cache_dir).expanduser() / "models" / f"tiny-grid-seed{config.seed}-{key}"


def demo_episode(tokenizer, format_observation, task: dict, config: GridWarmStartConfig, rng: random.Random):
    """(input_ids, labels) of one noisy-expert episode, tokenized as run_episodes would."""
    env = GridEnv(config.size)
    ids = chat_prompt_ids(tokenizer, [{"role": "user", "content": env.reset(task)}])
    labels = [-100] * len(ids)
    for turn in range(config.max_turns):
        expert = env.expert_moves()
        move = rng.choice(expert) if expert and rng.random() < config.expert_prob else rng.choice(list(MOVES))
        action = tokenizer(move, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids, labels = ids + action, labels + action
        observation, _, done = env.step(move)
        if done or turn + 1 == config.max_turns:
            break
        obs_ids = format_observation(observation, True)
        ids, labels = ids + obs_ids, labels + [-100] * len(obs_ids)
    return ids, labels


def train_grid_warm_start(model, tokenizer, config: GridWarmStartConfig) -> list[float]:
    tasks = GridEnv.tasks("train", config.seed, config.size)
    format_observation = chat_observation_formatter(tokenizer)
    rng = random.Random(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 10) * (1 - s / config.steps * 0.9))
    model.train()
    losses = []
    with single_threaded():  # the same build on any thread count (see align/demo/warm_start.py)
        for _ in range(config.steps):
            batch = [demo_episode(tokenizer, format_observation, rng.choice(tasks), config, rng) for _ in range(config.batch_size)]
            batch = {k: v.to(model.device) for k, v in collate(batch, tokenizer.pad_token_id).items()}
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
    model.eval()
    return losses


def build_grid_warm_start(cache_dir: str | os.PathLike, seed: int = 0, overwrite: bool = False, **overrides) -> Path:
    """Warm-start the tiny model on the grid environment and cache it; returns the model folder."""
    config = GridWarmStartConfig(seed=seed, **overrides)
    out_dir = grid_warm_start_path_for(cache_dir, config)
    if (out_dir / "config.json").exists() and not overwrite:
        return out_dir
    base = tiny_model_path(cache_dir, config.base_preset, config.seed)
    tokenizer = load_tokenizer(str(base))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = load_model(str(base))
        losses = train_grid_warm_start(model, tokenizer, config)
    summary = {"config": asdict(config), "version": GRID_WARM_START_VERSION, "final_loss": sum(losses[-20:]) / min(20, len(losses))}
    return save_pretrained_atomically(model, tokenizer, out_dir, {"warm_start.json": json.dumps(summary, indent=2)})


def grid_warm_start_path(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """The built-in name `tiny-grid` (`tiny-grid@seed`), built on first use."""
    return build_grid_warm_start(cache_dir, seed=seed)


# SALT's harder setting (recipes/salt_grid_large.yaml): a 6x6 room, against 4x4. The noisy demonstrator
# walks up to 12 moves (the recipe allows 8), wandering more before it arrives, so the trajectories of
# one task cross the same cells more often: more shared (state, action) edges for the graph, and more
# steps that GRPO blames alike.
LARGE_GRID = {"size": 6, "max_turns": 12}


def large_grid_warm_start_path(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """The built-in name `tiny-grid-large` (`tiny-grid-large@seed`), built on first use."""
    return build_grid_warm_start(cache_dir, seed=seed, **LARGE_GRID)
