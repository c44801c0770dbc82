"""The sources layer: where a step's batch comes from (base.py has the interface the loop calls)."""

from align.sources.base import Collected, RolloutSource
from align.sources.episodes import EpisodeSource
from align.sources.generate import GenerationSource
from align.sources.offline import OfflineSource

# rollout.source=NAME -> the source class (each takes cfg, algorithm, engine, tokenizer, dataset, accelerator)
ROLLOUT_SOURCES: dict[str, type[RolloutSource]] = {"generate": GenerationSource, "offline": OfflineSource,
                                                   "episodes": EpisodeSource}

__all__ = ["ROLLOUT_SOURCES", "Collected", "EpisodeSource", "GenerationSource", "OfflineSource", "RolloutSource"]
