"""The prompt stream: which dataset rows each rank trains on at each step, resumable exactly.

Every rank walks the same seeded permutation of the dataset (reshuffled each epoch) and takes its
own slice of each global batch, so ranks never see the same prompt within a step and the data
position is one pair of integers that a checkpoint stores.
"""

from __future__ import annotations

import torch

from align.data.loading import DatasetSourceError


class PromptStream:
    def __init__(self, dataset, seed: int, rank: int = 0, world_size: int = 1):
        if len(dataset) == 0:
            raise DatasetSourceError("the training dataset is empty; check data.source and data.split")
        self.dataset, self.seed, self.rank, self.world_size = dataset, seed, rank, world_size
        self.epoch, self.position = 0, 0
        self._order = self._permutation()

    def _permutation(self) -> list[int]:
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return torch.randperm(len(self.dataset), generator=gen).tolist()

    def _take_global(self, count: int) -> list[int]:
        indices = []
        while len(indices) < count:
            if self.position >= len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._permutation()
            indices.append(self._order[self.position])
            self.position += 1
        return indices

    def next_rows(self, global_count: int) -> list[dict]:
        """This rank's share of the next `global_count` prompts (global_count % world_size == 0)."""
        if global_count % self.world_size:
            raise ValueError(f"next_rows({global_count}): not divisible by {self.world_size} ranks; use next_share")
        return self.next_share(global_count)[0]

    def next_share(self, global_count: int) -> tuple[list[dict], list[int]]:
        """This rank's contiguous share of the next `global_count` prompts, and each row's position
        in that global draw. Shares differ by at most one row when the count does not divide."""
        base, extra = divmod(global_count, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        end = start + base + (self.rank < extra)
        indices = self._take_global(global_count)[start:end]
        return [self.dataset[i] for i in indices], list(range(start, end))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._permutation()


def encode_prompt(tokenizer, prompt) -> list[int]:
    """Token ids of a prompt: chat messages go through the chat template, plain text is used as is."""
    if isinstance(prompt, list):
        if not getattr(tokenizer, "chat_template", None):
            raise DatasetSourceError(
                f"the prompts are chat messages but the tokenizer of {getattr(tokenizer, 'name_or_path', 'the model')!r} has no "
                "chat template; use a chat (instruct) model, or plain-text prompts (data.system_prompt=null and a text prompt column)"
            )
        text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer(prompt, add_special_tokens=False)["input_ids"]


def check_prompt_lengths(prompt_ids: list[list[int]], rows: list[dict], max_tokens: int, context: int) -> None:
    """Every prompt plus rollout.max_tokens must fit the model's context: an engine would fail or truncate."""
    for ids, row in zip(prompt_ids, rows):
        if len(ids) + max_tokens > context:
            raise _too_long(len(ids), row.get("prompt", ""), max_tokens, context)


_TOKEN_MARGIN = 16


def check_all_prompt_lengths(tokenizer, dataset, max_tokens: int, context: int, batch_size: int = 1000) -> None:
    """`check_prompt_lengths` for every row of `dataset` before step 1, not when a batch first draws a long one.

    Tokenised `batch_size` rows per call: the fast tokenizer's batched call (Rust, one call per batch).
    """
    for start in range(0, len(dataset), batch_size):
        prompts = dataset[start:start + batch_size]["prompt"]
        texts = [_chat_text(tokenizer, p) if isinstance(p, list) else p for p in prompts]
        # A token covers at least one byte of text (byte-level BPE, SentencePiece with byte fallback; the
        # margin covers a prefix-space token), so a short text cannot overflow: only the long are tokenised.
        # Measured here: 75-110 s per 1M rows to tokenise all, ~1 s to measure their bytes.
        suspects = [i for i, text in enumerate(texts) if len(text.encode()) + _TOKEN_MARGIN + max_tokens > context]
        if not suspects:
            continue
        encoded = tokenizer([texts[i] for i in suspects], add_special_tokens=False)["input_ids"]
        for offset, ids in zip(suspects, encoded):
            if len(ids) + max_tokens > context:
                raise _too_long(len(ids), prompts[offset], max_tokens, context, row=start + offset)


def _chat_text(tokenizer, messages: list) -> str:
    if not getattr(tokenizer, "chat_template", None):
        encode_prompt(tokenizer, messages)  # raises its one-line error
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def _too_long(tokens: int, prompt, max_tokens: int, context: int, row: int | None = None) -> DatasetSourceError:
    start = " ".join(str(prompt)[:50].split())
    where = f" at row {row} of the training rows" if row is not None else ""
    return DatasetSourceError(
        f"a prompt of {tokens} tokens{where} (starting {start!r}) + rollout.max_tokens={max_tokens} exceeds the model's "
        f"context of {context} tokens; filter long prompts from the dataset or lower rollout.max_tokens"
    )
