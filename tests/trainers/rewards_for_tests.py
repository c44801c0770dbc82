"""A reward with spread even for an untrained model, so the e2e tests exercise non-zero advantages."""


def digit_fraction(prompts, completions, **kwargs):
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]
