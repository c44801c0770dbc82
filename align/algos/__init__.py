"""Pure tensor functions shared by the group-based trainers: advantages, losses, log-probs (torch only).

See ALGORITHMS.md for the maths; every function takes and returns tensors and never touches a model.
"""

from align.algos.advantages import group_advantages
from align.algos.aggregate import AGG_MODES, aggregate, masked_mean, masked_sum, seq_logprob
from align.algos.batch import GroupBatch, MicroBatch, Totals
from align.algos.copg import copg_loss
from align.algos.entropy import entropy_threshold, top_entropy_mask
from align.algos.gcpo import gcpo_contrastive_mask, gcpo_rewards
from align.algos.grao import grao_advantages, grao_loss
from align.algos.kl import kl_estimate, kl_penalty_rewards
from align.algos.logprobs import token_entropy, token_logprobs, token_logprobs_from_hidden
from align.algos.losses import clipped_pg_token_loss, grpo_loss, logprob_mismatch_metrics, off_policy_terms, tis_weights
from align.algos.salt import salt_graph_stats, salt_step_advantages, steps_to_tokens
from align.algos.surrogates import SURROGATES, Surrogate

__all__ = [
    "AGG_MODES",
    "SURROGATES",
    "Surrogate",
    "GroupBatch",
    "MicroBatch",
    "Totals",
    "aggregate",
    "clipped_pg_token_loss",
    "copg_loss",
    "entropy_threshold",
    "gcpo_contrastive_mask",
    "gcpo_rewards",
    "grao_advantages",
    "grao_loss",
    "group_advantages",
    "grpo_loss",
    "kl_estimate",
    "kl_penalty_rewards",
    "logprob_mismatch_metrics",
    "masked_mean",
    "masked_sum",
    "off_policy_terms",
    "salt_graph_stats",
    "top_entropy_mask",
    "salt_step_advantages",
    "seq_logprob",
    "steps_to_tokens",
    "tis_weights",
    "token_entropy",
    "token_logprobs",
    "token_logprobs_from_hidden",
]
