"""The algorithms layer: the interface the loop calls (base.py: `Algorithm`, `Needs`, `Scores`,
`Advantages`), the built-in algorithms (grpo.py, gcpo.py, grao.py, copg.py, salt.py; each owns its
config section and its checks) and the registry (registry.py) that builds one from `algo=`."""

from align.algorithms.base import Advantages, Algorithm, Needs, Scores
from align.algorithms.copg import CoPG
from align.algorithms.gcpo import GCPO
from align.algorithms.grao import GRAO
from align.algorithms.grpo import GRPO
from align.algorithms.registry import ALGORITHMS, algorithm_class, load_config, registered, validate
from align.algorithms.salt import SALT

__all__ = ["ALGORITHMS", "Advantages", "Algorithm", "CoPG", "GCPO", "GRAO", "GRPO", "Needs", "SALT", "Scores",
           "algorithm_class", "load_config", "registered", "validate"]
