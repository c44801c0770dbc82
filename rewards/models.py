"""`rm:PATH_OR_HUB_ID`: a sequence-classification reward model scores prompt + completion.

    reward.functions=[rm:path/to/reward-model]
    reward.options={"rm:path/to/reward-model": {batch_tokens: 8192, normalize: true, clip: 5.0}}

The model is `AutoModelForSequenceClassification` with its own tokenizer and chat template: the
conversation (prompt messages, or a plain prompt as one user turn, then the assistant's reply) is
rendered by the REWARD MODEL's template, not the policy's, because that is the text it was trained
on. Its output at the last token (the model's own pooling, as in training) is the reward.

It runs in the training process on the trainer's device, without gradients, in batches of at most
`batch_tokens` padded tokens (sorted by length, right-padded so positions match an unpadded pass:
batching never changes a score). Under ZeRO-3 it is replicated on every rank, or sharded like the
reference model (`placement`); sharded, every rank runs the same number of forwards.

Options (reward.options under the spec):
  batch_tokens   padded tokens per forward (default 8192)
  max_length     longest input in tokens (default: the smaller of the tokenizer's model_max_length
                 and the model's max_position_embeddings)
  truncation     "left" (default): keep the LAST max_length tokens (the reply, and the final token
                 the score is read at), counted in reward/.../truncated_frac and warned about once;
                 "error": stop with a one-line error naming the sample
  chat_template  "auto" (default): the model's template when it has one, else plain text;
                 "none": prompt text + completion text, tokenised with the model's special tokens
  label          which output to read when the model has several labels (default: it must have one)
  normalize      false (default) | true: (score - running mean) / running std, the moments over all
                 scores so far on all ranks (this batch included)
  clip           none (default) | c > 0: clamp the (normalised) reward to [-c, c]
  placement      "auto" (default: replicated unless ZeRO-3 on a GPU where the model takes more than a
                 quarter of free memory) | "replicate" | "shard" (ZeRO-3 only)
  dtype          default: the trainer's dtype
Metrics (reward/<name>/... besides mean and std): raw_mean (before normalisation), truncated_frac,
batches (forwards per call), sharded (1 when ZeRO-3-sharded).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any

import torch

from align.models import load_tokenizer
from align.models.loading import DTYPES, _offline_error
from align.rollout.weights import checkpoint_num_params
from align.runtime.batching import token_budget_groups
from align.runtime.distributed import outside_zero3_init, prepare_reference_model, split_to_count, zero_stage
from rewards.context import ModelReward, ModelRewardError, RewardContext, as_messages, text_of

# A model under ZeRO-3 on a GPU is sharded by placement=auto when its weights exceed this share of
# the free device memory (replicating it on every rank would then crowd out the trainer and vLLM).
SHARD_ABOVE_FREE_FRACTION = 0.25
_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


class RunningMoments:
    """Mean and variance of every value seen so far, updated with batch sums (Chan et al.'s merge),
    so ranks can contribute their sums and every rank ends with the same moments."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0.0, 0.0, 0.0

    def update(self, count: float, total: float, total_sq: float) -> None:
        if count <= 0:
            return
        batch_mean = total / count
        batch_m2 = max(total_sq - count * batch_mean**2, 0.0)
        new_count = self.count + count
        delta = batch_mean - self.mean
        self.mean += delta * count / new_count
        self.m2 += batch_m2 + delta**2 * self.count * count / new_count
        self.count = new_count

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count > 0 else 0.0


class RewardModel(ModelReward):
    prefix = "rm"
    _options = dict(batch_tokens=8192, max_length=None, truncation="left", chat_template="auto", label=None,
                    normalize=False, clip=None, placement="auto", dtype=None)

    def __init__(self, target: str):
        super().__init__(target)
        self.moments = RunningMoments()
        self.model = self.tokenizer = None
        self.sharded = False
        self._warned_truncation = False

    def _check_options(self) -> None:
        o = self.options
        where = f"reward.options for {self.prefix}:{self.target}"
        if not (isinstance(o["batch_tokens"], int) and o["batch_tokens"] >= 1):
            raise ModelRewardError(f"{where}: batch_tokens={o['batch_tokens']!r} must be a positive integer")
        if o["max_length"] is not None and not (isinstance(o["max_length"], int) and o["max_length"] >= 1):
            raise ModelRewardError(f"{where}: max_length={o['max_length']!r} must be a positive integer or null")
        for key, allowed in (("truncation", ("left", "error")), ("chat_template", ("auto", "none")),
                             ("placement", ("auto", "replicate", "shard"))):
            if o[key] not in allowed:
                raise ModelRewardError(f"{where}: {key}={o[key]!r}; choose one of {', '.join(allowed)}")
        if o["clip"] is not None and not (isinstance(o["clip"], (int, float)) and o["clip"] > 0):
            raise ModelRewardError(f"{where}: clip={o['clip']!r} must be a positive number or null")
        if not isinstance(o["normalize"], bool):
            raise ModelRewardError(f"{where}: normalize={o['normalize']!r} must be true or false")

    # ------------------------------------------------------------------------------- loading
    def _load(self, context: RewardContext) -> None:
        from transformers import AutoModelForSequenceClassification


        path = context.resolve_model(self.target, context.cache_dir)
        dtype = self.options["dtype"] or context.dtype
        if dtype not in DTYPES:
            raise ModelRewardError(f"{self.__name__}: dtype={dtype!r}; use one of {sorted(DTYPES)}")
        acc = context.accelerator
        stage = zero_stage(acc) if acc is not None else 0
        self.sharded = self._should_shard(path, dtype, stage, context)
        self.tokenizer = load_tokenizer(path)
        # Sharded: loaded under the trainer's ZeRO-3 context (transformers partitions as it loads).
        loading = contextlib.nullcontext() if self.sharded or acc is None else outside_zero3_init(acc)
        try:
            with loading:
                model = AutoModelForSequenceClassification.from_pretrained(path, dtype=DTYPES[dtype])
        except OSError as err:
            raise _offline_error("reward model", self.target, err) from None
        model.requires_grad_(False).eval()
        if model.config.pad_token_id is None:
            # Batches of more than one need it to find each row's last real token (the model's pooling).
            model.config.pad_token_id = self.tokenizer.pad_token_id
        labels = model.config.num_labels
        if labels != 1 and self.options["label"] is None:
            raise ModelRewardError(
                f"{self.__name__}: the model has {labels} output labels; set reward.options.{self.prefix}:{self.target}.label "
                "to the index to use as the reward"
            )
        self.label = self.options["label"] or 0
        if not 0 <= self.label < labels:
            raise ModelRewardError(f"{self.__name__}: label={self.label} is out of range for {labels} labels")
        self.model = prepare_reference_model(acc, model) if self.sharded else model.to(context.device)
        partitioned = any(hasattr(p, "ds_id") for p in self.model.parameters())  # DeepSpeed ZeRO-3 parameters
        if partitioned != self.sharded:  # loud: a silently replicated (or sharded) model breaks the memory plan
            raise ModelRewardError(f"{self.__name__}: placement gave sharded={self.sharded} but the loaded model is "
                                   f"{'' if partitioned else 'not '}partitioned; report this with the launch config")
        self.max_length = self.options["max_length"] or _model_max_length(self.tokenizer, model.config)
        self.use_template = self.options["chat_template"] == "auto" and getattr(self.tokenizer, "chat_template", None)

    def _should_shard(self, path: str, dtype: str, stage: int, context: RewardContext) -> bool:
        placement = self.options["placement"]
        if placement == "shard" and stage != 3:
            raise ModelRewardError(
                f"{self.__name__}: placement=shard needs DeepSpeed ZeRO-3 (launch/zero3.yaml); the trainer runs stage {stage}"
            )
        if placement != "auto":
            return placement == "shard"
        if stage != 3 or not torch.cuda.is_available():
            return False

        params = checkpoint_num_params(path)
        free, _ = torch.cuda.mem_get_info(torch.device(context.device))
        return params is not None and params * _BYTES[dtype] > SHARD_ABOVE_FREE_FRACTION * free

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ------------------------------------------------------------------------------- scoring
    def encode(self, prompt: Any, completion: Any) -> list[int]:
        """Token ids of one (prompt, completion) as the reward model reads them (before truncation)."""
        tok = self.tokenizer
        if self.use_template:
            text = tok.apply_chat_template(as_messages(prompt, completion), tokenize=False)
            return tok(text, add_special_tokens=False)["input_ids"]
        return tok(text_of(prompt) + text_of(completion), add_special_tokens=True)["input_ids"]

    def _score(self, prompts, completions, columns, log_metric) -> list[float | None]:
        ids = [self.encode(p, c) for p, c in zip(prompts, completions)]
        ids, truncated = self._truncate(ids)
        raw, batches = self.forward(ids)
        log_metric("truncated_frac", truncated / max(len(ids), 1))
        log_metric("batches", float(batches))
        log_metric("sharded", float(self.sharded))
        log_metric("raw_mean", sum(raw) / max(len(raw), 1))
        return self._postprocess(raw)

    def _truncate(self, ids: list[list[int]]) -> tuple[list[list[int]], int]:
        limit, count = self.max_length, 0
        out = []
        for index, seq in enumerate(ids):
            if len(seq) > limit:
                if self.options["truncation"] == "error":
                    raise ModelRewardError(
                        f"{self.__name__}: sample {index} has {len(seq)} tokens > max_length={limit}; raise max_length "
                        "or set truncation=left (keeps the last max_length tokens)"
                    )
                seq, count = seq[-limit:], count + 1
            out.append(seq)
        if count and not self._warned_truncation:
            warnings.warn(f"{self.__name__}: {count} of {len(ids)} inputs were longer than max_length={limit} and were cut "
                          "from the left (reward/<name>/truncated_frac counts them every step)", stacklevel=2)
            self._warned_truncation = True
        return out, count

    @torch.no_grad()
    def forward(self, ids: list[list[int]]) -> tuple[list[float], int]:
        """Raw scores of token-id sequences, in batches of at most batch_tokens padded tokens; and the
        number of forwards run."""

        groups = token_budget_groups([(0, len(seq)) for seq in ids], self.options["batch_tokens"]) if ids else []
        dummies = 0
        if self.sharded:  # every rank must run the same number of forwards (each is a collective)
            count = self.context.max_over_ranks(len(groups))
            groups = split_to_count(groups, min(count, len(ids)))
            dummies = count - len(groups)
        scores: list[float] = [0.0] * len(ids)
        device = _model_device(self.model)
        pad = self.model_config.pad_token_id
        for idx in groups:
            width = max(len(ids[i]) for i in idx)
            input_ids = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros_like(input_ids)
            for row, i in enumerate(idx):  # right padding: real tokens keep the positions of an unpadded pass
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                mask[row, : len(ids[i])] = 1
            logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
            for row, i in enumerate(idx):
                scores[i] = float(logits[row, self.label].float())
        for _ in range(dummies):  # keep step with ranks that had more batches
            self.model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device))
        return scores, len(groups) + dummies

    @property
    def model_config(self):
        return getattr(self.model, "module", self.model).config

    def _postprocess(self, raw: list[float]) -> list[float]:
        values = raw
        if self.options["normalize"]:
            count, total, total_sq = self.context.sum_over_ranks([len(raw), sum(raw), sum(v * v for v in raw)])
            self.moments.update(count, total, total_sq)
            std = self.moments.std
            values = [(v - self.moments.mean) / (std + 1e-8) for v in raw]
        clip = self.options["clip"]
        if clip is not None:
            values = [min(max(v, -clip), clip) for v in values]
        return values


def _model_max_length(tokenizer, config) -> int:
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    # transformers reports a huge sentinel for "no limit" on tokenizers.
    limits = [int(v) for v in limits if isinstance(v, int) and 0 < v < 1_000_000]
    if not limits:
        raise ModelRewardError("the reward model declares no maximum length; set max_length in its reward.options")
    return min(limits)


def _model_device(model) -> torch.device:
    return next(iter(model.parameters())).device

