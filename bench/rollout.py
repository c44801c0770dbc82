"""Rollout throughput: VLLMEngine vs HFEngine (and make_engine("auto")) on the same prompts.

    .venv/bin/python bench/rollout.py                      # tiny and qwen2-40m, 16 prompts x 8 x 32 tokens
    .venv/bin/python bench/rollout.py --models qwen2-40m --rounds 3
    .venv/bin/python bench/rollout.py --lora qwen2-40m     # LoRA sync: merge+reload vs vLLM adapters

Each measurement runs in a fresh process, so every engine gets the same thread setup (vLLM's CPU
worker changes the process's torch threads) and nothing is shared between them; the engines of a
model alternate over `--rounds` rounds, so background load hits them alike. Per process: one
warm-up generate, then `--reps` timed ones; tokens/s = generated tokens (EOS included) / seconds.
Prints a table and writes bench/results/rollout.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUESTIONS = [
    "Angle A = 30, angle B = 60. Find angle C.", "2 + 2 =", "Name a prime above 10.", "Spell 'cat' backwards.",
    "What is 7 * 8?", "Triangle sides 3, 4, 5: area?", "Sort: 3 1 2", "Is 91 prime?",
    "Convert 0.5 to a fraction.", "Next: 1 1 2 3 5", "Half of 46?", "Square root of 144?",
    "Circle radius 2: area?", "Write x in words.", "What is 10 - 13?", "Largest of 4, 9, 2?",
]


def worker(model: str, engine_kind: str, prompts: int, n: int, tokens: int, reps: int, cache_dir: str) -> dict:
    """Build one engine, warm it up, time `reps` generate calls. Runs inside a fresh process."""
    import torch

    from align.demo import resolve_model_path
    from align.models import load_tokenizer
    from align.rollout import SamplingSettings, chat_prompt_ids, choose_engine, make_engine
    from align.rollout.weights import checkpoint_num_params

    path = resolve_model_path(model, cache_dir)
    tok = load_tokenizer(path)
    ids = [chat_prompt_ids(tok, [{"role": "user", "content": q}]) for q in (QUESTIONS * 4)[:prompts]]
    start = time.perf_counter()
    engine = make_engine(engine_kind, path, dtype="float32")
    startup = time.perf_counter() - start
    engine.generate(ids[:2], 2, SamplingSettings(max_tokens=4, seed=0))  # warm-up
    rates = []
    for rep in range(reps):
        start = time.perf_counter()
        groups = engine.generate(ids, n, SamplingSettings(max_tokens=tokens, seed=100 + rep))
        seconds = time.perf_counter() - start
        rates.append(sum(len(c.token_ids) for g in groups for c in g) / seconds)
    return {
        "model": model, "params": checkpoint_num_params(path), "engine": engine_kind,
        "picked": type(engine).__name__ if engine_kind == "auto" else None,
        "auto_choice": choose_engine(path), "startup_s": round(startup, 2),
        "tok_per_s": [round(r, 1) for r in rates], "torch_threads": torch.get_num_threads(),
    }


def lora_worker(model: str, prompts: int, n: int, tokens: int, reps: int, cache_dir: str) -> dict:
    """Cost of one LoRA update + rollout, two ways: merge into the base weights and reload them
    (VLLMEngine.sync_from), or hand vLLM the adapter (saved to disk, new LoRARequest id each update)."""
    import tempfile

    import torch

    from align.demo import resolve_model_path
    from align.models import apply_lora, load_model, load_tokenizer
    from align.rollout import SamplingSettings, VLLMEngine, chat_prompt_ids

    path = resolve_model_path(model, cache_dir)
    tok = load_tokenizer(path)
    ids = [chat_prompt_ids(tok, [{"role": "user", "content": q}]) for q in (QUESTIONS * 4)[:prompts]]
    peft_model = apply_lora(load_model(path), r=16, alpha=32)
    settings = SamplingSettings(max_tokens=tokens, seed=0)

    def bump_adapter() -> None:  # stands in for an optimizer step
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.add_(torch.randn_like(param) * 0.01)

    def timed_generate(generate) -> tuple[float, int]:
        start = time.perf_counter()
        count = generate()
        return time.perf_counter() - start, count

    engine = VLLMEngine(path)
    engine.generate(ids[:2], 2, SamplingSettings(max_tokens=4))
    merged = []
    for _ in range(reps):
        bump_adapter()
        sync = engine.sync_from(peft_model, verify=False).seconds
        gen, count = timed_generate(lambda: sum(len(c.token_ids) for g in engine.generate(ids, n, settings) for c in g))
        merged.append({"sync_s": sync, "generate_s": gen, "tokens": count})
    engine.close()

    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    threads, set_threads = torch.get_num_threads(), torch.set_num_threads
    llm = LLM(model=path, dtype="float32", enforce_eager=True, kv_cache_memory_bytes=256 << 20, seed=0,
              enable_chunked_prefill=False, enable_lora=True, max_lora_rank=16, max_loras=1)
    torch.set_num_threads = set_threads  # the same thread set-up as VLLMEngine gives itself
    torch.set_num_threads(threads)
    params = SamplingParams(n=n, max_tokens=tokens, logprobs=0)
    adapter = []
    with tempfile.TemporaryDirectory() as folder:
        for rep in range(reps):
            bump_adapter()
            start = time.perf_counter()
            peft_model.save_pretrained(f"{folder}/v{rep}")
            save = time.perf_counter() - start
            request = LoRARequest(f"v{rep}", rep + 1, f"{folder}/v{rep}")
            gen, count = timed_generate(lambda: sum(
                len(c.token_ids) for r in llm.generate([{"prompt_token_ids": p} for p in ids], params,
                                                       use_tqdm=False, lora_request=request) for c in r.outputs))  # noqa: B023 (called at once)
            adapter.append({"sync_s": save, "generate_s": gen, "tokens": count})
    return {"model": model, "merged_reload": merged, "vllm_lora_adapter": adapter, "torch_threads": torch.get_num_threads()}


def run_worker(args, model: str, engine_kind: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", model, engine_kind, "--prompts", str(args.prompts), "--n", str(args.n),
           "--tokens", str(args.tokens), "--reps", str(args.reps), "--cache-dir", args.cache_dir]
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "TORCHDYNAMO_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{model}/{engine_kind} worker failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny", "qwen2-40m"])
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm", "auto"])
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cache-dir", default="~/.cache/align")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "rollout.json"))
    parser.add_argument("--lora", metavar="MODEL", help="instead: compare LoRA sync by merge+reload vs vLLM adapters")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "ENGINE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind = args.worker[1]
        job = lora_worker(args.worker[0], args.prompts, args.n, args.tokens, args.reps, args.cache_dir) if kind == "lora" \
            else worker(*args.worker, args.prompts, args.n, args.tokens, args.reps, args.cache_dir)
        print(json.dumps(job))
        return

    load_before = os.getloadavg()
    if args.lora:
        out = args.out.replace("rollout.json", "rollout_lora.json")
        job = run_worker(args, args.lora, "lora")
        for way in ("merged_reload", "vllm_lora_adapter"):
            per = [(r["sync_s"], r["generate_s"], r["tokens"] / r["generate_s"]) for r in job[way]]
            print(f"{way:<18} sync " + " ".join(f"{a:.3f}s" for a, _, _ in per) + "  generate "
                  + " ".join(f"{b:.2f}s ({c:.0f} tok/s)" for _, b, c in per))
        job["loadavg_before"], job["loadavg_after"] = load_before, os.getloadavg()
        Path(out).write_text(json.dumps(job, indent=1) + "\n")
        print(f"wrote {out}")
        return
    runs = [run_worker(args, model, kind) for model in args.models for _ in range(args.rounds) for kind in args.engines]
    summary = []
    print(f"{'model':<11} {'params':>10} {'engine':<6} {'tok/s median':>12}  {'all reps':<40} startup")
    for model in args.models:
        for kind in args.engines:
            mine = [r for r in runs if r["model"] == model and r["engine"] == kind]
            rates = [x for r in mine for x in r["tok_per_s"]]
            row = {"model": model, "params": mine[0]["params"], "engine": kind, "median_tok_per_s": statistics.median(rates),
                   "tok_per_s": rates, "startup_s": [r["startup_s"] for r in mine], "picked": mine[0]["picked"]}
            summary.append(row)
            label = kind if kind != "auto" else f"auto({'vllm' if row['picked'] == 'VLLMEngine' else 'hf'})"
            print(f"{model:<11} {row['params']:>10,} {label:<10} {row['median_tok_per_s']:>8.0f}  "
                  f"{' '.join(f'{x:.0f}' for x in rates):<40} {' '.join(f'{s:.1f}s' for s in row['startup_s'])}")
        by_kind = {r["engine"]: r["median_tok_per_s"] for r in summary if r["model"] == model}
        if "hf" in by_kind and "vllm" in by_kind:
            print(f"{model}: vLLM / HF = {by_kind['vllm'] / by_kind['hf']:.2f}x")
    result = {
        "workload": {"prompts": args.prompts, "n": args.n, "max_tokens": args.tokens, "dtype": "float32",
                     "reps_per_process": args.reps, "rounds": args.rounds},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg()},
        "summary": summary, "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out} (load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
