"""A reward with spread even for an untrained model, so the e2e tests exercise non-zero advantages."""


def digit_fraction(prompts, completions, **kwargs):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def digit_fraction_odd_answers(prompts, completions, answer, **kwargs):
    """digit_fraction where the gold answer is odd, a constant 0 where it is even: about half the
    groups then have zero reward spread, so dynamic sampling has groups to drop and refill."""
    return [0.0 if int(a) % 2 == 0 else sum(ch.isdigit() for ch in c) / max(len(c), 1)
            for c, a in zip(completions, answer)]


def always_none(prompts, completions, **kwargs):
    """Scores nothing: the run has no learning signal (train.max_flat_steps must stop it)."""
    return [None for _ in completions]


def constant(prompts, completions, **kwargs):
    """The same reward for every completion: every group is flat."""
    return [1.0 for _ in completions]
