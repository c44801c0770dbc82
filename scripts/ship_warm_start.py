#!/usr/bin/env python
"""Retrain the default warm start of the tiny geometry model from code and write its weights into
align/demo/shipped/ (named by its cache key), so first runs load it in seconds.

Run after changing the warm-start recipe or the geometry task (which changes the key), then commit
the new file and delete the old one:

    PYTHONPATH=$PWD .venv/bin/python scripts/ship_warm_start.py             # tiny-geometry
    PYTHONPATH=$PWD .venv/bin/python scripts/ship_warm_start.py --partial   # tiny-geometry-partial (GRAO's setting)
    PYTHONPATH=$PWD .venv/bin/python scripts/ship_warm_start.py --rare      # tiny-geometry-rare (GCPO's setting)
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from align.demo.warm_start import RARE_AUX_FRACTION, SEEN_FAMILIES, ship_warm_start  # noqa: E402

if __name__ == "__main__":
    flags = sys.argv[1:]
    overrides = {"families": SEEN_FAMILIES} if "--partial" in flags else {}
    overrides |= {"aux_fraction": RARE_AUX_FRACTION} if "--rare" in flags else {}
    print(ship_warm_start("~/.cache/align", **overrides))
