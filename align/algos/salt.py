"""SALT: step-level advantages from the trajectory graph of one prompt group (ALGORITHMS.md section 5).

The G trajectories of a task are merged into a graph whose edges are (node, action) with
node = (current state key, the last `history` (state, action) pairs). Every step gets the mean
outcome advantage of the trajectories that pass through its edge: steps shared by winners and
losers move towards 0, steps that separate them keep their sign.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence

import torch

from align.algos._checks import check_ndim

Step = tuple[Hashable, Hashable]  # (state_key, action_key)


def _edge_keys(steps: Sequence[Step], history: int | None) -> list[tuple]:
    """The graph edge of each step: (state, previous `history` steps, action); history None = whole prefix."""
    keys = []
    for t, (state, action) in enumerate(steps):
        start = 0 if history is None else max(t - history, 0)
        keys.append((state, tuple(steps[start:t]), action))
    return keys


def salt_step_advantages(
    traj_adv: Sequence[float] | torch.Tensor,
    steps: Sequence[Sequence[Step]],
    history: int | None = 0,
    dedup: bool = True,
) -> list[list[float]]:
    """Per-step advantages for ONE prompt group: A(e) = mean of A_i over the trajectories through edge e.

    traj_adv: [G] outcome advantages (from `group_advantages`, GRPO or RLOO); steps: G lists of
    (state_key, action_key) with hashable keys. history: 0 = merge on state + action (a graph),
    k = also on the last k (state, action) pairs, None = on the whole prefix (a prefix tree).
    dedup=True counts a trajectory once per edge however often it revisits it; False averages over
    visits. Never merge across prompts: call once per group. Returns G lists, one float per step.
    """
    adv = traj_adv.detach().double().tolist() if isinstance(traj_adv, torch.Tensor) else [float(a) for a in traj_adv]
    if len(adv) != len(steps):
        raise ValueError(f"traj_adv has {len(adv)} entries but steps has {len(steps)} trajectories; pass one per trajectory")
    if history is not None and (not isinstance(history, int) or history < 0):
        raise ValueError(f"history={history!r} must be a non-negative int or None (whole prefix)")

    edges_per_traj = [_edge_keys([tuple(step) for step in traj], history) for traj in steps]
    members: dict[tuple, list[float]] = defaultdict(list)
    for i, edges in enumerate(edges_per_traj):
        for edge in set(edges) if dedup else edges:
            members[edge].append(adv[i])
    edge_adv = {edge: sum(values) / len(values) for edge, values in members.items()}
    return [[edge_adv[edge] for edge in edges] for edges in edges_per_traj]


def steps_to_tokens(step_adv: Sequence[Sequence[float]], step_ids: torch.Tensor) -> torch.Tensor:
    """Spread step advantages onto tokens: out[i,t] = step_adv[i][step_ids[i,t]], 0 where step_ids is -1.

    step_adv: G lists (from `salt_step_advantages`); step_ids: [G,T] long, the step each action token
    belongs to, -1 for observation/padding tokens. Returns [G,T] float32 on step_ids' device.
    """
    check_ndim("step_ids", step_ids, 2, "[G,T]")
    if len(step_adv) != step_ids.shape[0]:
        raise ValueError(f"step_adv has {len(step_adv)} trajectories but step_ids has {step_ids.shape[0]} rows")
    out = torch.zeros(step_ids.shape, dtype=torch.float32, device=step_ids.device)
    for i, values in enumerate(step_adv):
        ids = step_ids[i]
        if (ids < -1).any() or (ids >= len(values)).any():
            raise ValueError(
                f"step_ids row {i} has ids outside [-1, {len(values) - 1}]; trajectory {i} has {len(values)} steps"
            )
        table = torch.tensor(list(values) + [0.0], dtype=torch.float32, device=step_ids.device)
        out[i] = table[ids.long()]  # -1 indexes the trailing 0
    return out


def salt_graph_stats(
    traj_adv: Sequence[float] | torch.Tensor,
    steps: Sequence[Sequence[Step]],
    step_adv: Sequence[Sequence[float]],
    history: int | None = 0,
) -> dict[str, float]:
    """Size of one group's trajectory graph, and how SALT changed its steps' advantages.

    nodes / edges: distinct (state, history) nodes and (node, action) edges; steps: all steps;
    merged_steps: steps whose edge another trajectory of the group also traverses; sign_flips:
    steps whose SALT advantage has the opposite sign of their trajectory's (GRPO) advantage;
    signed_steps: steps whose trajectory advantage is non-zero (the denominator of a flip share).
    """
    adv = traj_adv.detach().double().tolist() if isinstance(traj_adv, torch.Tensor) else [float(a) for a in traj_adv]
    edges_per_traj = [_edge_keys([tuple(step) for step in traj], history) for traj in steps]
    users: dict[tuple, set[int]] = defaultdict(set)
    for i, edges in enumerate(edges_per_traj):
        for edge in edges:
            users[edge].add(i)
    flips = signed = 0
    for i, values in enumerate(step_adv):
        if adv[i] != 0.0:
            signed += len(values)
            flips += sum(1 for v in values if v * adv[i] < 0)
    return {
        "nodes": float(len({edge[:2] for edge in users})),
        "edges": float(len(users)),
        "steps": float(sum(len(edges) for edges in edges_per_traj)),
        "merged_steps": float(sum(1 for edges in edges_per_traj for edge in edges if len(users[edge]) > 1)),
        "sign_flips": float(flips),
        "signed_steps": float(signed),
    }
