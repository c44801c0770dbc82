"""The tiny default loads in vLLM like any checkpoint, and its logprobs agree with transformers."""

import pytest
import torch

from align.models import load_model, load_tokenizer

vllm = pytest.importorskip("vllm")


def test_vllm_and_transformers_logprobs_agree(tiny_path):
    tok = load_tokenizer(tiny_path)
    text = tok.apply_chat_template([{"role": "user", "content": "Angle A = 30."}], add_generation_prompt=True, tokenize=False)
    prompt = tok(text, add_special_tokens=False)["input_ids"]
    llm = vllm.LLM(model=tiny_path, dtype="float32", enforce_eager=True, kv_cache_memory_bytes=64 << 20, seed=0)
    try:
        params = vllm.SamplingParams(n=3, max_tokens=12, logprobs=0, temperature=1.0, seed=1)
        outputs = llm.generate([{"prompt_token_ids": prompt}], params, use_tqdm=False)[0].outputs
    finally:
        del llm
    model = load_model(tiny_path)
    for out in outputs:
        ids = list(out.token_ids)
        engine_lp = torch.tensor([next(iter(d.values())).logprob for d in out.logprobs])
        with torch.no_grad():
            logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]
        hf_lp = torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(ids)[:, None])[:, 0]
        assert len(ids) > 0
        torch.testing.assert_close(engine_lp, hf_lp, atol=1e-4, rtol=0)
