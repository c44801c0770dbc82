"""A reward with spread even for an untrained model, so the e2e tests exercise non-zero advantages."""


def _text(completion) -> str:
    """A completion's text: chat prompts (data.system_prompt) give [{"role": "assistant", "content": ...}]."""
    return completion if isinstance(completion, str) else "".join(m["content"] for m in completion)


def digit_fraction(prompts, completions, **kwargs):
    return [sum(ch.isdigit() for ch in _text(c)) / max(len(_text(c)), 1) for c in completions]


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


def first_per_prompt(prompts, completions, **kwargs):
    """digit_fraction for the first completion of each prompt, None for the others: every group has one valid member."""
    seen: set = set()
    out = []
    for p, c in zip(prompts, completions):
        out.append(None if str(p) in seen else 0.5 + sum(ch.isdigit() for ch in c) / max(len(c), 1))
        seen.add(str(p))
    return out


def slow(prompts, completions, **kwargs):
    """digit_fraction after 0.2 s: a reward.timeout_s below that cuts it off."""
    import time

    time.sleep(0.2)
    return digit_fraction(prompts, completions)


def native_crash(prompts, completions, **kwargs):
    """Crashes in native code (reads address 0): nothing in Python can catch it."""
    import ctypes

    ctypes.string_at(0)
