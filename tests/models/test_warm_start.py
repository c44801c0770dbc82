"""The geometry warm start: masking, the 50/50 style mix, determinism, caching, loading (transformers, vLLM)."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from align.data.geometry import FAMILIES, generate_geometry_rows
from align.demo import resolve_model_path
from align.models import load_model, load_tokenizer
from align.demo.warm_start import (
    WarmStartConfig,
    accumulate_batch_loss,
    arithmetic_facts,
    build_geometry_warm_start,
    collate,
    draw_batch,
    drill_examples,
    encode_sft_example,
    geometry_style_report,
    sample_geometry_completions,
    sft_examples,
)

FAST = dict(steps=12, batch_size=8, warmup_steps=2)  # enough to move the weights, seconds on 2 cores


@pytest.fixture(scope="module")
def tokenizer(tiny_path):
    return load_tokenizer(tiny_path)


@pytest.fixture(scope="module")
def fast_build(cache_dir):
    return build_geometry_warm_start(cache_dir, seed=0, **FAST)


def test_only_completion_tokens_carry_loss(tokenizer):
    prompt = [{"role": "user", "content": "Angles on a line: one is 30. Find the other."}]
    ids, labels = encode_sft_example(tokenizer, prompt, "<think>x=180-30</think><answer>150</answer>")
    completion = tokenizer("<think>x=180-30</think><answer>150</answer>", add_special_tokens=False)["input_ids"]
    n_prompt = len(ids) - len(completion) - 1
    assert labels[:n_prompt] == [-100] * n_prompt
    assert labels[n_prompt:] == completion + [tokenizer.eos_token_id] == ids[n_prompt:]
    batch = collate([(ids, labels), (ids[:5], labels[:5])], tokenizer.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == (2, len(ids))
    assert batch["attention_mask"][1].tolist() == [1] * 5 + [0] * (len(ids) - 5)
    assert (batch["labels"][1, 5:] == -100).all()


def test_length_sorted_micro_batches_give_the_whole_batch_loss_and_gradient(tokenizer, tiny_path):
    examples = sft_examples(tokenizer)
    batch = draw_batch(examples, WarmStartConfig(batch_size=12, drill_fraction=0.0), torch.Generator().manual_seed(1))
    assert len({len(ids) for ids, _ in batch}) > 3  # lengths differ: the pieces are padded differently
    model = load_model(tiny_path)
    whole = model(**collate(batch, tokenizer.pad_token_id)).loss
    whole.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    loss = accumulate_batch_loss(model, batch, tokenizer.pad_token_id, micro_batches=4)
    assert loss == pytest.approx(whole.item(), rel=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-4, atol=1e-6)


def test_every_family_is_trained_in_both_styles(tokenizer):
    examples = sft_examples(tokenizer)
    assert set(examples) == set(FAMILIES)
    aux_token = tokenizer.convert_tokens_to_ids("<aux>")
    config = WarmStartConfig(batch_size=512, drill_fraction=0.0)
    batch = draw_batch(examples, config, torch.Generator().manual_seed(0))
    for name, pool in examples.items():
        drawn = [ex for ex in batch if any(ex is p for p in pool)]
        share_aux = sum(aux_token in ids for ids, _ in drawn) / len(drawn)
        assert len(drawn) > 30 and 0.3 < share_aux < 0.7, (name, len(drawn), share_aux)


def test_a_partial_warm_start_sees_only_its_families_and_has_its_own_key(tokenizer):
    from align.demo.warm_start import UNSEEN_FAMILIES, shipped_weights_path, warm_start_key

    seen = tuple(f for f in FAMILIES if f not in UNSEEN_FAMILIES)
    assert set(sft_examples(tokenizer, seen)) == set(seen) and len(seen) == len(FAMILIES) - 2
    with pytest.raises(ValueError, match="rectangle"):
        sft_examples(tokenizer, ("rectangle",))
    # The field came after the shipped build: the default key (and so the shipped file's name) must not move.
    assert shipped_weights_path(WarmStartConfig()).exists()
    assert warm_start_key(WarmStartConfig(families=seen)) != warm_start_key(WarmStartConfig())


def test_the_partial_warm_start_is_shipped(tmp_path):
    # GRAO's setting loads in seconds instead of a ~9 minute build (scripts/ship_warm_start.py --partial rebuilds it).
    from align.demo.warm_start import partial_warm_start_path

    summary = json.loads((partial_warm_start_path(tmp_path) / "warm_start.json").read_text())
    assert summary["source"].startswith("shipped") and "rectangle_perimeter" not in summary["families"]


def test_the_rare_warm_start_draws_constructions_at_its_fraction_and_is_shipped(tokenizer, tmp_path):
    # GCPO's setting: a group of 8 should hold about one construction, so the draw must follow aux_fraction.
    from align.demo.warm_start import RARE_AUX_FRACTION, rare_aux_warm_start_path, shipped_weights_path

    examples, aux_token = sft_examples(tokenizer), tokenizer.convert_tokens_to_ids("<aux>")
    batch = draw_batch(examples, WarmStartConfig(batch_size=2048, drill_fraction=0.0, aux_fraction=RARE_AUX_FRACTION),
                       torch.Generator().manual_seed(0))
    share = sum(aux_token in ids for ids, _ in batch) / len(batch)
    assert abs(share - RARE_AUX_FRACTION) < 0.02, share
    assert shipped_weights_path(WarmStartConfig(aux_fraction=RARE_AUX_FRACTION)).exists()
    summary = json.loads((rare_aux_warm_start_path(tmp_path) / "warm_start.json").read_text())
    assert summary["source"].startswith("shipped") and summary["config"]["aux_fraction"] == RARE_AUX_FRACTION


def test_the_drill_teaches_every_written_step_and_no_problem(tokenizer):
    """Every one-operation step a solution writes (either style, any family) is a drilled fact with
    its true value; compositions are not drilled; no drilled prompt is a geometry question."""
    facts = arithmetic_facts()
    rows = generate_geometry_rows("test", 64)
    steps = [statement.split("=") for row in rows for solution in (row["solution_aux"], row["solution_direct"])
             for statement in solution.split("<think>")[1].split("</think>")[0].replace("<aux>", ";").replace("</aux>", ";").split(";")
             if "=" in statement]
    one_op = [(expr, parts) for _, expr, *parts in steps if sum(expr.count(op) for op in "+-*") == 1]
    assert len(one_op) > 64 and all(facts[expr] == eval(expr) for expr, _ in one_op)  # noqa: S307 (digits and one operator)
    assert all(int(parts[0]) == facts[expr] for expr, parts in one_op if parts)  # stated values agree
    assert "180-35-60" not in facts and "2*(9+16)" not in facts
    drilled = {tokenizer.decode(ids) for ids, _ in drill_examples(tokenizer)}
    assert len(drilled) == 2 * len(facts) and not any("Find" in text for text in drilled)


def test_drill_fraction_sets_the_share_of_drill_examples(tokenizer):
    examples, drill = sft_examples(tokenizer), drill_examples(tokenizer)
    drill_ids = {id(ex) for ex in drill}
    for fraction in (0.0, 0.5):
        batch = draw_batch(examples, WarmStartConfig(batch_size=512, drill_fraction=fraction),
                           torch.Generator().manual_seed(0), drill)
        share = sum(id(ex) in drill_ids for ex in batch) / len(batch)
        assert abs(share - fraction) < 0.07, (fraction, share)
    with pytest.raises(ValueError, match="no drill examples"):
        draw_batch(examples, WarmStartConfig(drill_fraction=0.5), torch.Generator())


def test_build_is_cached_loadable_and_deterministic(fast_build, cache_dir, tmp_path):
    path = Path(fast_build)
    meta = json.loads((path / "warm_start.json").read_text())
    assert meta["config"]["steps"] == FAST["steps"] and meta["final_loss"] > 0
    assert not list(path.parent.glob("*.tmp-*"))  # the temp folder was renamed away
    weights = load_file(path / "model.safetensors")
    base = load_file(Path(resolve_model_path("tiny", cache_dir)) / "model.safetensors")
    assert any(not torch.equal(weights[k], base[k]) for k in base)  # training moved the weights
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert build_geometry_warm_start(cache_dir, seed=0, **FAST) == path  # reused, not rebuilt
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp
    again = build_geometry_warm_start(tmp_path, seed=0, **FAST)  # same seed elsewhere: same weights
    other = load_file(again / "model.safetensors")
    assert all(torch.equal(weights[k], other[k]) for k in weights)
    model = load_model(str(path))
    assert model.config.tie_word_embeddings and model.config.vocab_size == len(load_tokenizer(str(path)))


def test_bad_option_is_named(cache_dir):
    with pytest.raises(ValueError, match="stepz"):
        build_geometry_warm_start(cache_dir, stepz=3)


def test_builtin_name_resolves_to_the_warm_start(fast_build, cache_dir, monkeypatch):
    import align.demo

    monkeypatch.setitem(align.demo.BUILDERS, "tiny-geometry",
                        lambda cache, seed=0: build_geometry_warm_start(cache, seed=seed, **FAST))
    assert resolve_model_path("tiny-geometry", cache_dir) == str(fast_build)
    assert resolve_model_path("tiny-geometry@0", cache_dir) == str(fast_build)


def test_style_report_counts(fast_build):
    rows = generate_geometry_rows("test", 2, families=["supplement"])
    completions = [[rows[0]["solution_aux"], "<think>x</think><answer>1</answer>"], [rows[1]["solution_direct"]] * 2]
    report = geometry_style_report(rows, completions)["supplement"]
    assert report == {"accuracy": 0.75, "aux_rate": 0.25, "acc_with_aux": 1.0, "acc_without_aux": 2 / 3,
                      "pass_at_k": 1.0, "n": 4}
    model, tok = load_model(str(fast_build)), load_tokenizer(str(fast_build))
    sampled = sample_geometry_completions(model, tok, rows, samples_per_prompt=3, max_new_tokens=8)
    assert [len(s) for s in sampled] == [3, 3] and all(isinstance(t, str) for s in sampled for t in s)


def test_a_forced_style_is_the_route_every_sample_takes(fast_build):
    model, tok = load_model(str(fast_build)), load_tokenizer(str(fast_build))
    aux_id = tok.convert_tokens_to_ids("<aux>")

    def favour_aux(module, inputs, logits):  # a model that writes <aux> wherever it may
        logits[..., aux_id] += 30.0
        return logits

    model.lm_head.register_forward_hook(favour_aux)
    rows = generate_geometry_rows("train", 4)
    free = sample_geometry_completions(model, tok, rows, samples_per_prompt=8, max_new_tokens=6)
    aux = sample_geometry_completions(model, tok, rows, samples_per_prompt=8, max_new_tokens=6, style="aux")
    direct = sample_geometry_completions(model, tok, rows, samples_per_prompt=8, max_new_tokens=6, style="direct")
    assert all("<aux>" in t for s in free for t in s)
    assert all(t.startswith("<think><aux>") for s in aux for t in s)
    assert all(t.startswith("<think>") and "<aux>" not in t for s in direct for t in s)
    with pytest.raises(ValueError, match="style='auxx'"):
        sample_geometry_completions(model, tok, rows, style="auxx")


@pytest.mark.vllm
def test_vllm_loads_the_warm_start(fast_build):
    vllm = pytest.importorskip("vllm")
    tok = load_tokenizer(str(fast_build))
    text = tok.apply_chat_template(generate_geometry_rows("test", 1)[0]["prompt"], add_generation_prompt=True, tokenize=False)
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    llm = vllm.LLM(model=str(fast_build), dtype="float32", enforce_eager=True, kv_cache_memory_bytes=64 << 20, seed=0)
    try:
        out = llm.generate([{"prompt_token_ids": prompt}], vllm.SamplingParams(max_tokens=8, temperature=0.0, logprobs=0),
                           use_tqdm=False)[0].outputs[0]
    finally:
        del llm
    model = load_model(str(fast_build))
    with torch.no_grad():
        logits = model(torch.tensor([prompt + list(out.token_ids)])).logits[0, len(prompt) - 1 : -1]
    hf = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(out.token_ids)[:, None])[:, 0]
    engine = torch.tensor([next(iter(d.values())).logprob for d in out.logprobs])
    torch.testing.assert_close(engine, hf, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_default_warm_start_is_calibrated(cache_dir):
    """The shipped default: sampled held-out accuracy clearly non-zero but far from saturated (RL's
    room); every family learned (no family at 0, the gap that capped RL before); both styles written
    in every family; where aux hurts, direct answers beat aux answers."""
    path = resolve_model_path("tiny-geometry", cache_dir)
    model, tok = load_model(path), load_tokenizer(path)
    rows = generate_geometry_rows("test", 400, seed=1)
    report = geometry_style_report(rows, sample_geometry_completions(model, tok, rows, samples_per_prompt=4))
    assert 0.3 <= report["all"]["accuracy"] <= 0.8, report["all"]
    hurts = [report[n] for n, f in FAMILIES.items() if not f.aux_helps]
    assert sum(r["acc_without_aux"] - r["acc_with_aux"] for r in hurts) / len(hurts) > 0.1
    assert all(0.2 < report[n]["aux_rate"] < 0.8 for n in FAMILIES)
    assert all(report[n]["accuracy"] >= 0.05 for n in FAMILIES), {n: report[n]["accuracy"] for n in FAMILIES}


@pytest.mark.slow
def test_default_warm_start_constructs_usefully_where_the_task_says_aux_helps(cache_dir):
    """In each aux-helps family, this model's aux answers must be clearly more accurate than its direct
    ones, or GCPO's contrast there is empty. It failed for WARM_START_VERSION 3 (with-aux minus
    without-aux -0.035, -0.023, +0.030, -0.050), before the arithmetic drill."""
    path = resolve_model_path("tiny-geometry", cache_dir)
    model, tok = load_model(path), load_tokenizer(path)
    rows = generate_geometry_rows("test", 400, seed=1)
    report = geometry_style_report(rows, sample_geometry_completions(model, tok, rows, samples_per_prompt=4))
    gaps = {n: report[n]["acc_with_aux"] - report[n]["acc_without_aux"] for n, f in FAMILIES.items() if f.aux_helps}
    assert all(gap > 0.1 for gap in gaps.values()) and sum(gaps.values()) / len(gaps) > 0.2, gaps


def test_shipped_weights_are_loaded_instead_of_training(fast_build, tmp_path, monkeypatch):
    import align.demo.warm_start as warm_start

    shipped_dir = tmp_path / "shipped"
    monkeypatch.setattr(warm_start, "SHIPPED_DIR", shipped_dir)
    config = WarmStartConfig(seed=0, **FAST)
    shipped_dir.mkdir()
    (shipped_dir / warm_start.shipped_weights_path(config).name).write_bytes((fast_build / "model.safetensors").read_bytes())

    def no_training(*args, **kwargs):
        raise AssertionError("trained although the weights are shipped")

    monkeypatch.setattr(warm_start, "train_warm_start", no_training)
    folder = build_geometry_warm_start(tmp_path / "cache", seed=0, **FAST)
    assert json.loads((folder / "warm_start.json").read_text())["source"].startswith("shipped")
    loaded, built = load_file(folder / "model.safetensors"), load_file(fast_build / "model.safetensors")
    assert set(loaded) == set(built) and all(torch.equal(loaded[k], built[k]) for k in built)
    # Another recipe has another key: no shipped file, so it trains (here: the stub refuses loudly).
    with pytest.raises(AssertionError, match="trained although"):
        build_geometry_warm_start(tmp_path / "cache", seed=0, **{**FAST, "steps": 13})


def test_a_shipped_file_that_does_not_fit_is_a_loud_error(tmp_path, monkeypatch):
    import align.demo.warm_start as warm_start
    from safetensors.torch import save_file

    monkeypatch.setattr(warm_start, "SHIPPED_DIR", tmp_path / "shipped")
    config = WarmStartConfig(seed=0, **FAST)
    (tmp_path / "shipped").mkdir()
    save_file({"model.embed_tokens.weight": torch.zeros(3, 3)}, str(warm_start.shipped_weights_path(config)))
    with pytest.raises(RuntimeError, match="does not fit the tiny model"):
        build_geometry_warm_start(tmp_path / "cache", seed=0, **FAST)


def test_the_build_fingerprint_names_the_cpu_model_and_its_kernel_features(monkeypatch):
    """Two machines that both report "AVX512" rebuilt different bits from the same code (CI, stop
    32): the fingerprint that licenses the bit-identical check must tell them apart."""
    from align.demo import warm_start

    real = Path.read_text

    def cpuinfo(text):
        return lambda self, *a, **k: text if str(self) == "/proc/cpuinfo" else real(self, *a, **k)

    monkeypatch.setattr(Path, "read_text", cpuinfo("model name\t: Intel Xeon 8480\nflags\t: fpu avx512f amx_tile amx_bf16 avx512_bf16\n"))
    intel = warm_start.build_fingerprint()
    monkeypatch.setattr(Path, "read_text", cpuinfo("model name\t: AMD EPYC\nflags\t: fpu avx512f avx512_bf16 avx512_vnni\n"))
    amd = warm_start.build_fingerprint()
    assert intel != amd and "Intel Xeon 8480" in intel and "amx_bf16" in intel and "amx" not in amd
    assert intel.startswith(f"torch {torch.__version__}, ")


@pytest.mark.slow
def test_training_from_code_reproduces_the_shipped_weights(tmp_path):
    """Rebuild the default warm start from code (minutes, one thread) and compare it with the shipped file.

    On the torch build and CPU kernels it was shipped from (its `built_on` metadata) the rebuild is
    bit-identical. Elsewhere reductions may sum in another order and 600 steps amplify that into
    different weights, so there the check is what the models do: held-out greedy accuracy alike.
    The shipped v4 file carries the older, coarser fingerprint ("torch 2.13.0+cpu, AVX512"), which
    matched a CI machine whose rebuild differs, so it is judged by behaviour everywhere (here: 0.84
    rebuilt against 0.90 shipped on 256 held-out problems)."""
    from safetensors import safe_open

    from align.demo.warm_start import build_fingerprint, shipped_weights_path

    path = shipped_weights_path(WarmStartConfig())
    # A change to the warm-start recipe or the task changes the key and needs a new shipped file.
    assert path.exists(), f"no shipped warm start for the default recipe: run scripts/ship_warm_start.py ({path.name})"
    assert path.stat().st_size < 8 << 20  # a few MB in the repository, not more
    with safe_open(str(path), "pt") as f:
        built_on = (f.metadata() or {}).get("built_on")
    rebuilt = build_geometry_warm_start(tmp_path, seed=0, use_shipped=False)
    shipped = load_file(path)
    ours = load_file(rebuilt / "model.safetensors")
    assert set(ours) == set(shipped)
    if built_on == build_fingerprint():
        differ = [k for k in shipped if not torch.equal(ours[k], shipped[k])]
        assert not differ, f"rebuilt on {built_on} but {len(differ)} tensors differ from the shipped file, e.g. {differ[0]}"
        return
    tok = load_tokenizer(str(rebuilt))
    rows = generate_geometry_rows("test", 256, seed=0)
    shipped_model = load_model(str(build_geometry_warm_start(tmp_path / "shipped", seed=0)))
    accuracy = [geometry_style_report(rows, sample_geometry_completions(m, tok, rows, temperature=1e-4))["all"]["accuracy"]
                for m in (load_model(str(rebuilt)), shipped_model)]
    assert abs(accuracy[0] - accuracy[1]) <= 0.08, f"built on {built_on}, here {build_fingerprint()}: greedy accuracy {accuracy}"
