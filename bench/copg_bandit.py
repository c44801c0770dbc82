"""CoPG's own toy setting: a K-armed bandit learnt from a fixed behaviour policy's samples.

    .venv/bin/python bench/copg_bandit.py            # table + bench/results/copg_bandit.{json,png}

The CoPG paper (Flet-Berliac et al., "Contrastive Policy Gradient", arXiv 2406.19185) shows on a
bandit that its loss reaches the optimum of the KL-regularised objective,
pi* proportional to pi_ref * exp(R / beta), from samples of ANY behaviour policy, while a policy
gradient that treats off-policy samples as if they were its own does not. Here: a softmax policy
over K arms (one logit each), offline pairs drawn once from a fixed behaviour policy mu, trained
full-batch with Adam on
- CoPG: `align.algos.copg_loss` (the function the trainer uses), groups of two arms from mu;
- off-policy PG: REINFORCE on the same samples with the KL-regularised reward and no importance
  weights, -mean[(R - beta log pi/pi_ref)(y).detach() * log pi(y)]: unbiased only when mu = pi.
Reported: the total-variation distance to pi* after training, per behaviour policy and method.
CoPG's fixed point does not depend on mu because every pair's regularised rewards are equal
exactly at pi* (the loss is 0 there), whatever arms mu happens to draw, as long as the pairs
connect all arms. Off-policy PG's fixed point solves mu_k A_k = pi_k sum_y mu_y A_y (A = the
regularised reward), which moves with mu. CoPG's gradient is REINFORCE with a leave-one-out
baseline inside each pair (docs/ALGORITHMS.md section 4); in this one-step bandit a batch-mean
baseline would also restore pi* in expectation. What the pair buys is that baseline without a
value estimate or importance weights, from any two samples of one prompt.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from align import algos

RESULTS = Path(__file__).resolve().parent / "results"
REWARDS = [1.0, 0.2, 0.5, -0.3, 0.8]
REF_LOGITS = [0.0, 1.0, -0.5, 0.5, -1.0]
BEHAVIOURS = {  # none of them is pi*, and they disagree with each other
    "uniform": [1.0, 1.0, 1.0, 1.0, 1.0],
    "favours_bad_arms": [0.5, 3.0, 1.0, 4.0, 0.5],
    "favours_good_arm": [6.0, 1.0, 1.0, 1.0, 1.0],
}


def optimum(beta: float) -> torch.Tensor:
    """pi* proportional to pi_ref * exp(R / beta): the maximiser of E_pi[R] - beta KL(pi || pi_ref)."""
    logits = torch.tensor(REF_LOGITS, dtype=torch.float64) + torch.tensor(REWARDS, dtype=torch.float64) / beta
    return logits.softmax(0)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def train(method: str, behaviour: str, beta: float = 0.5, pairs: int = 512, steps: int = 600, lr: float = 0.05,
          seed: int = 0, every: int = 50) -> dict:
    """Train the bandit policy from `pairs` offline pairs of `behaviour`; the TV to pi* along the way."""
    gen = torch.Generator().manual_seed(seed)
    mu = torch.tensor(BEHAVIOURS[behaviour], dtype=torch.float64)
    arms = torch.multinomial((mu / mu.sum()).expand(pairs, -1), 2, replacement=True, generator=gen)  # [P, 2]
    rewards = torch.tensor(REWARDS, dtype=torch.float64)[arms]
    ref_logp = torch.tensor(REF_LOGITS, dtype=torch.float64).log_softmax(0)
    theta = torch.zeros(len(REWARDS), dtype=torch.float64, requires_grad=True)  # pi starts uniform, not at pi_ref
    opt = torch.optim.Adam([theta], lr=lr)
    target = optimum(beta)
    curve = []
    for step in range(steps + 1):
        if step % every == 0 or step == steps:
            curve.append((step, total_variation(theta.detach().softmax(0), target)))
        if step == steps:
            break
        logp = theta.log_softmax(0)[arms]
        if method == "copg":
            loss, _ = algos.copg_loss(logp, ref_logp[arms], rewards, beta=beta)
        elif method == "offpolicy_pg":
            regularised = rewards - beta * (logp - ref_logp[arms])
            loss = -(regularised.detach() * logp).mean()
        else:
            raise ValueError(f"method={method!r}: use copg or offpolicy_pg")
        opt.zero_grad()
        loss.backward()
        opt.step()
    policy = theta.detach().softmax(0)
    return {"method": method, "behaviour": behaviour, "beta": beta, "pairs": pairs, "steps": steps,
            "tv_to_optimum": curve[-1][1], "policy": policy.tolist(), "curve": curve}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--beta", type=float, default=0.5)
    p.add_argument("--pairs", type=int, default=512)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--out", default=str(RESULTS / "copg_bandit.json"))
    args = p.parse_args(argv)
    runs = [train(m, b, args.beta, args.pairs, args.steps) for b in BEHAVIOURS for m in ("copg", "offpolicy_pg")]
    target = optimum(args.beta)
    print(f"pi* = {[round(v, 4) for v in target.tolist()]} (beta {args.beta}, R {REWARDS}, pi_ref softmax{REF_LOGITS})")
    print(f"| behaviour policy | CoPG TV to pi* | off-policy PG TV to pi* | ({args.pairs} pairs, {args.steps} Adam steps)")
    print("|---|---|---|")
    for b in BEHAVIOURS:
        tv = {r["method"]: r["tv_to_optimum"] for r in runs if r["behaviour"] == b}
        print(f"| {b} | {tv['copg']:.2e} | {tv['offpolicy_pg']:.3f} |")
    result = {"args": vars(args), "optimum": target.tolist(), "rewards": REWARDS, "ref_logits": REF_LOGITS,
              "behaviours": BEHAVIOURS, "runs": runs}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    plot(runs, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")
    return result


def plot(runs: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    styles = {"copg": "-", "offpolicy_pg": "--"}
    for i, b in enumerate(BEHAVIOURS):
        for r in (r for r in runs if r["behaviour"] == b):
            steps, tv = zip(*r["curve"])
            ax.plot(steps, tv, styles[r["method"]], color=f"C{i}", label=f"{r['method']}, mu={b}")
    ax.set_yscale("log")
    ax.set_xlabel("Adam step (full batch of offline pairs)")
    ax.set_ylabel("TV distance to pi*")
    ax.set_title("CoPG bandit: offline pairs from a fixed behaviour policy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
