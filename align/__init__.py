"""align: group-based RL (GRPO, GCPO, GRAO, CoPG, SALT) for language models, on vLLM rollouts.

The public names for an algorithm of your own (`algo=path/to/file.py:Class`):

    from align import GRPO              # subclass it and override what differs
    from align import Algorithm, Needs  # or start from the bare interface

They are looked up on first use, so that `import align.config` (or any other low layer) does not
import the algorithms layer and everything under it.
"""

__version__ = "0.1.0"

__all__ = ["Advantages", "Algorithm", "CoPG", "GCPO", "GRAO", "GRPO", "Needs", "SALT", "Scores", "__version__"]
_PUBLIC = frozenset(__all__) - {"__version__"}


def __getattr__(name: str):
    if name in _PUBLIC:
        import align.algorithms  # the top of the package's layers; see the docstring

        return getattr(align.algorithms, name)
    raise AttributeError(f"module 'align' has no attribute {name!r}")
