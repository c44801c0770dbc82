"""HFEngine: the same interface on transformers' `generate`, for machines without vLLM and for models
so small that vLLM's per-step overhead dominates (see bench/rollout.py).

The engine keeps its own copy of the model, loaded from the same path as the trainer's; a weight
sync copies tensors into it. Generation is batched (prompts x n rows, left-padded) with the KV cache.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from align.models import load_model, load_tokenizer
from align.rollout.base import Completion, RolloutEngine, SamplingSettings, check_prompts
from align.rollout.probe import bit_sums, model_logprobs


class HFEngine(RolloutEngine):
    """Rollouts on transformers. `batch_size` = rows (prompt samples) per generate call; None = all."""

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        seed: int = 0,
        probe_tolerance: float | None = None,
        batch_size: int | None = None,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"HFEngine(batch_size={batch_size}): must be >= 1, or None for one batch")
        self._device = torch.device(device)
        self._model = load_model(model_path, dtype=dtype, device=self._device).eval()
        self._model.requires_grad_(False)
        self._tok = load_tokenizer(model_path)
        self._batch_size = batch_size
        eos = self._model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        # vLLM stops on the tokenizer's EOS and the generation config's; do the same.
        self._eos_ids = sorted({self._tok.eos_token_id, *eos} - {None})
        self._pad_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else self._eos_ids[0]
        # transformers fills every sampling option left unset in the GenerationConfig we pass from
        # the checkpoint's generation_config.json (an Instruct model's repetition_penalty, top_k,
        # min_p...): samples would then come from a distribution neither rollout.* nor the reported
        # logprobs describe. A neutral config leaves exactly what `SamplingSettings` says.
        from transformers import GenerationConfig

        self._model.generation_config = GenerationConfig(eos_token_id=self._eos_ids, pad_token_id=self._pad_id)
        # Unseeded requests draw their seed from this, so a run is reproducible from `seed` alone.
        self._seeds = torch.Generator().manual_seed(seed)
        self._asleep = False
        state = self._model.state_dict()
        self._init_probe(vocab_size=self._model.get_output_embeddings().weight.shape[0], seed=seed, dtype=dtype,
                         probe_tolerance=probe_tolerance, expected_names=state.keys())

    # ---- generation ------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[list[Completion]]:
        check_prompts(prompts, n)
        self._check_awake()
        seed = sampling.seed if sampling.seed is not None else int(torch.randint(2**31, (1,), generator=self._seeds))
        rows = [p for p in prompts for _ in range(n)]
        step = self._batch_size or len(rows)
        flat: list[Completion] = []
        devices = [self._device] if self._device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for start in range(0, len(rows), step):
                flat += self._generate_batch(rows[start : start + step], sampling)
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

    @torch.no_grad()
    def _generate_batch(self, prompts: list[list[int]], sampling: SamplingSettings) -> list[Completion]:
        from transformers import GenerationConfig

        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, prompt in enumerate(prompts):  # left padding: every row's next token is at the end
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        greedy = sampling.temperature == 0
        config = GenerationConfig(
            max_new_tokens=sampling.max_tokens, do_sample=not greedy,
            temperature=None if greedy else sampling.temperature, top_p=None if greedy else sampling.top_p,
            top_k=None if greedy else sampling.top_k, repetition_penalty=1.0,
            eos_token_id=self._eos_ids, pad_token_id=self._pad_id, use_cache=True,
            stop_strings=list(sampling.stop) or None, return_dict_in_generate=True, output_scores=True,
        )
        out = self._model.generate(
            input_ids=ids.to(self._device), attention_mask=mask.to(self._device), generation_config=config,
            tokenizer=self._tok if sampling.stop else None,
            # transformers turns on lock-step generation across ranks whenever ZeRO-3 is configured;
            # this engine's copy is whole and each rank generates its own share (sizes may differ).
            synced_gpus=False,
        )
        new_tokens = out.sequences[:, width:]
        # output_scores are the logits after temperature, top-k and top-p (filtered tokens at -inf):
        # their log_softmax is the distribution the token was drawn from, softmax(z / T) renormalised
        # over the kept tokens, as vLLM's processed_logprobs. Greedy rows are left unprocessed (T = 1).
        logprobs = torch.stack(
            [torch.log_softmax(step.float(), -1).gather(-1, new_tokens[:, t : t + 1])[:, 0] for t, step in enumerate(out.scores)],
            dim=1,
        )
        return [
            self._completion(prompt, new_tokens[row].tolist(), logprobs[row].tolist(), sampling.stop)
            for row, prompt in enumerate(prompts)
        ]

    def _decode(self, tokens: list[int]) -> str:
        return self._tok.decode(tokens, skip_special_tokens=True)

    def _completion(self, prompt: list[int], tokens: list[int], logprobs: list[float], stop: list[str]) -> Completion:
        """Cut a padded row where vLLM would have: after the first EOS, or after the token that
        completes the first stop string (the text then ends before that string)."""
        end, reason = len(tokens), "length"
        for k, token in enumerate(tokens):
            if token in self._eos_ids:
                end, reason = k + 1, "stop"
                break
        tokens, logprobs = tokens[:end], logprobs[:end]
        text = self._decode(tokens)
        if stop and any(s in text for s in stop):
            lo, hi = 1, len(tokens)  # fewest tokens whose text contains a stop string
            while lo < hi:
                mid = (lo + hi) // 2
                if any(s in self._decode(tokens[:mid]) for s in stop):
                    hi = mid
                else:
                    lo = mid + 1
            tokens, logprobs, reason = tokens[:lo], logprobs[:lo], "stop"
            text = self._decode(tokens)
            text = text[: min(text.find(s) for s in stop if s in text)]
        return Completion(list(prompt), tokens, logprobs, text, reason, self._weight_version)

    def score(self, sequences: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        self._check_awake()
        return model_logprobs(self._model, sequences, batch_size=self._batch_size or 8)

    # ---- weights ---------------------------------------------------------------------------
    @torch.no_grad()
    def _load(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        self.wake()  # asleep, the weights wait in host memory: bring them back, then overwrite them
        state = self._model.state_dict()  # tied weights appear under both names, sharing storage
        for name, tensor in named_tensors:
            if name not in state:
                raise KeyError(f"load_weights: '{name}' is not a tensor of this model; send checkpoint names (merged_named_tensors(model))")
            if state[name].shape != tensor.shape:
                raise ValueError(f"load_weights: '{name}' has shape {tuple(tensor.shape)}, the engine's is {tuple(state[name].shape)}")
            state[name].copy_(tensor)

    def _engine_tensors(self, names: set[str]) -> dict[str, torch.Tensor]:
        return {n: t for n, t in self._model.state_dict().items() if n in names}

    def _engine_bit_sums(self, dtype: torch.dtype) -> dict[str, int]:
        return {} if self._asleep else bit_sums(self._model.state_dict().items(), dtype)

    # ---- memory ----------------------------------------------------------------------------
    def _check_awake(self) -> None:
        if self._asleep:
            raise RuntimeError("HFEngine is asleep; call wake() before generate/score/load_weights")

    def sleep(self) -> None:
        """On a GPU, move the engine's model to host memory; a no-op on CPU."""
        if self._device.type == "cuda" and not self._asleep:
            self._model.to("cpu")
            torch.cuda.empty_cache()
            self._asleep = True

    def wake(self) -> None:
        if self._asleep:
            self._model.to(self._device)
            self._asleep = False

    def close(self) -> None:
        self.__dict__.pop("_model", None)
