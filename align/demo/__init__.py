"""The built-in demo models: the tiny model after a supervised warm start on a built-in task.

`tiny-geometry` (the main job's policy), `tiny-geometry-partial` (the same without two families: GRAO's
setting), `tiny-geometry-rare` (constructs in 8% of its solutions: GCPO's setting), `tiny-grid` (SALT's
agent) and `tiny-grid-large` (SALT's agent in a 6x6 room) are made by code that trains
with rewards and rollouts, so they sit above those layers; `resolve_model_path` here is the models
layer's resolver with these builders added, for every caller above this layer (the loop, the
command line, the bench scripts). Rewards below it receive it through their RewardContext.
"""

from __future__ import annotations

from align.demo.warm_start import geometry_warm_start_path, partial_warm_start_path, rare_aux_warm_start_path
from align.demo.warm_start_grid import grid_warm_start_path, large_grid_warm_start_path
from align.models import loading
from align.models.loading import DEFAULT_CACHE_DIR

BUILDERS: dict[str, loading.ModelBuilder] = {
    **loading.BUILDERS,
    "tiny-geometry": geometry_warm_start_path,
    "tiny-geometry-partial": partial_warm_start_path,  # never saw two families (GRAO's setting)
    "tiny-geometry-rare": rare_aux_warm_start_path,  # rarely constructs (GCPO's setting)
    "tiny-grid": grid_warm_start_path,
    "tiny-grid-large": large_grid_warm_start_path,  # a 6x6 room (SALT's harder setting)
}


def resolve_model_path(name: str, cache_dir: str = DEFAULT_CACHE_DIR) -> str:
    """`align.models.resolve_model_path` that also knows the demo models (built on first use)."""
    return loading.resolve_model_path(name, cache_dir, BUILDERS)
