"""`python -m align sample recipe=NAME [model=PATH] [key=value ...] --out FILE [--prompts N]`.

Samples rollout.num_generations completions for each of the first N training prompts (in the
run's seeded order) with the recipe's model (or `model=PATH`, e.g. a run's `final/`), scores them
with the recipe's algorithm (its reward functions, GCPO's composition, GRAO's judge...) and writes
the offline rows file CoPG trains from (docs/OFFLINE.md): one JSON line per completion with
prompt, completion, completion_ids, reward, finish_reason and the prompt's other dataset columns.
Completions no reward applied to are left out.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

from align.algorithms import algorithm_class, load_config
from align.config import ConfigError
from align.data import load_prompt_dataset
from align.demo import resolve_model_path
from align.models import load_tokenizer
from align.rollout import SamplingSettings, make_engine
from align.runtime.precision import resolve_dtype
from align.sources.prompts import PromptStream, encode_prompt


def main(argv: list[str]) -> Path:
    parser = argparse.ArgumentParser(prog="python -m align sample", add_help=False)
    parser.add_argument("--out", required=True, help="the .jsonl file to write")
    parser.add_argument("--prompts", type=int, default=64, help="how many training prompts to sample")
    parser.add_argument("--chunk", type=int, default=64, help="prompts per engine call")
    flags, rest = parser.parse_known_args(argv)
    model = next((a.split("=", 1)[1] for a in rest if a.startswith("model=")), None)
    rest = [a for a in rest if not a.startswith("model=")] + ([f"model.name={model}"] if model else [])
    cfg = load_config(rest)
    g = cfg.rollout.num_generations
    if g < 2:
        raise ConfigError(f"rollout.num_generations={g}: offline rows need >= 2 completions per prompt")
    if flags.prompts < 1:
        raise ConfigError(f"--prompts {flags.prompts}: must be >= 1")

    d, r = cfg.data, cfg.rollout
    dataset = load_prompt_dataset(d.source, d.split, prompt_column=d.prompt_column, answer_column=d.answer_column,
                                  system_prompt=d.system_prompt, **d.options)
    path = resolve_model_path(cfg.model.name, cfg.model.cache_dir)
    tokenizer = load_tokenizer(path)
    engine = make_engine(r.engine, path, dtype=resolve_dtype(cfg.model.dtype), seed=cfg.train.seed)
    algorithm = algorithm_class(cfg.algo)(cfg)
    rows = PromptStream(dataset, cfg.train.seed).next_rows(flags.prompts)
    out = Path(flags.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with out.open("w") as f:
        for start in range(0, len(rows), flags.chunk):
            chunk = rows[start : start + flags.chunk]
            sampling = SamplingSettings(max_tokens=r.max_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                        stop=list(r.stop), seed=cfg.train.seed + start)
            groups = engine.generate([encode_prompt(tokenizer, row["prompt"]) for row in chunk], g, sampling)
            flat = [c for group in groups for c in group]
            chat = isinstance(chunk[0]["prompt"], list)
            scores = algorithm.score(
                [row["prompt"] for row in chunk for _ in range(g)],
                [[{"role": "assistant", "content": c.text}] if chat else c.text for c in flat],
                {k: [row[k] for row in chunk for _ in range(g)] for k in chunk[0] if k != "prompt"},
                [c.token_ids for c in flat], g, trainer_state=SimpleNamespace(global_step=0),
            )
            for i, c in enumerate(flat):
                p, j = divmod(i, g)
                if not scores.valid[p, j]:
                    continue
                row = chunk[p]
                extra = {k: v for k, v in row.items() if k not in ("prompt", "completion", "completion_ids", "reward")}
                f.write(json.dumps({"prompt": row["prompt"], "completion": c.text, "completion_ids": c.token_ids,
                                    "reward": float(scores.rewards[p, j]), "finish_reason": c.finish_reason, **extra}) + "\n")
                written += 1
    engine.close()
    print(f"wrote {written} rows ({len(rows)} prompts x {g} completions) to {out}")
    return out
