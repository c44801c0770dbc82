"""One GRPO step through align and through TRL's GRPOTrainer, on the same workload, in one process.

    PYTHONPATH=$PWD .venv/bin/python bench/step_vs_trl.py            # smollm2-135m-instruct, CPU
    PYTHONPATH=$PWD .venv/bin/python bench/step_vs_trl.py --model tiny --prompts 2 --G 2 --max-tokens 8 --steps 1

Same model, prompts (the built-in word problems, chat template), G, max new tokens, batch, AdamW
(lr, no weight decay, clip 1.0), reward (`final_number`), beta, loss aggregation (TRL "grpo" =
align's seq_mean_token_mean), precision and gradient checkpointing (off for both; TRL's defaults
turn it and bf16 on, which would compare different computations). align runs on its best engine
(`--align-engine`, vLLM by default, with its verified weight sync after every step); TRL runs out of
the box otherwise: its HF `generate` path (its vLLM colocate mode needs CUDA).

The steps alternate A B A B: TRL's own `train()` runs in a thread that a callback holds at every
step boundary, so both see the same machine load. Per step we record wall time and phases: for
align its own timers (generate, reward, train = logprobs + forward/backward + optimizer, sync =
weight load + probe); for TRL its profiling contexts (generate, rewards) and train = step minus
`_prepare_inputs` (generation, scoring and its logprob passes happen there). Medians are over the
steps after `--warmup`. The machine's matmul peak (the best of a few square matmuls in the same
precision) is measured in the same run; the train phase is reported as a fraction of it, with
6 x parameters x (prompt + completion) tokens as its FLOPs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def matmul_peak(dtype: torch.dtype, n: int = 2048, seconds: float = 3.0, device: str = "cpu") -> float:
    """Best FLOP/s of an n x n matmul in `dtype` over ~`seconds` (what this machine can reach now)."""
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a, b = torch.randn(n, n, dtype=dtype, device=device), torch.randn(n, n, dtype=dtype, device=device)
    torch.matmul(a, b)  # warm-up
    sync()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        for _ in range(reps := 1 if device == "cpu" else 10):
            torch.matmul(a, b)
        sync()
        best = max(best, reps * 2 * n**3 / (time.perf_counter() - t0))
    return best


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# ------------------------------------------------------------------------------------------ align
class AlignRunner:
    """align's Trainer built in-process from key=value overrides; one `Trainer.step` per call."""

    def __init__(self, overrides: list[str]):
        from align.algorithms import load_config, validate
        from align.cli.train import build_algorithm, make_accelerator
        from align.training.loop import Trainer

        from accelerate.state import AcceleratorState

        cfg = load_config(overrides)
        # accelerate's state is a per-process singleton: a TRL trainer built earlier in this process
        # (bf16=True) would leave mixed precision on, and prepare() would autocast align's model.
        AcceleratorState._reset_state(reset_partial_state=True)
        self.accelerator = make_accelerator(cfg)
        validate(cfg, 1)
        self.trainer = Trainer(cfg, self.accelerator, build_algorithm(cfg), Path(cfg.log.run_dir))
        self.params = sum(p.numel() for p in self.trainer.model.parameters())
        self._step = 0
        self.tokens = 0
        source = self.trainer.source
        collect = source.collect

        def counting_collect(*a, **kw):  # the batch's real (unpadded) prompt + completion tokens
            collected = collect(*a, **kw)
            self.tokens = sum(len(c.prompt_ids) + len(c.token_ids) for c in collected.completions)
            return collected

        source.collect = counting_collect

    def step(self) -> dict:
        t0 = time.perf_counter()
        metrics, _ = self.trainer.step(self._step)
        wall = time.perf_counter() - t0
        self._step += 1
        return {"step": wall, "generate": metrics["time/generate"], "reward": metrics["time/reward"],
                "train": metrics["time/train"], "sync": metrics["time/sync"], "tokens": self.tokens,
                "completion_len": metrics["completion_len/mean"],
                "completion_tokens": metrics["completion_len/mean"] * self.trainer.cfg.train.batch_size}

    def close(self) -> None:
        self.trainer.engine.close()


# -------------------------------------------------------------------------------------------- TRL
class TRLRunner:
    """TRL's GRPOTrainer.train() in a thread, released one optimizer step at a time."""

    def __init__(self, config_kwargs: dict, model_path: str, dataset, reward_funcs: list):
        from transformers import TrainerCallback
        from trl import GRPOConfig, GRPOTrainer
        from trl.extras import profiling

        from align.models import load_model, load_tokenizer

        self.phases: dict[str, float] = {}
        real_log = profiling.ProfilingContext._log_metrics
        runner = self

        def record(ctx, duration):  # TRL only reports these to wandb/mlflow/trackio: collect them here
            name = ctx.name.split(".", 1)[-1]
            runner.phases[name] = runner.phases.get(name, 0.0) + duration
            real_log(ctx, duration)

        profiling.ProfilingContext._log_metrics = record
        # ready: TRL reached a step boundary and waits; go: run one step; done: that step ended.
        # The main thread only runs align while TRL waits, so nothing of TRL's (its set-up before
        # the first step, its logging after each) overlaps align's timed steps.
        self.ready, self.go, self.done = threading.Semaphore(0), threading.Semaphore(0), threading.Semaphore(0)
        self.times: dict[str, float] = {}

        class Pace(TrainerCallback):
            def on_step_begin(self, targs, state, control, **kw):
                runner.ready.release()
                runner.go.acquire()
                runner.phases.clear()
                runner.times["begin"] = time.perf_counter()
                runner.times["tokens_before"] = state.num_input_tokens_seen

            def on_step_end(self, targs, state, control, **kw):
                wall = time.perf_counter() - runner.times["begin"]
                # read now: logging right after this clears TRL's metrics, and the next step resets ours
                lengths = runner.trainer._metrics["train"].get("completions/mean_length") or [float("nan")]
                batch = runner.trainer.args.per_device_train_batch_size * runner.trainer.args.gradient_accumulation_steps
                runner.last = {
                    "step": wall, "generate": runner.phases.get("transformers.generate", 0.0),
                    "reward": runner.phases.get("_calculate_rewards", 0.0),
                    # generation, scoring and TRL's logprob passes all run inside _prepare_inputs
                    "train": wall - runner.phases.get("_prepare_inputs", 0.0), "sync": 0.0,
                    "tokens": state.num_input_tokens_seen - runner.times["tokens_before"],
                    "completion_len": lengths[-1], "completion_tokens": lengths[-1] * batch,
                }
                runner.done.release()

        config = GRPOConfig(**config_kwargs)
        tokenizer = load_tokenizer(model_path)
        # TRL's bf16 flag autocasts around float32 weights
        model = load_model(model_path, "float32", device="cuda" if torch.cuda.is_available() else "cpu")
        self.params = sum(p.numel() for p in model.parameters())
        self.trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=config, train_dataset=dataset,
                                   processing_class=tokenizer, callbacks=[Pace()])
        self.error: BaseException | None = None
        self.remaining = config.max_steps
        self.thread = threading.Thread(target=self._train, daemon=True)
        self.thread.start()
        self._wait(self.ready)

    def _train(self) -> None:
        try:
            self.trainer.train()
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread
            self.error = err
            self.ready.release()
            self.done.release()

    def _wait(self, semaphore: threading.Semaphore) -> None:
        semaphore.acquire()
        if self.error is not None:
            raise self.error

    def step(self) -> dict:
        self.go.release()
        self._wait(self.done)
        row = self.last  # taken in on_step_end, before TRL moves on
        self.remaining -= 1
        if self.remaining:
            self._wait(self.ready)  # TRL's logging of this step done, parked before the next
        else:
            self.thread.join()
        return row

    def close(self) -> None:
        self.thread.join(timeout=60)


# ------------------------------------------------------------------------------------------- main
PHASES = ("step", "generate", "reward", "train", "sync", "tokens", "completion_tokens", "completion_len")


def compare(align_runner: AlignRunner, trl_runner: TRLRunner, steps: int, warmup: int, peak: float,
            resample_peak=None) -> dict:
    """Alternate A B A B for warmup + steps steps; medians after warm-up, train phase against `peak`.

    `resample_peak()`, when given, measures the peak again before every pair of steps and the best
    sample counts: on a shared machine one sample can land in a busy moment and flatter the ratio.
    """
    rows: dict[str, list[dict]] = {"align": [], "trl": []}
    loads = [load_average()]
    peaks = [peak]
    for i in range(warmup + steps):
        if resample_peak is not None:
            peaks.append(resample_peak())
        peak = max(peaks)
        for name, runner in (("align", align_runner), ("trl", trl_runner)):
            row = runner.step()
            row["warmup"] = i < warmup
            rows[name].append(row)
            print(f"step {i} {name:5s} " + " ".join(f"{k}={v:.2f}" for k, v in row.items() if isinstance(v, float)),
                  flush=True)
        loads.append(load_average())
    summary: dict = {}
    for name, runner in (("align", align_runner), ("trl", trl_runner)):
        timed = [r for r in rows[name] if not r["warmup"]] or rows[name]
        med = {k: statistics.median(float(r[k]) for r in timed) for k in PHASES}
        med["train_fraction_of_peak"] = 6 * runner.params * med["tokens"] / med["train"] / peak
        med["sync_fraction_of_step"] = med["sync"] / med["step"]
        med["generate_tokens_per_s"] = med["completion_tokens"] / med["generate"] if med["generate"] else float("nan")
        med["params"] = runner.params
        summary[name] = med
    summary["align_over_trl_step"] = summary["align"]["step"] / summary["trl"]["step"]
    return {"rows": rows, "summary": summary, "load_average": loads, "peak_flops": peak, "peak_samples": peaks}


def print_table(result: dict, title: str) -> None:
    s = result["summary"]
    print(f"\n{title}; load average (1/5/15 min) before/after: {result['load_average'][0]} / "
          f"{result['load_average'][-1]}; matmul peak {result['peak_flops'] / 1e9:.1f} GFLOP/s")
    print(f"{'':6s}{'step s':>9s}{'generate':>10s}{'reward':>8s}{'train':>8s}{'sync':>8s}{'tokens':>8s}"
          f"{'gen tok/s':>10s}{'train/peak':>11s}")
    for name in ("align", "trl"):
        m = s[name]
        print(f"{name:6s}{m['step']:9.2f}{m['generate']:10.2f}{m['reward']:8.2f}{m['train']:8.2f}{m['sync']:8.2f}"
              f"{m['tokens']:8.0f}{m['generate_tokens_per_s']:10.0f}{m['train_fraction_of_peak']:11.1%}")
    print(f"align / TRL step time: {s['align_over_trl_step']:.2f}x; align sync+probe = "
          f"{s['align']['sync_fraction_of_step']:.1%} of its step")


def write(result: dict, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--G", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--align-engine", default="vllm", choices=["vllm", "hf"])
    p.add_argument("--steps", type=int, default=3, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dataset-size", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=4,
                   help="sequences per forward/backward on both sides (memory: a whole 16-sequence batch of "
                        "this 30-layer model holds ~6 GB of float32 activations)")
    p.add_argument("--align-override", nargs="*", default=[], help="extra align key=value overrides")
    p.add_argument("--cache-dir", default="~/.cache/align", help="where built-in models are converted and cached")
    p.add_argument("--out", default=str(RESULTS / "step_vs_trl.json"))
    args = p.parse_args(argv)

    from align.data import load_prompt_dataset
    from align.demo import resolve_model_path
    from rewards.word_problems import final_number

    model_path = resolve_model_path(args.model, args.cache_dir)
    dataset = load_prompt_dataset("word_problems", "train", size=args.dataset_size)
    peak = matmul_peak(torch.float32 if args.dtype == "float32" else torch.bfloat16)
    tmp = Path(tempfile.mkdtemp(prefix="step_vs_trl-"))
    batch = args.prompts * args.G
    align_runner = AlignRunner([
        "recipe=grpo_smollm2", f"model.name={model_path}", f"model.dtype={args.dtype}",
        f"rollout.engine={args.align_engine}", f"rollout.num_generations={args.G}", f"rollout.max_tokens={args.max_tokens}",
        f"train.batch_size={batch}", f"train.lr={args.lr}", f"loss.beta={args.beta}",
        f"train.steps={args.warmup + args.steps + 1}", "log.eval_every=0", "log.sample_every=0", "log.save_every=0",
        "log.report_to=[]", "log.console=false", f"log.run_dir={tmp / 'align'}",
        f"data.options.size={args.dataset_size}",
        # TRL's side: a full fine-tune at temperature 1 on every family; the recipe's 30-minute CPU
        # defaults (LoRA, temperature 0.5, the one-step families) would make it another workload
        "lora.enabled=false", "rollout.temperature=1.0", "data.options.families=null", "train.max_minutes=null",
        # align splits by a token budget: this many full-length sequences of the workload
        f"train.micro_batch_tokens={args.micro_batch * (args.max_tokens + 96)}", *args.align_override,
    ])
    trl_runner = TRLRunner(dict(
        output_dir=str(tmp / "trl"), use_cpu=not torch.cuda.is_available(), report_to="none", save_strategy="no",
        max_steps=args.warmup + args.steps, per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=batch // args.micro_batch, num_generations=args.G,
        max_completion_length=args.max_tokens, learning_rate=args.lr, lr_scheduler_type="constant", weight_decay=0.0,
        max_grad_norm=1.0, optim="adamw_torch", beta=args.beta, loss_type="grpo", scale_rewards="group",
        temperature=1.0, top_p=1.0, top_k=0, bf16=args.dtype == "bfloat16", gradient_checkpointing=False,
        logging_steps=1, seed=0, disable_dropout=True, dataloader_num_workers=0, disable_tqdm=True,
    ), model_path, dataset, [final_number])
    peak_dtype = torch.float32 if args.dtype == "float32" else torch.bfloat16
    result = compare(align_runner, trl_runner, args.steps, args.warmup, peak,
                     resample_peak=lambda: matmul_peak(peak_dtype, seconds=1.0))
    trl_runner.close()
    align_runner.close()
    result |= {"args": vars(args), "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    print_table(result, f"{args.model}: {args.prompts} prompts x G={args.G}, <= {args.max_tokens} new tokens, "
                        f"{args.dtype}, align engine {args.align_engine}")
    write(result, args.out)
    return result


if __name__ == "__main__":
    main()
