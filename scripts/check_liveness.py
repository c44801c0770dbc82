"""Check the liveness checks: does the test that says a config key is live fail when the key is dead?

    scripts/check_liveness.py [KEY ...]        (default: every key of tests/test_options_live.py's LIVE)

For each key, the tests that show it (LIVE[key]: for "covered", the test functions named there; for
any other observer, tests/test_options_live.py::test_changing_the_key_changes_the_run[KEY]) run under
ALIGN_DEAD_KEY=KEY, which makes every config load (in-process and `python align/train.py`
subprocesses) reset KEY to its schema default after loading, as if the code never read the value:

  killed     the tests FAILED under the mutation: the key is really checked (good)
  SURVIVED   the tests still passed: the check would not notice the key going dead (bad)
  error      pytest could not run them (exit status other than 0 or 1: a bad test id, a crash)
  skipped    the mutation means nothing for this key (below)

Treatments:
- `recipe`: the recipe's values are merged before the Config exists; resetting the field afterwards
  only renames the run, so the mutation is meaningless: skipped. `algo` likewise: it picks the schema
  (GCPO's config class, ...) before loading, and that schema's default is the algorithm itself.
- A key whose override sets the value the schema already has (e.g. log.console=true, where the tests'
  baseline sets false) is still a fair check: the mutation resets the baseline run's value to the
  default too, so the two runs become one and the test fails.
- model.cache_dir dead builds the tiny model in the default ~/.cache/align; log.run_dir dead lets a
  subprocess run write under runs/ (git-ignored). Both are what a dead key would do.

Prints a table and writes bench/results/liveness_mutation.json. Each key is one pytest process (the
baseline run is rebuilt every time): about 30-60 s a key on 2 CPU cores, minutes for the "covered"
keys whose tests launch whole runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results" / "liveness_mutation.json"
PARAMETRIZED = "tests/test_options_live.py::test_changing_the_key_changes_the_run[{}]"
SKIP = {"recipe": "the recipe is merged before the Config exists; resetting the field only renames the run",
        "algo": "the algorithm picks the schema before the Config exists, and that schema's default is the algorithm"}


def tests_for(key: str, live: dict) -> list[str]:
    observer, named = live[key]
    return list(named) if observer == "covered" else [PARAMETRIZED.format(key)]


def check(key: str, live: dict) -> dict:
    row = {"key": key, "observer": live[key][0], "tests": tests_for(key, live)}
    if key in SKIP:
        return {**row, "verdict": "skipped", "why": SKIP[key], "seconds": 0.0}
    env = {**os.environ, "ALIGN_DEAD_KEY": key, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    start = time.monotonic()
    done = subprocess.run([str(ROOT / "scripts" / "test.sh"), *row["tests"], "-q", "-x", "-p", "no:cacheprovider"],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = round(time.monotonic() - start, 1)
    verdict = {0: "SURVIVED", 1: "killed"}.get(done.returncode, "error")
    last = (done.stdout.strip().splitlines() or [""])[-1]
    return {**row, "verdict": verdict, "why": last, "seconds": seconds, "returncode": done.returncode}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keys", nargs="*", help="config keys (default: every key in LIVE)")
    args = parser.parse_args(argv)
    from tests.test_options_live import LIVE

    keys = args.keys or sorted(LIVE)
    unknown = [k for k in keys if k not in LIVE]
    if unknown:
        parser.error(f"not in tests/test_options_live.py's LIVE: {', '.join(unknown)}")
    rows = []
    for key in keys:
        rows.append(check(key, LIVE))
        r = rows[-1]
        print(f"{r['key']:<34} {r['observer']:<15} {r['verdict']:<9} {r['seconds']:>6.1f}s  {r['why']}", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(rows, indent=1) + "\n")
    bad = [r["key"] for r in rows if r["verdict"] in ("SURVIVED", "error")]
    print(f"{len(rows)} keys: {sum(r['verdict'] == 'killed' for r in rows)} killed, {len(bad)} survived or errored"
          + (f" ({', '.join(bad)})" if bad else "") + f"; {OUT.relative_to(ROOT)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
