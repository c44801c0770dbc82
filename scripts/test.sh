#!/usr/bin/env bash
# The default test run (the README's test command). Long learning runs and multi-process runs are
# marked `slow` and stay out of it; run them with: scripts/test.sh -m slow
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/setup.sh
# vLLM on CPU: in-process engine (fast start) and no dynamo compile on the first logprob request.
export VLLM_ENABLE_V1_MULTIPROCESSING=0 TORCHDYNAMO_DISABLE=1 HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
