"""Workload W1 on one GPU, self-contained (no network): align's GRPO step vs TRL's.

    PYTHONPATH=$PWD python bench/gpu_w1.py                       # Qwen2.5-0.5B shape, on the GPU
    PYTHONPATH=$PWD python bench/gpu_w1.py --engine vllm         # both sides generate with colocated vLLM
    PYTHONPATH=$PWD python bench/gpu_w1.py --shape tiny          # the same code at a toy size (CPU test)
    PYTHONPATH=$PWD python bench/gpu_w1.py --learn smollm2-135m-instruct --minutes 10   # learning curve

Step benchmark: a Qwen2.5-0.5B-shaped model (hidden 896, 24 layers, 14 heads, 2 KV heads,
intermediate 4864, vocab 151936, tied embeddings) built from its config with random weights in
bf16, and align's built-in tokenizer (one token per character, made in code), so nothing is
downloaded: prompts are 64 characters, and sampled ids past its ~100 tokens decode to nothing,
which no part of the step reads (the reward looks at token ids).
16 prompts of 64 tokens x G=8 completions x 256 new tokens (a random model almost never samples
EOS, so every completion runs to the limit and both sides do identical work). align's step runs on
its HF engine with a verified sync, TRL's GRPOTrainer on its HF generation; the steps alternate
(bench/step_vs_trl.py); with `--engine vllm` align's VLLMEngine against TRL's colocated vLLM
(`use_vllm=True, vllm_mode="colocate"`), a one-line skip where vLLM is not installed. Reported per side: median step time, phases, generation tokens/s and the
train phase's model FLOPs utilisation (6 x params x tokens / time / peak), against the measured
bf16 matmul peak and, for known GPUs, the datasheet's dense bf16 peak. Under "align_engine" (JSON)
and in a line under the table: align's probe difference at weight version 0 and after every
update, its tolerance, and with `--engine vllm` the vLLM release and model runner (v1/v2), as
bench/gpu_smoke.py reports them. On CPU `--engine vllm` stops with one line (TRL's colocated vLLM
needs CUDA); tests/test_gpu_w1.py runs align's side of it there (`align_side`, `engine_record`).

Learning curve (`--learn MODEL`, e.g. smollm2-135m-instruct or a folder carried to the machine):
`recipe=grpo_smollm2` on the built-in word problems with the HF engine for `--minutes`, held-out
accuracy measured before and every `--eval-every` steps; the goal is +20 points in 10 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from gpu_smoke import vllm_missing, vllm_runtime  # noqa: E402
from step_vs_trl import RESULTS, AlignRunner, TRLRunner, compare, matmul_peak, print_table, write  # noqa: E402
from align.telemetry.plots import read_metrics  # noqa: E402

SHAPES = {
    # Qwen2.5-0.5B(-Instruct)'s published config
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768),
    # the same code path at a size a CPU test runs in seconds
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, vocab_size=1024, max_position_embeddings=512),
}
# Dense bf16 tensor-core peaks from the datasheets (FLOP/s), by a substring of the device name.
DATASHEET_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12}


def parity_reward(prompts, completions, completion_ids=None, **kwargs) -> list[float]:
    """Share of even token ids: varies within a group, costs nothing, same for align and TRL."""
    return [sum(t % 2 == 0 for t in ids) / max(len(ids), 1) for ids in completion_ids]


def write_model(out_dir: Path, shape: str, seed: int = 0) -> Path:
    """The shape's model with random bf16 weights and its tokenizer, as a save_pretrained folder."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    from align.models.saving import save_pretrained_atomically
    from align.models.tiny import build_tokenizer

    tok = build_tokenizer()
    config = Qwen2Config(tie_word_embeddings=True, rms_norm_eps=1e-6, rope_theta=1e6, bos_token_id=None,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, torch_dtype="bfloat16",
                         **SHAPES[shape])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    return save_pretrained_atomically(model, tok, out_dir)


def write_prompts(path: Path, n: int, prompt_len: int, seed: int = 0) -> Path:
    """n plain-text prompts of prompt_len letters (= tokens) each, as JSONL."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    gen = torch.Generator().manual_seed(seed)
    with path.open("w") as f:
        for _ in range(n):
            ids = torch.randint(0, len(letters), (prompt_len,), generator=gen).tolist()
            f.write(json.dumps({"prompt": "".join(letters[i] for i in ids), "answer": ""}) + "\n")
    return path


def peak_flops(device: str, quick: bool) -> tuple[float, float | None, str]:
    """(measured bf16 matmul peak, datasheet peak or None, device name)."""
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        measured = matmul_peak(torch.bfloat16, n=8192, seconds=3.0, device=device)
        sheet = next((v for k, v in DATASHEET_BF16.items() if k in name), None)
        return measured, sheet, name
    return matmul_peak(torch.bfloat16, n=256 if quick else 2048, seconds=0.5 if quick else 3.0), None, "cpu"


def engine_record(engine, kind: str) -> dict:
    """What align's engine measures, kept up to date: the probe difference at weight version 0
    (`calibrate`, at construction) and after every update (each `sync_from` appends its report),
    the tolerance they are held to, and for vLLM its release and model runner (bench/gpu_smoke.py)."""
    record = {"engine": kind, **(vllm_runtime(engine) if kind == "vllm" else {}),
              "probe_diff_v0": engine.calibrated_diff, "probe_tolerance": engine.probe_tolerance, "after_update": []}
    sync_from = engine.sync_from

    def recording_sync_from(*a, **kw):
        report = sync_from(*a, **kw)
        record["after_update"].append({"weight_version": report.weight_version, "probe_diff": report.probe_diff})
        return report

    engine.sync_from = recording_sync_from
    return record


def engine_line(record: dict) -> str:
    """The record as the line printed under the table."""
    runner = f" {record['vllm']} (model runner {record['model_runner']})" if "model_runner" in record else ""
    after = ", ".join(f"v{u['weight_version']} {u['probe_diff']:.3g}" for u in record["after_update"]) or "none"
    v0 = "not measured (rollout.verify_sync=false)" if record["probe_diff_v0"] is None else f"{record['probe_diff_v0']:.3g}"
    return (f"align engine {record['engine']}{runner}: probe difference at version 0 {v0}, "
            f"after updates {after} (tolerance {record['probe_tolerance']:.3g})")


def align_side(args, model_dir: Path, data: Path, tmp: Path) -> tuple[AlignRunner, dict]:
    """align's runner for the workload and its engine's record (see engine_record)."""
    batch = args.prompts * args.G
    runner = AlignRunner([
        "algo=grpo", f"model.name={model_dir}", "model.dtype=bfloat16", f"rollout.engine={args.engine}",
        f"data.source={data}", "data.eval_split=train", f"reward.functions=[{Path(__file__).resolve()}:parity_reward]",
        f"rollout.num_generations={args.G}", f"rollout.max_tokens={args.max_tokens}", f"train.batch_size={batch}",
        "train.lr=1e-6", "loss.beta=0.0", f"train.steps={args.warmup + args.steps + 1}",
        f"train.micro_batch_tokens={args.micro_batch * (args.prompt_len + args.max_tokens)}", "log.eval_every=0", "log.sample_every=0",
        "log.save_every=0", "log.report_to=[]", "log.console=false", f"log.run_dir={tmp / 'align'}",
        *args.align_override,
    ])
    return runner, engine_record(runner.trainer.engine, args.engine)


def step_benchmark(args) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_w1-"))
    model_dir = write_model(tmp / f"model-{args.shape}", args.shape)
    n_prompts = max(args.prompts * (args.warmup + args.steps + 1), 64)
    data = write_prompts(tmp / "prompts.jsonl", n_prompts, args.prompt_len)
    measured, sheet, name = peak_flops(device, quick=args.shape == "tiny")
    batch = args.prompts * args.G
    align_runner, record = align_side(args, model_dir, data, tmp)
    from datasets import Dataset

    dataset = Dataset.from_json(str(data))
    trl_runner = TRLRunner(dict(
        output_dir=str(tmp / "trl"), use_cpu=device == "cpu", report_to="none", save_strategy="no",
        max_steps=args.warmup + args.steps, per_device_train_batch_size=min(args.micro_batch, batch),
        gradient_accumulation_steps=max(1, batch // args.micro_batch), num_generations=args.G,
        max_completion_length=args.max_tokens, learning_rate=1e-6, lr_scheduler_type="constant", weight_decay=0.0,
        max_grad_norm=1.0, optim="adamw_torch", beta=0.0, loss_type="grpo", scale_rewards="group", temperature=1.0,
        top_p=1.0, top_k=0, bf16=True, gradient_checkpointing=False, logging_steps=1, seed=0, disable_dropout=True,
        dataloader_num_workers=0, disable_tqdm=True,
        **(dict(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3) if args.engine == "vllm" else {}),
    ), str(model_dir), dataset, [parity_reward])
    result = compare(align_runner, trl_runner, args.steps, args.warmup, measured)
    trl_runner.close()
    align_runner.close()
    if sheet:  # MFU against the datasheet as well (the usual definition)
        for side in ("align", "trl"):
            s = result["summary"][side]
            s["train_mfu_datasheet"] = s["train_fraction_of_peak"] * measured / sheet
    result |= {"device": name, "datasheet_bf16_flops": sheet, "align_engine": record, "args": vars(args)}
    print_table(result, f"W1 ({args.shape}) on {name}: {args.prompts} prompts x G={args.G} x {args.max_tokens} new "
                        f"tokens, prompt {args.prompt_len}")
    print(engine_line(record))
    if sheet:
        print("train MFU vs datasheet: " + ", ".join(
            f"{side} {result['summary'][side]['train_mfu_datasheet']:.1%}" for side in ("align", "trl")))
    return result


def learning_curve(args) -> dict:
    from align.demo import resolve_model_path
    from align.cli.train import main as train_main

    run_dir = Path(args.workdir or tempfile.mkdtemp(prefix="gpu_w1-learn-")) / "run"
    model = resolve_model_path(args.learn, args.cache_dir)
    started = time.time()
    train_main(["recipe=grpo_smollm2", "log.console=false", f"model.name={model}", f"rollout.engine={args.engine}",
                f"train.max_minutes={args.minutes}",
                "train.steps=100000", f"log.eval_every={args.eval_every}", "log.save_every=0", "log.report_to=[]",
                f"log.run_dir={run_dir}", *args.align_override])
    rows = read_metrics(run_dir / "metrics.jsonl")  # null (a NaN logged) reads as NaN
    curve = [(r["step"], r["eval/mean@1"]) for r in rows if "eval/mean@1" in r]
    print("held-out accuracy by step: " + ", ".join(f"{s}: {a:.3f}" for s, a in curve))
    gain = curve[-1][1] - curve[0][1] if curve else float("nan")
    print(f"gain {100 * gain:+.1f} points in {(time.time() - started) / 60:.1f} min (goal: +20 in 10)")
    return {"curve": curve, "gain_points": 100 * gain, "minutes": (time.time() - started) / 60, "args": vars(args)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="qwen2.5-0.5b", choices=sorted(SHAPES))
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"], help="what both sides generate with")
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--G", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--micro-batch", type=int, default=32,
                   help="sequences per forward/backward on both sides (128 at once would hold ~20 GB of logits alone)")
    p.add_argument("--learn", default=None, help="run a learning curve with this model instead of the step benchmark")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--align-override", nargs="*", default=[])
    p.add_argument("--cache-dir", default="~/.cache/align", help="where built-in models are converted and cached")
    p.add_argument("--workdir", default=None)
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.engine == "vllm" and vllm_missing():
        return {"skipped": "vllm not installed", "args": vars(args)}
    if args.engine == "vllm" and not args.learn and not torch.cuda.is_available():
        # TRL's colocated LLM is built without enforce_eager, so vLLM compiles it, which the CPU
        # build cannot do once align's eager CPU engine switched dynamo off in this process.
        sys.exit("--engine vllm compares against TRL's colocated vLLM, which needs a CUDA GPU; use --engine hf on CPU")
    result = learning_curve(args) if args.learn else step_benchmark(args)
    default = RESULTS / ("gpu_w1_learn.json" if args.learn else f"gpu_w1_{args.shape}.json")
    write(result, args.out or default)
    return result


if __name__ == "__main__":
    main()
