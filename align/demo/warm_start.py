"""Supervised warm start of the tiny built-in model on the geometry task's completion format.

RL on a randomly initialised model gets no reward to learn from, so the embedded GCPO demo starts
from a short supervised run: plain next-token loss on completion tokens only, over reference
solutions that use the aux style and the direct style with equal probability in EVERY family.
The warm-started model thus writes both styles everywhere, and it is the RL phase that has to
find out per family which one earns reward.

Half of each batch is an arithmetic drill instead (`arithmetic_facts`): every one-operation step any
family's solution writes ("35+60", "2*44", "180-95"), as a bare exercise "Compute 35+60.". A
pretrained model brings that arithmetic with it; the tiny one does not, and without the drill it
never got the steps of a construction exactly right (1200 steps: "S=9+16=24"), so constructing
could not pay off and GCPO had nothing to contrast. The drill holds facts, not problems: no
geometry question of any split is in it, and composing two facts silently (the direct route's
"180-35-60") is never drilled; that is what a construction avoids.

The result is saved in the ordinary Hugging Face format next to the base model's cache folder
(transformers and vLLM load it like any checkpoint) and is deterministic for a seed. The
built-in name `tiny-geometry` (`tiny-geometry@SEED`) resolves to it, building it on first use.

The default build is shipped in align/demo/shipped/ (named by its cache key), so that a first
run loads it in seconds; scripts/ship_warm_start.py (re)trains it from code and writes the file. Training
cost: 1200 steps of 64 examples on one thread (for reproducibility, see `train_warm_start`), ~0.45 s
a step with length-sorted micro-batches: ~9 min.

Calibration of version 4 (the shipped build) on RL's 'train' split, where the recipe was chosen
(never on the held-out one): `scripts/warm_start.py --eval 512 --samples 4 --forced` (temperature
1.0, CPU):

| family | sampled | aux forced | direct forced |
|---|---|---|---|
| third angle (aux helps) | 0.45 | 0.70 | 0.28 |
| isosceles apex (helps) | 0.50 | 0.63 | 0.30 |
| rectangle (helps) | 0.65 | 0.88 | 0.16 |
| quad (helps) | 0.46 | 0.70 | 0.14 |
| vertical (hurts) | 0.98 | 0.95 | 1.00 |
| supplement (hurts) | 0.92 | 0.84 | 0.99 |
| exterior (hurts) | 0.46 | 0.21 | 0.64 |
| alternate (hurts) | 0.96 | 0.96 | 0.98 |
| all | 0.67 (pass@4 0.92) | | |

Choosing the better route per family would add 14 points: the room RL has (greedy decoding, which
mostly picks it, scored 0.89 in a 512-problem probe). Without the drill (1200 steps) route choice
was worth at most 4 points (0.50 overall); with the drill and lr 6e-3 training diverged (0.27).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import operator
import os
import re
import time
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from align.data.geometry import FAMILIES, problem_pool
from align.models.loading import load_model, load_tokenizer
from align.models.saving import build_once, save_pretrained_atomically
from align.models.tiny import spec_hash, tiny_model_path
from rewards.format import extract_answer_tag
from rewards.geometry import answers_match, uses_aux

# Shipped weights of the default warm starts, named by cache key (see shipped_weights_path).
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"

# Bump when the task generator or the training recipe changes in a way the config does not show,
# so that stale cached builds are not reused.
# 2: trained on the 'sft' split, disjoint from RL's 'train'; 3: larger pools (finer angle steps),
# length-sorted micro-batches; 4: the four-angle family's construction in two one-operation steps.
WARM_START_VERSION = 4


@dataclass(frozen=True)
class WarmStartConfig:
    """Hyper-parameters of the geometry warm start; every field enters the cache key."""
    seed: int = 0
    # Calibrated (see the module doc); lr 6e-3 diverged at this length.
    steps: int = 1200
    batch_size: int = 64
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    aux_fraction: float = 0.5  # share of training solutions written in the aux style
    # Each batch is cut into this many micro-batches of similar length (one optimizer step): prompts
    # vary from ~50 to ~90 tokens, and padding every row to the longest cost ~30% of the compute.
    micro_batches: int = 4
    # Share of each batch drawn from the arithmetic drill (`arithmetic_facts`) instead of problems:
    # without it the tiny model never learns the one-operation steps exactly (a 1200-step build
    # wrote "S=9+16=24"), so a construction cannot pay off and GCPO's contrast is empty.
    drill_fraction: float = 0.5
    base_preset: str = "tiny"
    # The families whose problems the warm start sees (None: all). GRAO's setting leaves some out, so
    # the policy starts unable to solve them and only the reference answers show how (UNSEEN_FAMILIES).
    families: tuple[str, ...] | None = None


def warm_start_key(config: WarmStartConfig) -> str:
    """A short hash of everything that determines the warm-started weights."""
    fields = asdict(config)
    if config.families is None:  # the field came later: the default build keeps its key (and its shipped file)
        del fields["families"]
    spec = json.dumps([WARM_START_VERSION, fields, spec_hash(config.base_preset, config.seed)], sort_keys=True)
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


def sft_examples(tokenizer, families: tuple[str, ...] | None = None) -> dict[str, list[tuple[list[int], list[int]]]]:
    """Every sft-split problem of every family in `families` (None: all; never RL's 'train' problems),
    encoded in both styles.

    Returns {family: [direct_0, aux_0, direct_1, aux_1, ...]}: problem j's direct and aux examples
    sit at 2j and 2j+1, so the trainer can draw family, problem and style independently.
    """
    examples: dict[str, list[tuple[list[int], list[int]]]] = {}
    unknown = sorted(set(families or ()) - set(FAMILIES))
    if unknown:
        raise ValueError(f"warm start families {unknown} are unknown; choose from {sorted(FAMILIES)}")
    for name, family in FAMILIES.items():
        if families is not None and name not in families:
            continue
        encoded = []
        for params in problem_pool(name, "sft"):
            problem = family.render(params)
            prompt = [{"role": "user", "content": problem.question}]
            encoded.append(encode_sft_example(tokenizer, prompt, problem.solution_direct))
            encoded.append(encode_sft_example(tokenizer, prompt, problem.solution_aux))
        examples[name] = encoded
    return examples


# One written arithmetic step: two whole numbers and one operator ("35+60", "180-95", "2*44").
ONE_OPERATION = re.compile(r"(\d+)([-+*])(\d+)")
OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def arithmetic_facts() -> dict[str, int]:
    """Every one-operation expression a written step of some family's solution uses (either style,
    over the family's whole parameter space), with its value: the arithmetic the drill teaches.

    Compositions (the direct route's "180-35-60") are not facts: computing those silently, or
    splitting them into written facts with a construction, is what the task is about.
    """
    facts: dict[str, int] = {}
    for family in FAMILIES.values():
        for params in family.space():
            problem = family.render(params)
            for solution in (problem.solution_direct, problem.solution_aux):
                think = solution.split("<think>")[1].split("</think>")[0]
                for statement in re.split(r"<aux>|</aux>|;", think):
                    match = ONE_OPERATION.fullmatch(statement.split("=")[1]) if "=" in statement else None
                    if match:
                        left, op, right = match.groups()
                        facts[match.group(0)] = OPERATORS[op](int(left), int(right))
    return facts


def drill_examples(tokenizer) -> list[tuple[list[int], list[int]]]:
    """Each arithmetic fact as a bare exercise ("Compute 35+60."), in the two forms solutions write
    steps in: with the value stated (an aux step, "S=35+60=95") and without (a final step before
    the answer, "C=180-95</think><answer>85")."""
    encoded = []
    for expression, value in arithmetic_facts().items():
        prompt = [{"role": "user", "content": f"Compute {expression}."}]
        encoded.append(encode_sft_example(tokenizer, prompt, f"<think>x={expression}={value}</think><answer>{value}</answer>"))
        encoded.append(encode_sft_example(tokenizer, prompt, f"<think>x={expression}</think><answer>{value}</answer>"))
    return encoded


def draw_batch(examples: dict[str, list], config: WarmStartConfig, generator: torch.Generator,
               drill: list | None = None) -> list:
    """`batch_size` examples: with probability `drill_fraction` a fact of `drill` (uniformly), else a
    family uniformly (so small families are not drowned out), then a problem of it uniformly, then
    the aux style with probability `aux_fraction`."""
    if config.drill_fraction > 0 and not drill:
        raise ValueError(f"drill_fraction={config.drill_fraction} but no drill examples were given; "
                         f"pass drill_examples(tokenizer)")
    names = list(examples)
    families = torch.randint(len(names), (config.batch_size,), generator=generator).tolist()
    uniforms = torch.rand(config.batch_size, 2, generator=generator).tolist()
    drilled = torch.rand(config.batch_size, generator=generator).tolist() if drill else [1.0] * config.batch_size
    batch = []
    for family_index, (u_problem, u_style), u_drill in zip(families, uniforms, drilled):
        if u_drill < config.drill_fraction:
            batch.append(drill[min(int(u_problem * len(drill)), len(drill) - 1)])
            continue
        pool = examples[names[family_index]]
        problem = min(int(u_problem * (len(pool) // 2)), len(pool) // 2 - 1)
        batch.append(pool[2 * problem + (1 if u_style < config.aux_fraction else 0)])
    return batch


def accumulate_batch_loss(model, examples: list, pad_id: int, micro_batches: int) -> float:
    """Backpropagate the mean next-token loss over every completion token of `examples`, computed in
    `micro_batches` length-sorted pieces (each padded only to its own longest row); returns the loss.

    The sum over pieces equals the loss of the whole batch at once: each piece's summed token loss
    is divided by the batch's total count of loss tokens.
    """
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    size = math.ceil(len(order) / max(1, micro_batches))
    total_tokens = sum(sum(label != -100 for label in labels[1:]) for _, labels in examples)
    total = 0.0
    for start in range(0, len(order), size):
        batch = collate([examples[i] for i in order[start : start + size]], pad_id)
        batch = {k: v.to(model.device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                                                 batch["labels"][:, 1:].reshape(-1), ignore_index=-100,
                                                 reduction="sum") / total_tokens
        loss.backward()
        total += loss.item()
    return total


def train_warm_start(model, tokenizer, config: WarmStartConfig, log_every: int = 50) -> list[float]:
    """Train `model` in place; returns the loss of every step."""
    examples = sft_examples(tokenizer, config.families)
    drill = drill_examples(tokenizer) if config.drill_fraction > 0 else None
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
    started = time.monotonic()
    # One intra-op thread: a threaded reduction sums in an order that depends on the thread count,
    # and 600 steps amplify one rounding difference into weights that differ by ~100%; with one
    # thread the build is bit-identical to the shipped file (built so) on this CPU's kernels.
    with single_threaded():
        for step in range(config.steps):
            loss = accumulate_batch_loss(model, draw_batch(examples, config, generator, drill), tokenizer.pad_token_id,
                                         config.micro_batches)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss)
            if log_every and (step + 1) % log_every == 0:
                elapsed = time.monotonic() - started
                eta = elapsed / (step + 1) * (config.steps - step - 1)
                print(f"warm start step {step + 1}/{config.steps} loss {sum(losses[-log_every:]) / log_every:.4f} "
                      f"({elapsed:.0f} s, ~{eta:.0f} s to go)", flush=True)
    model.eval()
    return losses


@contextlib.contextmanager
def single_threaded():
    """torch on one intra-op thread for the block (restored after)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def shipped_weights_path(config: WarmStartConfig) -> Path:
    """Where the repository ships the weights of the warm start for `config` (the file may not exist).

    Named by the cache key, so a change to the recipe (or to the task, with WARM_START_VERSION)
    finds no shipped file and builds from code instead of loading stale weights.
    """
    return SHIPPED_DIR / f"tiny-geometry-{warm_start_key(config)}.safetensors"


def build_geometry_warm_start(cache_dir: str | os.PathLike, seed: int = 0, steps: int = WarmStartConfig.steps,
                              overwrite: bool = False, use_shipped: bool = True, **overrides) -> Path:
    """Warm-start the tiny model on the geometry task and cache it; returns the model folder.

    `overrides` are other WarmStartConfig fields. An existing cached build with the same
    configuration is reused unless `overwrite`. When the repository ships the weights for this
    configuration (`shipped_weights_path`) and `use_shipped`, they are loaded instead of trained
    (seconds instead of minutes; tests/models/test_warm_start.py checks that training reproduces
    them). The folder is written atomically.
    """

    unknown = set(overrides) - set(WarmStartConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown warm-start option(s) {sorted(unknown)}; valid: {sorted(WarmStartConfig.__dataclass_fields__)}")
    config = WarmStartConfig(seed=seed, steps=steps, **overrides)
    return build_once(warm_start_path(cache_dir, config),
                      lambda out_dir: _build_warm_start(cache_dir, config, out_dir, use_shipped), rebuild=overwrite)


def _build_warm_start(cache_dir: str | os.PathLike, config: WarmStartConfig, out_dir: Path, use_shipped: bool) -> Path:
    base = tiny_model_path(cache_dir, config.base_preset, config.seed)
    tokenizer = load_tokenizer(str(base))
    shipped = shipped_weights_path(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = load_model(str(base))
        if use_shipped and shipped.exists():
            _load_shipped(model, shipped)
            losses, source = [], f"shipped {shipped.name}"
        else:
            print(f"warm start: training the tiny model on the geometry task ({config.steps} steps; "
                  f"cached in {out_dir} afterwards)", flush=True)
            losses, source = train_warm_start(model, tokenizer, config), "trained"
    # Temp sibling + rename: a crash or a concurrent builder never leaves a half-written model.
    summary = {"config": asdict(config), "version": WARM_START_VERSION, "families": list(config.families or FAMILIES),
               "key": warm_start_key(config), "source": source,
               "final_loss": sum(losses[-20:]) / min(20, len(losses)) if losses else None}
    return save_pretrained_atomically(model, tokenizer, out_dir, {"warm_start.json": json.dumps(summary, indent=2)})


def _load_shipped(model, path: Path) -> None:
    """Load shipped weights into `model`; every tensor must be there with the model's shape."""
    from safetensors.torch import load_file

    state = load_file(path)
    own = model.state_dict()
    # Tied embeddings: the file holds the embedding once, as save_pretrained writes it.
    missing = [k for k in own if k not in state and not (k == "lm_head.weight" and model.config.tie_word_embeddings)]
    wrong = [k for k in state if k not in own or state[k].shape != own[k].shape]
    if missing or wrong:
        raise RuntimeError(f"shipped warm start {path} does not fit the tiny model built from code "
                           f"(missing {missing[:3]}, unexpected or misshapen {wrong[:3]}); delete it or rebuild it "
                           f"with scripts/ship_warm_start.py")
    model.load_state_dict(state, strict=False)
    if model.config.tie_word_embeddings:
        model.tie_weights()


def ship_warm_start(cache_dir: str | os.PathLike, seed: int = 0, **overrides) -> Path:
    """Train a warm start from code (the default, or with WarmStartConfig `overrides`; ignoring any
    shipped file) and write its weights to `shipped_weights_path`: what scripts/ship_warm_start.py
    runs after a recipe change."""
    from safetensors.torch import load_file, save_file

    config = WarmStartConfig(seed=seed, **overrides)
    folder = build_geometry_warm_start(cache_dir, seed=seed, use_shipped=False, **overrides)
    summary = json.loads((folder / "warm_start.json").read_text())
    if summary.get("source", "trained") != "trained":
        folder = build_geometry_warm_start(cache_dir, seed=seed, use_shipped=False, overwrite=True, **overrides)
    state = load_file(folder / "model.safetensors")
    out = shipped_weights_path(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata={"warm_start_key": warm_start_key(config), "version": str(WARM_START_VERSION),
                                         "built_on": build_fingerprint()})
    return out


# CPU features that change which kernels torch/oneDNN pick for the same capability level.
_KERNEL_FLAGS = ("avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile", "amx_bf16", "bf16", "sve", "sve2", "i8mm")


def build_fingerprint() -> str:
    """The torch build, CPU model and kernel features a warm start was trained with: on the same
    ones a rebuild from code is bit-identical (one thread, fixed seeds); elsewhere reductions may
    sum in another order and 1200 steps amplify that, so only the trained model's behaviour can
    match. The capability level alone ("AVX512") was not enough: two machines reporting it built
    different bits from the same code."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "CPU part"):  # x86, aarch64
                model = value.strip()
            elif key in ("flags", "Features"):
                flags = set(value.split())
                break
    except OSError:  # not Linux: the model name platform gives
        pass
    features = "+".join(f for f in _KERNEL_FLAGS if f in flags) or "none"
    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {model}, {features}"


def geometry_warm_start_path(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """The default warm start for `seed` (the built-in name `tiny-geometry@seed`), built on first use."""
    return build_geometry_warm_start(cache_dir, seed=seed)


# GRAO's setting (recipes/grao_unseen.yaml): one family where a construction helps and one where it hurts,
# never shown to the warm start. Their questions are worded unlike the six others' (a rectangle's sides,
# an exterior angle), so the policy starts without their solution at all.
UNSEEN_FAMILIES = ("rectangle_perimeter", "exterior_angle")


SEEN_FAMILIES = tuple(name for name in FAMILIES if name not in UNSEEN_FAMILIES)


def partial_warm_start_path(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """The warm start without UNSEEN_FAMILIES (the built-in name `tiny-geometry-partial@seed`), built on first use."""
    return build_geometry_warm_start(cache_dir, seed=seed, families=SEEN_FAMILIES)


# GCPO's setting (recipes/gcpo_rare.yaml): the warm start writes a construction in 8% of its solutions
# (against half), so at the start a group of 8 holds about one construction and a construction's
# payoff has to be found, not only sharpened. GeometryZero's claim is about that case. Calibrated on
# RL's 'train' split (`scripts/warm_start.py --aux-fraction 0.08 --eval 512 --samples 4 --forced`,
# bench/results/warm_start_rare.json): it samples a construction in 6-16% of completions per family
# (11% overall), accuracy 0.50; forced constructions pay in two families (isosceles apex 0.27 against
# direct 0.12, rectangle 0.46 against 0.13), not in the two others where they help the default build
# (third angle 0.17 against 0.20, quad 0.07 against 0.12): with few examples it writes them worse.
RARE_AUX_FRACTION = 0.08


def rare_aux_warm_start_path(cache_dir: str | os.PathLike, seed: int = 0) -> Path:
    """The warm start that rarely constructs (the built-in name `tiny-geometry-rare@seed`), built on first use."""
    return build_geometry_warm_start(cache_dir, seed=seed, aux_fraction=RARE_AUX_FRACTION)


STYLE_PREFIXES = {"aux": "<think><aux>", "direct": "<think>"}


def sample_geometry_completions(model, tokenizer, rows: list[dict], samples_per_prompt: int = 1,
                                max_new_tokens: int = 48, temperature: float = 1.0, seed: int = 0,
                                batch_size: int = 256, style: str | None = None) -> list[list[str]]:
    """Sampled completions (text, special tokens dropped), `samples_per_prompt` per row, with HF generate.

    `style` forces a route: "aux" starts every completion with a construction, "direct" forbids the
    <aux> token; the returned texts include the forced start. None samples freely.
    """
    if style not in (None, *STYLE_PREFIXES):
        raise ValueError(f"style={style!r} is unknown; use None, 'aux' or 'direct'")
    prefix = STYLE_PREFIXES.get(style, "")
    banned = {"bad_words_ids": [[tokenizer.convert_tokens_to_ids("<aux>")]]} if style == "direct" else {}
    texts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) + prefix
             for r in rows]
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
                                       eos_token_id=tokenizer.eos_token_id, **banned)
        new_tokens = generated[:, batch["input_ids"].shape[1]:]
        outputs += [prefix + text for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    return [outputs[i * samples_per_prompt : (i + 1) * samples_per_prompt] for i in range(len(rows))]


def geometry_style_report(rows: list[dict], completions: list[list[str]]) -> dict[str, dict[str, float]]:
    """Per family (and "all"): accuracy, aux usage rate, accuracy with and without aux, pass@k.

    "With aux" = the completion attempts a construction (an <aux> tag), valid or not: the
    split GCPO's contrastive mask makes.
    """

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
