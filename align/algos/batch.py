"""The typed hand-offs of one training step: `GroupBatch` (rollout phase -> loop) and `MicroBatch`
(loop -> `algorithm.loss`).

A rollout source (generation, offline rows, later agent episodes) returns a `GroupBatch`: this
rank's P prompts x G completions, unpadded, with rewards per completion. The loop adds advantages,
cuts the batch into micro-batches by token budget, pads each, runs the forward passes and hands the
algorithm a `MicroBatch`: padded tensors plus the GLOBAL normalisers (`Totals`) that make every
loss an additive share of the step's loss, so the split into micro-batches and ranks never changes
the result. Both objects validate their shapes on construction, with one-line errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


@dataclass(kw_only=True)
class GroupBatch:
    """This rank's share of one rollout batch: P prompts x G completions, unpadded.

    Row r = p * G + i is completion i of prompt p; every per-completion list uses that order.

    Always present:
      prompt_ids      P token-id lists (the prompt as the policy sees it)
      completion_ids  P*G token-id lists (EOS included when generation ended on it)
      rewards [P,G]   float32: the scalar (sequence) reward each completion is trained on
      valid [P,G]     bool: False = no reward applied, or a padding member of an offline group
                      (advantage 0, no loss, left out of group statistics)
      truncated [P,G] bool: the completion was cut at rollout.max_tokens
    Optional parts (None when the source or algorithm has none):
      engine_logprobs P*G lists: the rollout engine's log-prob of each completion token
                      (importance correction, mismatch metrics); None for offline rows
      token_mask      P*G 0/1 lists: which completion tokens carry loss (None = all of them;
                      agent episodes: action tokens only)
      step_ids        P*G lists: the agent step of each completion token, -1 outside actions (SALT)
      steps           P*G lists of (state_key, action_key), one per agent step (SALT's graph)
      answer_ids      P token-id lists: the reference answer y of each prompt (GRAO)
      answer_rewards  [P]: R(y), the reference answer's own reward (0 = a tie under a pairwise judge)
      components      {name: [P,G]}: per-function rewards, for metrics (and GCPO's composition)
    Filled by the loop, before the loss:
      advantages [P,G]        per-completion advantages (constants)
      answer_advantages [P]   the reference answer's advantage (GRAO)
      token_advantages P*G lists, one per completion token: per-token advantages (SALT), used
                      instead of `advantages` when present
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    rewards: torch.Tensor
    valid: torch.Tensor | None = None
    truncated: torch.Tensor | None = None
    engine_logprobs: list[list[float]] | None = None
    token_mask: list[list[int]] | None = None
    step_ids: list[list[int]] | None = None
    steps: list[list[tuple]] | None = None
    answer_ids: list[list[int]] | None = None
    answer_rewards: torch.Tensor | None = None
    components: dict[str, torch.Tensor] = field(default_factory=dict)
    advantages: torch.Tensor | None = None
    answer_advantages: torch.Tensor | None = None
    token_advantages: list[list[float]] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rewards, torch.Tensor) or self.rewards.dim() != 2:
            raise ValueError(f"GroupBatch.rewards must be a [P,G] tensor, got {_shape(self.rewards)}")
        P, G = self.rewards.shape
        if len(self.prompt_ids) != P:
            raise ValueError(f"GroupBatch.prompt_ids has {len(self.prompt_ids)} prompts but rewards is [{P},{G}]")
        if self.valid is None:
            self.valid = torch.ones(P, G, dtype=torch.bool)
        if self.truncated is None:
            self.truncated = torch.zeros(P, G, dtype=torch.bool)
        self.valid, self.truncated = self.valid.bool(), self.truncated.bool()
        for name in ("valid", "truncated", "advantages"):
            _expect(name, getattr(self, name), (P, G))
        for name, tensor in self.components.items():
            _expect(f"components[{name!r}]", tensor, (P, G))
        for name in ("answer_rewards", "answer_advantages"):
            _expect(name, getattr(self, name), (P,))
        if len(self.completion_ids) != P * G:
            raise ValueError(f"GroupBatch.completion_ids has {len(self.completion_ids)} rows; P*G = {P}*{G} = {P * G}")
        lengths = [len(ids) for ids in self.completion_ids]
        for name in ("engine_logprobs", "token_mask", "step_ids", "token_advantages"):
            rows = getattr(self, name)
            if rows is None:
                continue
            bad = next((r for r, row in enumerate(rows) if r >= len(lengths) or len(row) != lengths[r]), None)
            if len(rows) != P * G or bad is not None:
                raise ValueError(f"GroupBatch.{name} must have one value per completion token (row {bad} differs)")
        if self.steps is not None and len(self.steps) != P * G:
            raise ValueError(f"GroupBatch.steps has {len(self.steps)} trajectories; P*G = {P * G}")
        if self.answer_ids is not None:
            if len(self.answer_ids) != P:
                raise ValueError(f"GroupBatch.answer_ids has {len(self.answer_ids)} answers for {P} prompts")
            empty = [p for p, ids in enumerate(self.answer_ids) if not ids]
            if empty:
                raise ValueError(f"GroupBatch.answer_ids: prompt {empty[0]} has an empty reference answer; drop that row")

    @property
    def num_prompts(self) -> int:
        return self.rewards.shape[0]

    @property
    def group_size(self) -> int:
        return self.rewards.shape[1]

    @property
    def group_index(self) -> torch.Tensor:
        """[P*G] long: the prompt (group) of each completion row."""
        return torch.arange(self.num_prompts).repeat_interleave(self.group_size)

    def loss_tokens(self, row: int) -> int:
        """Loss-carrying tokens of completion `row` (before any truncation masking)."""
        if self.token_mask is not None:
            return sum(self.token_mask[row])
        return len(self.completion_ids[row])

    def with_advantages(self, advantages: torch.Tensor, answer_advantages: torch.Tensor | None = None) -> GroupBatch:
        return replace(self, advantages=advantages, answer_advantages=answer_advantages)


@dataclass(frozen=True)
class Totals:
    """Global normalisers of one optimizer step (all micro-batches on all ranks).

    num_tokens: loss-carrying completion tokens; num_seqs: completion rows; num_prompts: prompts;
    num_groups: prompts with >= 2 valid members (CoPG's mean runs over these); kept_tokens: the
    tokens loss.top_entropy_quantile keeps in the policy gradient (None = every loss token);
    num_valid: completions with a usable reward (None = not counted).
    """

    num_tokens: float
    num_seqs: float
    num_prompts: float
    num_groups: float
    kept_tokens: float | None = None
    num_valid: float | None = None


@dataclass(kw_only=True)
class MicroBatch:
    """What `algorithm.loss` receives for one forward/backward: B completion rows padded to T.

    logp [B,T] float32 with grad; mask [B,T] loss tokens (truncation masking applied);
    advantages [B] (one per completion), rewards [B], valid [B] bool; group_size G: with whole
    groups (an algorithm that couples members) B = n*G and rows p*G..p*G+G-1 are one prompt's.
    Optional: old_logp [B,T] (pi_old, constant; None when the algorithm has no importance ratio),
    engine_logp [B,T], ref_logp [B,T] (reference model, constant), is_weights [B,T] (truncated
    importance sampling), answer_logp / answer_mask [n,Ty] and answer_advantages [n] (GRAO's
    reference answers, one per group, with grad). totals: the step's global normalisers.
    """

    logp: torch.Tensor
    mask: torch.Tensor
    advantages: torch.Tensor
    rewards: torch.Tensor
    valid: torch.Tensor
    group_size: int
    totals: Totals
    old_logp: torch.Tensor | None = None
    engine_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    is_weights: torch.Tensor | None = None
    answer_logp: torch.Tensor | None = None
    answer_mask: torch.Tensor | None = None
    answer_advantages: torch.Tensor | None = None
    pg_mask: torch.Tensor | None = None  # [B,T] tokens of the policy-gradient term (loss.top_entropy_quantile)
    entropy: torch.Tensor | None = None  # [B,T] token entropy with grad (loss.entropy_coef)

    def __post_init__(self) -> None:
        if self.logp.dim() != 2:
            raise ValueError(f"MicroBatch.logp must be [B,T], got {_shape(self.logp)}")
        B, T = self.logp.shape
        for name in ("mask", "old_logp", "engine_logp", "ref_logp", "is_weights", "pg_mask", "entropy"):
            _expect(name, getattr(self, name), (B, T), "MicroBatch")
        for name in ("rewards", "valid"):
            _expect(name, getattr(self, name), (B,), "MicroBatch")
        if self.advantages.shape not in ((B,), (B, T)):
            raise ValueError(f"MicroBatch.advantages must be [B] or [B,T] = [{B}] or [{B},{T}], got {_shape(self.advantages)}")
        if self.answer_logp is not None:
            n = self.answer_logp.shape[0]
            if B != n * self.group_size:
                raise ValueError(f"MicroBatch has {B} rows but {n} reference answers of groups of {self.group_size}")
            _expect("answer_mask", self.answer_mask, tuple(self.answer_logp.shape), "MicroBatch")
            _expect("answer_advantages", self.answer_advantages, (n,), "MicroBatch")

    def grouped(self, tensor: torch.Tensor) -> torch.Tensor:
        """[B,...] -> [B/G, G, ...]: rows regrouped by prompt (whole-group micro-batches only)."""
        G = self.group_size
        if tensor.shape[0] % G:
            raise ValueError(f"{tensor.shape[0]} rows are not whole groups of {G}; the algorithm must declare whole_groups")
        return tensor.reshape(tensor.shape[0] // G, G, *tensor.shape[1:])


def _shape(value) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__


def _expect(name: str, tensor: torch.Tensor | None, shape: tuple[int, ...], owner: str = "GroupBatch") -> None:
    if tensor is not None and tuple(tensor.shape) != tuple(shape):
        raise ValueError(f"{owner}.{name} must have shape {list(shape)}, got {list(tensor.shape)}")
