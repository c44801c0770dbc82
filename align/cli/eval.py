"""`align eval model=PATH [data.*=...] [rollout.*=...] [eval.k=N]`: held-out accuracy of any model folder."""

from __future__ import annotations

import json

from align.algorithms import algorithm_class, load_config
from align.data.holdout import evaluation_rows
from align.demo import resolve_model_path
from align.models import load_tokenizer
from align.rollout import make_engine
from align.runtime.precision import resolve_dtype
from align.training.evaluation import eval_rewards, evaluate_engine


def main(argv: list[str]) -> dict[str, float]:
    """`align eval model=PATH [data.*=...] [rollout.*=...] [eval.k=N]`: print and return the metrics."""
    model = next((a.split("=", 1)[1] for a in argv if a.startswith("model=")), None)
    argv = [a for a in argv if not a.startswith("model=")] + ([f"model.name={model}"] if model else [])
    cfg = load_config(argv)
    k = cfg.eval.k if any(a.startswith("eval.k=") for a in argv) else 4
    dataset = evaluation_rows(cfg)
    path = resolve_model_path(cfg.model.name, cfg.model.cache_dir)
    engine = make_engine(cfg.rollout.engine, path, dtype=resolve_dtype(cfg.model.dtype), seed=cfg.train.seed)
    accuracy, extra = eval_rewards(algorithm_class(cfg.algo)(cfg), cfg)
    metrics = evaluate_engine(engine, load_tokenizer(path), dataset, accuracy, cfg.rollout, k=k, seed=cfg.train.seed, extra=extra)
    print(json.dumps(metrics, indent=2))
    return metrics
