"""Train-phase time and peak memory as the prompt, the group and the completions grow: align with the
shared-prompt forward, align without it, and TRL's GRPOTrainer, on batches of exact lengths.

    PYTHONPATH=$PWD .venv/bin/python bench/train_scaling.py               # one factor at a time
    PYTHONPATH=$PWD .venv/bin/python bench/train_scaling.py --grid full   # prompt x G x completion, 18 points

The default grid varies one factor at a time around prompt 256, G=8, completion 64: prompt length
64/256/1024 (G=8, completion 64), G 4/8/16 (prompt 256), completion length 64/256 (prompt 256,
G=8). Six points. `--grid full` runs every combination of those values. That is 18 points and
about 4x the work, more than a session on this 2-core CPU can spare.

Only the train phase is timed, and there is no generation. Each step gets one prompt and G
completions of random token ids, every completion exactly `completion` tokens long, so both sides
see the same tokens. align runs its own `Trainer.step` with its rollout source swapped for this
batch, and its train phase is `time/logprob + time/train`. TRL runs `compute_loss` and the backward of
`Trainer.training_step` over the micro-batches, then clips and steps its optimizer. Everything else is
equal on both sides: AdamW at lr 1e-6, no weight decay, clip 1.0, beta 0, and the "grpo" loss
aggregation, which is align's seq_mean_token_mean. Both are full fine-tunes in float32 without
gradient checkpointing. TRL takes `--micro-batch` sequences per forward. align takes a token budget
of as many full-length sequences, so the two do the same work when align does not share the prompt.

Each (point, side) runs in a process of its own, so that peak memory is its own. Peak memory is the
high-water mark of resident memory over the timed steps (reset through /proc/self/clear_refs just
before them), so it includes the weights, gradients and optimizer state. Medians are taken over
`--steps` after `--warmup`. The script writes bench/results/train_scaling.json and
train_scaling.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from step_vs_trl import load_average

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results"
SIDES = ("align_shared", "align_unshared", "trl")
PROMPTS, GROUPS, COMPLETIONS = (64, 256, 1024), (4, 8, 16), (64, 256)
CENTRE = (256, 8, 64)


def grid(kind: str) -> list[tuple[int, int, int]]:
    """(prompt length, G, completion length) points: one factor at a time around CENTRE, or all."""
    if kind == "full":
        return list(itertools.product(PROMPTS, GROUPS, COMPLETIONS))
    p0, g0, c0 = CENTRE
    points = [(p, g0, c0) for p in PROMPTS] + [(p0, g, c0) for g in GROUPS] + [(p0, g0, c) for c in COMPLETIONS]
    return list(dict.fromkeys(points))


# ------------------------------------------------------------------------- one side, one point
def _token_ids(n: int, generator, vocab: int) -> list[int]:
    import torch

    return torch.randint(min(100, vocab // 2), vocab, (n,), generator=generator).tolist()  # past the special tokens


def _reset_peak() -> int:
    """Resets this process's resident high-water mark; returns resident memory now (bytes)."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _batch(prompt: int, g: int, completion: int, vocab: int, seed: int):
    """One prompt and G completions of exact lengths, rewards with spread (every advantage non-zero)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    prompt_ids = _token_ids(prompt, generator, vocab)
    completions = [_token_ids(completion, generator, vocab) for _ in range(g)]
    rewards = torch.arange(g, dtype=torch.float32).roll(seed % g).view(1, g)
    return prompt_ids, completions, rewards


def run_align(model_path: str, prompt: int, g: int, completion: int, args, shared: bool) -> list[dict]:
    from accelerate.state import AcceleratorState

    from align.algorithms import load_config, validate
    from align.algos.batch import GroupBatch
    from align.cli.train import build_algorithm, make_accelerator
    from align.rollout.base import Completion
    from align.runtime.threads import use_cpu_threads
    from align.sources.base import Collected
    from align.training.loop import Trainer

    tmp = Path(tempfile.mkdtemp(prefix="train_scaling-"))
    cfg = load_config([
        "recipe=grpo_smollm2", f"model.name={model_path}", "model.dtype=float32", "rollout.engine=hf",
        f"rollout.num_generations={g}", f"rollout.max_tokens={completion}", f"train.batch_size={g}",
        "train.lr=1e-6", "loss.beta=0.0", "lora.enabled=false", "train.max_minutes=null",
        "rollout.temperature=1.0",  # TRL's; the recipe's 0.5 would divide the logits by it in the loss
        f"train.shared_prompt={str(shared).lower()}", f"train.cpu_threads={args.threads}",
        f"train.micro_batch_tokens={args.micro_batch * (prompt + completion)}",
        f"train.steps={args.warmup + args.steps + 1}", "log.eval_every=0", "log.sample_every=0",
        "log.save_every=0", "log.report_to=[]", "log.console=false", f"log.run_dir={tmp}",
        f"data.options.size={max(64, g)}",
    ])
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = make_accelerator(cfg)
    use_cpu_threads(cfg.train.cpu_threads, 1)  # what align/train.py does; the Trainer alone does not
    validate(cfg, 1)
    trainer = Trainer(cfg, accelerator, build_algorithm(cfg), tmp)
    vocab = trainer.model.config.vocab_size
    rows = []
    for step in range(args.warmup + args.steps):
        prompt_ids, completions, rewards = _batch(prompt, g, completion, vocab, step)
        batch = GroupBatch(prompt_ids=[prompt_ids], completion_ids=completions, rewards=rewards)
        shown = [Completion(prompt_ids, ids, [0.0] * len(ids), "", "length", 0) for ids in completions]  # the sample log's
        collected = Collected(batch, {}, [{"prompt": ""}], shown)
        trainer.source.collect = lambda *a, _c=collected, **k: _c
        before = _reset_peak()
        metrics, _ = trainer.step(step)
        rows.append({"train": metrics["time/logprob"] + metrics["time/train"], "rss_before": before,
                     "peak": _status_kib("VmHWM") * 1024, "forward_tokens": metrics["train/forward_tokens"],
                     "micro_batches": metrics["micro_batches"], "grad_norm": metrics["grad_norm"]})
    trainer.engine.close()
    return rows


def run_trl(model_path: str, prompt: int, g: int, completion: int, args) -> list[dict]:
    import torch
    from trl import GRPOConfig, GRPOTrainer

    from align.data import load_prompt_dataset
    from align.models import load_model, load_tokenizer
    from rewards.word_problems import final_number

    torch.set_num_threads(args.threads)
    micro = min(args.micro_batch, g)
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="train_scaling-trl-"), use_cpu=True, report_to="none",
        save_strategy="no", max_steps=1, per_device_train_batch_size=micro, gradient_accumulation_steps=g // micro,
        num_generations=g, max_completion_length=completion, learning_rate=1e-6, lr_scheduler_type="constant",
        weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", beta=0.0, loss_type="grpo", scale_rewards="group",
        bf16=False, gradient_checkpointing=False, seed=0, disable_dropout=True, disable_tqdm=True,
    )
    model = load_model(model_path, "float32", device="cpu")
    trainer = GRPOTrainer(model=model, reward_funcs=[final_number], args=config,
                          train_dataset=load_prompt_dataset("word_problems", "train", size=max(64, g)),
                          processing_class=load_tokenizer(model_path))
    trainer.create_optimizer()
    trainer.current_gradient_accumulation_steps = g // micro  # set by train(), which this does not run
    model.train()
    vocab = model.config.vocab_size
    rows = []
    for step in range(args.warmup + args.steps):
        prompt_ids, completions, rewards = _batch(prompt, g, completion, vocab, step)
        r = rewards.view(-1)
        advantages = (r - r.mean()) / (r.std() + 1e-4)  # TRL's scale_rewards="group" over the one group
        before = _reset_peak()
        t0 = time.perf_counter()
        for start in range(0, g, micro):
            part = slice(start, start + micro)
            inputs = {
                "prompt_ids": torch.tensor([prompt_ids] * micro), "prompt_mask": torch.ones(micro, prompt, dtype=torch.long),
                "completion_ids": torch.tensor(completions[part]),
                "completion_mask": torch.ones(micro, completion, dtype=torch.long),
                "advantages": advantages[part], "num_items_in_batch": torch.tensor(float(g * completion)),
            }
            # Trainer.training_step's forward and backward; its _prepare_inputs (TRL's generation) is skipped
            with trainer.compute_loss_context_manager():
                loss = trainer.compute_loss(model, inputs)
            trainer.accelerator.backward(loss)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        rows.append({"train": time.perf_counter() - t0, "rss_before": before, "peak": _status_kib("VmHWM") * 1024,
                     "forward_tokens": g * (prompt + completion), "micro_batches": g // micro,
                     "grad_norm": float(grad_norm)})
    return rows


def one(args) -> None:
    """Child process: one side at one point; prints its rows as one JSON line."""
    from align.demo import resolve_model_path

    side, prompt, g, completion = args.one[0], *map(int, args.one[1:])
    model_path = resolve_model_path(args.model, args.cache_dir)
    if side == "trl":
        rows = run_trl(model_path, prompt, g, completion, args)
    else:
        rows = run_align(model_path, prompt, g, completion, args, shared=side == "align_shared")
    print("ROWS " + json.dumps(rows), flush=True)


# ------------------------------------------------------------------------------------ the table
def summarize(rows: list[dict], warmup: int) -> dict:
    timed = rows[warmup:] or rows
    return {"train_s": statistics.median(r["train"] for r in timed),
            "peak_gib": max(r["peak"] for r in timed) / 2**30,
            "forward_tokens": timed[-1]["forward_tokens"], "micro_batches": timed[-1]["micro_batches"]}


def table(points: list[dict]) -> str:
    lines = ["| prompt | G | completion | align shared s | align unshared s | TRL s | shared / TRL | unshared / TRL "
             "| peak GiB shared / unshared / TRL | forward tokens shared / TRL |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for p in points:
        s, u, t = (p["sides"][k] for k in SIDES)
        lines.append(
            f"| {p['prompt']} | {p['G']} | {p['completion']} | {s['train_s']:.2f} | {u['train_s']:.2f} | {t['train_s']:.2f} "
            f"| {s['train_s'] / t['train_s']:.2f}x | {u['train_s'] / t['train_s']:.2f}x "
            f"| {s['peak_gib']:.2f} / {u['peak_gib']:.2f} / {t['peak_gib']:.2f} "
            f"| {s['forward_tokens']:.0f} / {t['forward_tokens']:.0f} |")
    return "\n".join(lines)


def plot(points: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p0, g0, c0 = CENTRE
    axes_of = (("prompt", lambda p: p["G"] == g0 and p["completion"] == c0),
               ("G", lambda p: p["prompt"] == p0 and p["completion"] == c0),
               ("completion", lambda p: p["prompt"] == p0 and p["G"] == g0))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (factor, on_line) in zip(axes, axes_of):
        line = sorted((p for p in points if on_line(p)), key=lambda p: p[factor])
        for side in SIDES:
            ax.plot([p[factor] for p in line], [p["sides"][side]["train_s"] for p in line], marker="o", label=side)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"{factor} ({', '.join(f'{k}={v}' for k, v in zip(('prompt', 'G', 'completion'), CENTRE) if k != factor)})")
        ax.set_ylabel("train phase, s")
    axes[0].legend()
    fig.suptitle("train phase per step, one prompt x G completions (SmolLM2-135M, float32, CPU)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    return out


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--grid", default="axes", choices=["axes", "full"])
    p.add_argument("--steps", type=int, default=1, help="timed steps per side and point")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--micro-batch", type=int, default=4, help="TRL's sequences per forward; align's budget in "
                                                               "as many full-length sequences")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    p.add_argument("--cache-dir", default="~/.cache/align")
    p.add_argument("--out", default=str(RESULTS / "train_scaling.json"))
    p.add_argument("--one", nargs=4, metavar=("SIDE", "PROMPT", "G", "COMPLETION"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        one(args)
        return None
    passed = ["--model", args.model, "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--micro-batch", str(args.micro_batch), "--threads", str(args.threads), "--cache-dir", args.cache_dir]
    points = []
    load_before = load_average()
    for prompt, g, completion in grid(args.grid):
        sides = {}
        for side in args.sides:
            cmd = [sys.executable, __file__, *passed, "--one", side, str(prompt), str(g), str(completion)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("ROWS ")), None)
            if done.returncode or line is None:
                sys.exit(f"train_scaling: {side} at prompt {prompt}, G={g}, completion {completion} failed:\n"
                         + done.stderr[-3000:])
            rows = json.loads(line[5:])
            sides[side] = summarize(rows, args.warmup) | {"rows": rows}
            print(f"prompt {prompt} G {g} completion {completion} {side}: train {sides[side]['train_s']:.2f} s, "
                  f"peak {sides[side]['peak_gib']:.2f} GiB", flush=True)
        points.append({"prompt": prompt, "G": g, "completion": completion, "sides": sides})
    result = {"points": points, "args": {k: v for k, v in vars(args).items() if k != "one"},
              "load_average": [load_before, load_average()]}
    if set(args.sides) == set(SIDES):
        print(table(points))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    if set(args.sides) == set(SIDES) and args.grid == "axes":
        print(f"wrote {plot(points, out.with_suffix('.png'))}")
    print(f"wrote {out}; load average before/after: {result['load_average'][0]} / {result['load_average'][1]}")
    return result


if __name__ == "__main__":
    main()
