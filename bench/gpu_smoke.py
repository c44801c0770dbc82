"""GPU smoke check of the training path in bf16: rollouts, trainer logprobs, loss, step, verified sync.

    python bench/gpu_smoke.py [--engine hf|vllm] [--model qwen2-40m] [--lora] [--steps 3]

`--engine vllm` samples with align's colocated VLLMEngine (the path `rollout.engine=vllm` trains
on) and logs which vLLM model runner is active (V2 on CUDA with Triton, seeded differently from
V1); where vLLM is not installed it prints one line saying so and exits 0. First it measures the probe difference at weight version 0 (engine and trainer both hold the
checkpoint) and exits with status 1 when it exceeds the per-dtype default tolerance
(DEFAULT_PROBE_TOLERANCE, calibrated HF against HF), so a lent GPU answers whether that constant
holds for its kernels. tests/test_gpu_smoke.py runs it on CPU at a tiny shape so it cannot rot.

The HF mode needs only torch, transformers, peft and accelerate (what a bare GPU box has): it drives the same
pieces the loop uses (HFEngine, pad_sequences/completion_logits, align.algos.grpo_loss,
sync_from) without the config/data/reward layers, with a synthetic reward (digit fraction).
Prints one JSON line per step: engine/trainer logprob mismatch in bf16, probe difference after the
update, how many engine tensors the sync compared bit for bit, loss, step time, peak memory.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


VLLM_MISSING = "skipped: --engine vllm needs vLLM, which is not installed here (pip install 'align[vllm-cuda]')"


def vllm_missing() -> bool:
    """True (after printing the one-line skip) where vLLM is not installed; bench/gpu_w1.py shares it."""
    if importlib.util.find_spec("vllm") is None:
        print(VLLM_MISSING)
        return True
    return False


def vllm_runtime(engine) -> dict:
    """The vLLM release and the model runner a VLLMEngine samples with ("v2" on CUDA with Triton,
    "v1" on the CPU build): what a figure measured on a lent GPU has to name."""
    import vllm

    return {"vllm": vllm.__version__, "model_runner": engine.model_runner}


def main() -> None:
    from align import algos
    from align.demo import resolve_model_path
    from align.models import apply_lora, load_model, load_tokenizer
    from align.rollout.base import DEFAULT_PROBE_TOLERANCE, SamplingSettings
    from align.rollout.hf_engine import HFEngine
    from align.runtime.batching import completion_logits, pad_sequences

    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", choices=["hf", "vllm"], default="hf")
    parser.add_argument("--model", default="qwen2-40m")
    parser.add_argument("--lora", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--g", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--cache-dir", default="/tmp/align-cache")
    parser.add_argument("--tolerance", type=float, default=None,
                        help="version-0 probe difference above which to fail (default: DEFAULT_PROBE_TOLERANCE[dtype])")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" else "float32"
    path = resolve_model_path(args.model, args.cache_dir)
    tok = load_tokenizer(path)
    model = load_model(path, dtype, device)
    if args.lora:
        model = apply_lora(model, r=16, alpha=32)
    if args.engine == "vllm":
        if vllm_missing():
            return
        from align.rollout.vllm_engine import VLLMEngine

        max_len = min(1024, getattr(model.config, "max_position_embeddings", 1024))
        engine = VLLMEngine(path, dtype=dtype, seed=0, max_model_len=max_len, max_num_seqs=args.prompts * args.g)
        runner = vllm_runtime(engine)
    else:
        engine = HFEngine(path, dtype=dtype, device=device, seed=0)
        runner = {}
    tolerance = DEFAULT_PROBE_TOLERANCE[dtype] if args.tolerance is None else args.tolerance
    diff_v0 = engine.calibrate(model)
    print(json.dumps({"check": "probe_diff_at_version_0", "engine": args.engine, **runner, "device": device,
                      "dtype": dtype, "model": args.model, "lora": args.lora, "probe_diff_v0": diff_v0,
                      "tolerance": tolerance, "ok": diff_v0 <= tolerance}), flush=True)
    if not diff_v0 <= tolerance:
        sys.exit(f"probe difference at weight version 0 is {diff_v0:.3g} > tolerance {tolerance:g} ({dtype}): "
                 "DEFAULT_PROBE_TOLERANCE is too tight for this machine's kernels")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4 if not args.lora else 1e-3)
    prompts = [tok(f"Q{i}: 12+{i}=", add_special_tokens=False)["input_ids"] for i in range(args.prompts)]
    for step in range(args.steps):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        groups = engine.generate(prompts, args.g, SamplingSettings(max_tokens=args.max_tokens, seed=step))
        flat = [c for g in groups for c in g]
        rewards = torch.tensor([sum(ch.isdigit() for ch in c.text) / max(len(c.text), 1) for c in flat]).view(-1, args.g)
        adv = algos.group_advantages(rewards).reshape(-1)
        t_gen = time.perf_counter() - t0
        seqs = pad_sequences([c.prompt_ids for c in flat], [c.token_ids for c in flat], list(range(len(flat))),
                             tok.pad_token_id, device)
        logp = algos.token_logprobs(completion_logits(model, seqs), seqs.completion_ids)
        engine_lp = torch.zeros_like(logp)
        for i, c in enumerate(flat):
            engine_lp[i, : len(c.logprobs)] = torch.tensor(c.logprobs, device=device)
        mask = seqs.completion_mask
        loss, m = algos.grpo_loss(logp, logp.detach(), adv.to(device), mask,
                                  is_weights=algos.tis_weights(logp.detach(), engine_lp, 2.0))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        report = engine.sync_from(model)
        mismatch = ((logp.detach() - engine_lp).abs() * mask).sum() / mask.sum()
        print(json.dumps({
            "step": step, "device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "dtype": dtype,
            "model": args.model, "lora": args.lora, "loss": round(loss.item(), 5),
            "engine_trainer_abs_logp_diff": round(mismatch.item(), 5), "probe_diff": round(report.probe_diff, 5),
            "weight_version": report.weight_version, "tensors_compared": list(engine.tensors_checked),
            "engine": args.engine, "gen_s": round(t_gen, 2),
            "step_s": round(time.perf_counter() - t0, 2), "gen_tok_s": round(sum(len(c.token_ids) for c in flat) / t_gen),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None,
        }), flush=True)


if __name__ == "__main__":
    main()
