"""GroupBatch: the [P,G,T] tensors of one rollout batch that every trainer hands to `align.algos`."""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

Step = tuple[Hashable, Hashable]
_TOKEN_FIELDS = ("mask", "logp", "old_logp", "ref_logp", "engine_logp", "completion_ids", "step_ids")
_PROMPT_FIELDS = ("logp_y", "mask_y", "reward_y")


@dataclass(kw_only=True)
class GroupBatch:
    """P prompts x G completions x T padded completion tokens (ALGORITHMS.md section 6).

    rewards [P,G] float; valid [P,G] bool (None = all valid): filtered or unscorable members;
    mask [P,G,T] {0,1}: loss-carrying tokens (action tokens only for agents).
    logp [P,G,T] (the trainer's current log-probs, with grad, when already computed); old_logp,
    ref_logp [P,G,T]: sampling-policy and reference log-probs (constants; ref may be absent);
    engine_logp [P,G,T]: the rollout engine's log-probs (for TIS / mismatch metrics);
    completion_ids [P,G,T] long; components {name: [P,G]} (GCPO: acc, fmt, aux, length);
    steps: P x G lists of (state_key, action_key) and step_ids [P,G,T] long, -1 = no step (SALT);
    logp_y, mask_y [P,Ty] and reward_y [P]: the reference answer (GRAO).
    """

    rewards: torch.Tensor
    mask: torch.Tensor
    valid: torch.Tensor | None = None
    logp: torch.Tensor | None = None
    old_logp: torch.Tensor | None = None
    ref_logp: torch.Tensor | None = None
    engine_logp: torch.Tensor | None = None
    completion_ids: torch.Tensor | None = None
    components: dict[str, torch.Tensor] = field(default_factory=dict)
    steps: list[list[list[Step]]] | None = None
    step_ids: torch.Tensor | None = None
    logp_y: torch.Tensor | None = None
    mask_y: torch.Tensor | None = None
    reward_y: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.rewards.dim() != 2:
            raise ValueError(f"GroupBatch.rewards must be [P,G], got shape {tuple(self.rewards.shape)}")
        P, G = self.rewards.shape
        if self.mask.dim() != 3 or self.mask.shape[:2] != (P, G):
            raise ValueError(f"GroupBatch.mask must be [P,G,T] = [{P},{G},T], got {tuple(self.mask.shape)}")
        if self.valid is None:
            self.valid = torch.ones(P, G, dtype=torch.bool, device=self.rewards.device)
        self._expect("valid", self.valid, (P, G))
        self.valid = self.valid.bool()
        for name in _TOKEN_FIELDS[1:]:
            self._expect(name, getattr(self, name), tuple(self.mask.shape))
        for name, tensor in self.components.items():
            self._expect(f"components[{name!r}]", tensor, (P, G))
        if self.steps is not None and (len(self.steps) != P or any(len(group) != G for group in self.steps)):
            raise ValueError(f"GroupBatch.steps must be P={P} lists of G={G} step lists")
        if self.logp_y is not None or self.mask_y is not None:
            if self.logp_y is None or self.mask_y is None:
                raise ValueError("GroupBatch needs both logp_y and mask_y for a reference answer, or neither")
            if self.logp_y.dim() != 2 or self.logp_y.shape[0] != P:
                raise ValueError(f"GroupBatch.logp_y must be [P,Ty] with P={P}, got {tuple(self.logp_y.shape)}")
            self._expect("mask_y", self.mask_y, tuple(self.logp_y.shape))
        self._expect("reward_y", self.reward_y, (P,))

    @staticmethod
    def _expect(name: str, tensor: torch.Tensor | None, shape: tuple[int, ...]) -> None:
        if tensor is not None and tuple(tensor.shape) != shape:
            raise ValueError(f"GroupBatch.{name} must have shape {list(shape)}, got {list(tensor.shape)}")

    @property
    def num_prompts(self) -> int:
        return self.rewards.shape[0]

    @property
    def group_size(self) -> int:
        return self.rewards.shape[1]

    @property
    def max_len(self) -> int:
        return self.mask.shape[2]

    def loss_mask(self) -> torch.Tensor:
        """[P,G,T] bool: mask-1 tokens of valid completions (the tokens that carry loss)."""
        return self.mask.bool() & self.valid.unsqueeze(-1)

    def num_tokens(self) -> int:
        """Loss-carrying tokens in this batch (the token_mean normaliser)."""
        return int(self.loss_mask().sum())

    def num_seqs(self) -> int:
        """Valid completions in this batch (the seq-mean normaliser; an empty valid completion counts)."""
        return int(self.valid.sum())

    def flatten(self) -> dict[str, torch.Tensor]:
        """Completion-major views for the loss: token fields -> [P*G,T], per-completion fields -> [P*G].

        Keys: every present token field (mask, logp, old_logp, ...), loss_mask, rewards, valid and each
        component by name. Row p*G + i is completion i of prompt p. Per-prompt fields are left out.
        """
        P, G, T = self.mask.shape
        flat = {name: getattr(self, name).reshape(P * G, T) for name in _TOKEN_FIELDS if getattr(self, name) is not None}
        flat["loss_mask"] = self.loss_mask().reshape(P * G, T)
        flat["rewards"] = self.rewards.reshape(P * G)
        flat["valid"] = self.valid.reshape(P * G)
        flat.update({name: tensor.reshape(P * G) for name, tensor in self.components.items()})
        return flat

    def to(self, device: torch.device | str) -> GroupBatch:
        """A copy with every tensor on `device` (steps and other plain data are shared)."""
        moved = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                value = value.to(device)
            elif f.name == "components":
                value = {name: tensor.to(device) for name, tensor in value.items()}
            moved[f.name] = value
        return GroupBatch(**moved)
