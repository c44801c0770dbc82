"""Prompt token ids from chat messages, through the tokenizer's own chat template."""

from __future__ import annotations


def chat_prompt_ids(tokenizer, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
    """Token ids of `messages` rendered by the chat template, ready for RolloutEngine.generate.

    Rendered to text, then tokenized without adding special tokens: the template already holds
    them, and with transformers 5 this is the path that gives the same ids as vLLM's renderer.
    """
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("chat_prompt_ids: the tokenizer has no chat template; tokenize plain text prompts with tokenizer(text)")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]
