"""Supervised warm start of the tiny built-in model on the geometry task's completion format.

RL on a randomly initialised model gets no reward to learn from, so the embedded GCPO demo starts
from a short supervised run: plain next-token loss on completion tokens only, over reference
solutions that use the aux style and the direct style with equal probability in EVERY family.
The warm-started model thus writes both styles everywhere, and it is the RL phase that has to
find out per family which one earns reward.

The result is saved in the ordinary Hugging Face format next to the base model's cache folder
(transformers and vLLM load it like any checkpoint) and is deterministic for a seed. The
built-in name `tiny-geometry` (`tiny-geometry@SEED`) resolves to it, building it on first use.

Calibration (600 steps x 64 examples, lr 3e-3; 800 held-out problems x 4 samples at temperature 1.0,
measured with this code on a GPU in float32): accuracy 35% overall, pass@4 63%; where aux hurts,
direct beats aux (supplement 88% vs 0%, alternate angle 91% vs 58%); where it helps, aux is
slightly ahead in two families (isosceles 22% vs 14%, rectangle 24% vs 17%) and level in two.
Longer warm starts widen the "helps" gap (2400 steps: third angle 96% vs 83%, isosceles 40% vs
1%) but saturate accuracy (68%), leaving RL little to do.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from align.data.geometry import FAMILIES, problem_pool
from align.models.saving import save_pretrained_atomically
from align.models.tiny import spec_hash, tiny_model_path

# Bump when the task generator or the training recipe changes in a way the config does not show,
# so that stale cached builds are not reused.
WARM_START_VERSION = 2  # 2: trained on the 'sft' split, disjoint from RL's 'train'


@dataclass(frozen=True)
class WarmStartConfig:
    """Hyper-parameters of the geometry warm start; every field enters the cache key."""

    seed: int = 0
    # Calibrated (see the module doc): ~35% sampled held-out accuracy at 600 steps.
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    aux_fraction: float = 0.5  # share of training solutions written in the aux style
    base_preset: str = "tiny"


def warm_start_key(config: WarmStartConfig) -> str:
    """A short hash of everything that determines the warm-started weights."""
    spec = json.dumps([WARM_START_VERSION, asdict(config), spec_hash(config.base_preset, config.seed)], sort_keys=True)
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def warm_start_path(cache_dir: str | os.PathLike, config: WarmStartConfig) -> Path:
    """Where the warm start for `config` is (or will be) cached."""
    return Path(cache_dir).expanduser() / "models" / f"tiny-geometry-seed{config.seed}-{warm_start_key(config)}"


def encode_sft_example(tokenizer, prompt_messages: list[dict], completion: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for one example; labels are -100 on prompt tokens, so only the
    completion (ending with the eos token, which teaches the model to stop) carries loss."""
    text = tokenizer.apply_chat_template(prompt_messages, add_generation_prompt=True, tokenize=False)
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return prompt_ids + completion_ids, [-100] * len(prompt_ids) + completion_ids


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: input_ids, attention_mask, labels, each [B, T]."""
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def sft_examples(tokenizer) -> dict[str, list[tuple[list[int], list[int]]]]:
    """Every sft-split problem of every family (never RL's 'train' ones), encoded in both styles.

    Returns {family: [direct_0, aux_0, direct_1, aux_1, ...]}: problem j's direct and aux examples
    sit at 2j and 2j+1, so the trainer can draw family, problem and style independently.
    """
    examples: dict[str, list[tuple[list[int], list[int]]]] = {}
    for name, family in FAMILIES.items():
        encoded = []
        for params in problem_pool(name, "sft"):
            problem = family.render(params)
            prompt = [{"role": "user", "content": problem.question}]
            encoded.append(encode_sft_example(tokenizer, prompt, problem.solution_direct))
            encoded.append(encode_sft_example(tokenizer, prompt, problem.solution_aux))
        examples[name] = encoded
    return examples


def draw_batch(examples: dict[str, list], config: WarmStartConfig, generator: torch.Generator) -> list:
    """`batch_size` examples: family uniformly (so small families are not drowned out), then a
    problem of it uniformly, then the aux style with probability `aux_fraction`."""
    names = list(examples)
    families = torch.randint(len(names), (config.batch_size,), generator=generator).tolist()
    uniforms = torch.rand(config.batch_size, 2, generator=generator).tolist()
    batch = []
    for family_index, (u_problem, u_style) in zip(families, uniforms):
        pool = examples[names[family_index]]
        problem = min(int(u_problem * (len(pool) // 2)), len(pool) // 2 - 1)
        batch.append(pool[2 * problem + (1 if u_style < config.aux_fraction else 0)])
    return batch


def train_warm_start(model, tokenizer, config: WarmStartConfig, log_every: int = 50) -> list[float]:
    """Train `model` in place; returns the loss of every step."""
    examples = sft_examples(tokenizer)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.98))

    def lr_factor(step: int) -> float:  # linear warm-up, then cosine decay to 10%
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.train()
    losses = []
    for step in range(config.steps):
        batch = collate(draw_batch(examples, config, generator), tokenizer.pad_token_id)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log_every and (step + 1) % log_every == 0:
            print(f"warm start step {step + 1}/{config.steps} loss {sum(losses[-log_every:]) / log_every:.4f}",
                  flush=True)
    model.eval()
    return losses


def build_geometry_warm_start(cache_dir: str | os.PathLike, seed: int = 0, steps: int = WarmStartConfig.steps,
                              overwrite: bool = False, **overrides) -> Path:
    """Warm-start the tiny model on the geometry task and cache it; returns the model folder.

    `overrides` are other WarmStartConfig fields. An existing cached build with the same
    configuration is reused unless `overwrite`. The folder is written atomically.
    """
    from align.models.loading import load_model, load_tokenizer

    unknown = set(overrides) - set(WarmStartConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown warm-start option(s) {sorted(unknown)}; valid: {sorted(WarmStartConfig.__dataclass_fields__)}")
    config = WarmStartConfig(seed=seed, steps=steps, **overrides)
    out_dir = warm_start_path(cache_dir, config)
    if (out_dir / "config.json").exists() and not overwrite:
        return out_dir
    base = tiny_model_path(cache_dir, config.base_preset, config.seed)
    tokenizer = load_tokenizer(str(base))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = load_model(str(base))
        losses = train_warm_start(model, tokenizer, config)
    # Temp sibling + rename: a crash or a concurrent builder never leaves a half-written model.
    summary = {"config": asdict(config), "version": WARM_START_VERSION, "families": list(FAMILIES),
               "final_loss": sum(losses[-20:]) / min(20, len(losses))}
    return save_pretrained_atomically(model, tokenizer, out_dir, {"warm_start.json": json.dumps(summary, indent=2)})


def geometry_warm_start_path(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """The default warm start for `seed` (the built-in name `tiny-geometry@seed`), built on first use."""
    return build_geometry_warm_start(cache_dir, seed=seed)


def sample_geometry_completions(model, tokenizer, rows: list[dict], samples_per_prompt: int = 1,
                                max_new_tokens: int = 48, temperature: float = 1.0, seed: int = 0,
                                batch_size: int = 256) -> list[list[str]]:
    """Sampled completions (text, special tokens dropped), `samples_per_prompt` per row, with HF generate."""
    texts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    flat = [t for t in texts for _ in range(samples_per_prompt)]
    outputs: list[str] = []
    torch.manual_seed(seed)
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    for start in range(0, len(flat), batch_size):
        batch = tokenizer(flat[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        with torch.no_grad():
            generated = model.generate(**batch, do_sample=True, temperature=temperature, top_p=1.0, top_k=0,
                                       max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                       eos_token_id=tokenizer.eos_token_id)
        new_tokens = generated[:, batch["input_ids"].shape[1]:]
        outputs += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [outputs[i * samples_per_prompt : (i + 1) * samples_per_prompt] for i in range(len(rows))]


def geometry_style_report(rows: list[dict], completions: list[list[str]]) -> dict[str, dict[str, float]]:
    """Per family (and "all"): accuracy, aux usage rate, accuracy with and without aux, pass@k.

    "With aux" = the completion attempts a construction (an <aux> tag), valid or not: the
    split GCPO's contrastive mask makes.
    """
    from rewards.geometry import answers_match, uses_aux
    from rewards.format import extract_answer_tag

    stats: dict[str, dict[str, list]] = {}
    for row, samples in zip(rows, completions):
        for key in (row["family"], "all"):
            entry = stats.setdefault(key, {"correct": [], "aux": [], "pass": []})
            flags = []
            for text in samples:
                answer = extract_answer_tag(text)
                correct = bool(answer) and answers_match(answer, row["answer"])
                flags.append(correct)
                entry["correct"].append(correct)
                entry["aux"].append(uses_aux(text))
            entry["pass"].append(any(flags))

    def mean(values) -> float:
        return sum(values) / len(values) if values else float("nan")

    report = {}
    for key, entry in stats.items():
        with_aux = [c for c, a in zip(entry["correct"], entry["aux"]) if a]
        without = [c for c, a in zip(entry["correct"], entry["aux"]) if not a]
        report[key] = {"accuracy": mean(entry["correct"]), "aux_rate": mean(entry["aux"]),
                       "acc_with_aux": mean(with_aux), "acc_without_aux": mean(without),
                       "pass_at_k": mean(entry["pass"]), "n": len(entry["correct"])}
    return report
