#!/usr/bin/env bash
# One set-up path for a fresh clone: creates .venv and installs align with the right extras.
#   CPU machine (no working nvidia-smi): the locked CPU stack, installed with --no-deps so pip
#     never resolves torch to a multi-GB CUDA build (see requirements/cpu-lock.txt).
#   GPU machine: the CUDA vLLM build and the CUDA torch it requires, through pip's resolver.
# Idempotent: a stamp records what was installed; a second run with nothing changed is instant.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -c 'import sys; assert sys.version_info >= (3, 11), "align needs Python >= 3.11"'
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)
# The CPU torch wheel may lie on this machine's disk; let pip find it there first.
[ -d /opt/wheels ] && PIP+=(--find-links /opt/wheels)

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  flavour=cuda
  want="cuda:$(sha256sum pyproject.toml | cut -c1-16)"
else
  flavour=cpu
  want="cpu:$(cat requirements/cpu-lock.txt pyproject.toml | sha256sum | cut -c1-16)"
fi
# The sandbox of code rewards (rewards/sandbox.py) needs bubblewrap and libseccomp, on CPU and GPU machines.
if ! command -v bwrap >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap libseccomp2 >/dev/null
  else
    echo "setup: bubblewrap (bwrap) is missing; code rewards need it: apt-get install bubblewrap libseccomp2" >&2
  fi
fi

stamp="$VENV/.align-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: $VENV is up to date ($flavour)"
  exit 0
fi

if [ "$flavour" = cpu ]; then
  "${PIP[@]}" -q --no-deps -r requirements/cpu-lock.txt
  "${PIP[@]}" -q --no-deps -e .
else
  "${PIP[@]}" -q -e ".[vllm-cuda,dev]"
fi
echo "$want" > "$stamp"
echo "setup: installed align ($flavour) into $VENV"
