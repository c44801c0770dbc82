"""The models layer's user error, apart from the loaders so that every built-in model builder can raise it."""

from align.errors import UserError


class ModelLoadError(UserError, RuntimeError):
    """A model or tokenizer could not be loaded; the message says what was asked and how to fix it."""
