"""The built-in tiny model: a Qwen2-architecture causal LM and a tokenizer, both made in code.

Nothing is downloaded. The model is written to a local folder in the ordinary Hugging Face format
(config.json, model.safetensors, tokenizer.json, tokenizer_config.json with a chat template), so
transformers and vLLM load it exactly like a hub checkpoint. Same preset + seed -> same weights.

The tokenizer is a byte-level BPE (the Qwen2/GPT-2 scheme) with no merges over printable ASCII
and newline, so every character is one token; plus ChatML special tokens and the tags the built-in
tasks use (<think>, <answer>, <aux>, ...) as single tokens, so a small model spends its capacity
on the task rather than on spelling tags. Byte-level matters: transformers 5 loads any folder whose
config says qwen2 with Qwen2Tokenizer, which imposes byte-level pre-tokenization; a vocabulary in
that alphabet tokenizes identically in transformers and vLLM.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from align.models.saving import build_once, save_pretrained_atomically

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
# Non-special added tokens: they survive `skip_special_tokens=True` decoding, so rewards see them.
TAG_TOKENS = ["<think>", "</think>", "<answer>", "</answer>", "<aux>", "</aux>"]
# Byte-level alphabet (GPT-2's bytes_to_unicode): printable ASCII maps to itself except space and
# newline, which map to U+0120 and U+010A.
CHARACTERS = ["\u010a", "\u0120"] + [chr(c) for c in range(33, 127)]

# ChatML, as Qwen2.5-Instruct uses: the trainer's prompts go through the same template path as for
# a real instruct model.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Attention head size must be one vLLM's CPU backend supports (32, 64, 80, 96, 112, 128, ...).
PRESETS: dict[str, dict] = {
    # ~0.8M parameters: the default for tests and the embedded GCPO demo.
    "tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024),
    # ~40M parameters: a shape where vLLM's batching pays off on CPU (rollout benchmark).
    "qwen2-40m": dict(hidden_size=640, intermediate_size=1792, num_hidden_layers=9,
                      num_attention_heads=10, num_key_value_heads=2, max_position_embeddings=1024),
}


def build_tokenizer():
    """A byte-level, one-token-per-character tokenizer with ChatML and task tags."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    # BPE with no merges splits text into single characters; unknown characters map to <|endoftext|>.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<|endoftext|>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
    )
    tok.add_tokens(TAG_TOKENS)
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def build_config(tokenizer, preset: str = "tiny"):
    from transformers import Qwen2Config

    if preset not in PRESETS:
        raise ValueError(f"unknown tiny-model preset '{preset}': choose one of {sorted(PRESETS)}")
    return Qwen2Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,  # as the small Qwen2.5 checkpoints do; weight sync must cope
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
        **PRESETS[preset],
    )


def spec_hash(preset: str, seed: int) -> str:
    """Changes whenever the preset, the seed or the tokenizer definition changes."""
    spec = json.dumps([preset, seed, PRESETS[preset], SPECIAL_TOKENS, TAG_TOKENS, CHARACTERS, CHAT_TEMPLATE])
    return hashlib.sha256(spec.encode()).hexdigest()[:12]


def write_tiny_model(out_dir: str | os.PathLike, preset: str = "tiny", seed: int = 0) -> Path:
    """Build the model + tokenizer from `seed` and save them to `out_dir` (overwritten atomically)."""
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    config = build_config(tokenizer, preset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return save_pretrained_atomically(model, tokenizer, out_dir)


def write_tiny_reward_model(out_dir: str | os.PathLike, preset: str = "tiny", seed: int = 0) -> Path:
    """A sequence classifier (one output, a scalar reward) on the tiny model's shape and tokenizer,
    built from `seed`: a stand-in reward model for `rm:` tests and benchmarks (its scores mean nothing)."""
    from transformers import AutoModelForSequenceClassification

    tokenizer = build_tokenizer()
    config = build_config(tokenizer, preset)
    config.num_labels = 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    return save_pretrained_atomically(model, tokenizer, Path(out_dir))


def tiny_model_path(cache_dir: str | os.PathLike, preset: str = "tiny", seed: int = 0) -> Path:
    """The cached folder of a built-in model, built on first use."""
    path = Path(cache_dir).expanduser() / "models" / f"{preset}-seed{seed}-{spec_hash(preset, seed)}"
    return build_once(path, lambda out: write_tiny_model(out, preset, seed))
