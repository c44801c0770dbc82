"""`python -m align serve --model NAME_OR_PATH [--port P] [vLLM options]`: a rollout server.

Starts vLLM's OpenAI-compatible server with what `rollout.engine=server` needs, prints the URL
once it answers, and runs until interrupted:
- `VLLM_SERVER_DEV_MODE=1`, which mounts vLLM's RL routes (pause/resume, weight updates);
- `--weight-transfer-config '{"backend": "align_gloo"}'`: align's gloo transport
  (align/rollout/gloo_transfer.py, registered in the server by align's vLLM plugin);
- `--logprobs-mode processed_logprobs` and `--generation-config vllm`, as the colocated engine;
- on CPU: eager mode, a KV cache of `--kv-cache-mb`, float32.

vLLM's `--api-key` guards only its /v1 routes, not the weight-update routes, so whoever reaches
the port can replace the weights: the server binds 127.0.0.1, and another `--host` is refused
unless `--allow-remote-weight-updates` says the network is trusted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import torch

from align.config import ConfigError
from align.demo import resolve_model_path
from align.errors import UserError
from align.models import model_context
from align.rollout.gloo_transfer import BACKEND

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def vllm_command(model_path: str, host: str, port: int, dtype: str, max_model_len: int, kv_cache_mb: int,
                 extra: list[str]) -> list[str]:
    """The vLLM server command line (also what the README shows for starting vLLM by hand)."""
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path, "--host", host,
           "--port", str(port), "--dtype", dtype, "--max-model-len", str(max_model_len),
           "--weight-transfer-config", json.dumps({"backend": BACKEND}),
           "--logprobs-mode", "processed_logprobs", "--generation-config", "vllm"]
    if not torch.cuda.is_available():
        # Whole prefills: vLLM 0.32's CPU worker crashes on a seeded request whose prefill is split
        # over scheduler steps ("CPU Generator does not use offset"), as the colocated engine avoids too.
        cmd += ["--enforce-eager", "--kv-cache-memory-bytes", str(kv_cache_mb << 20), "--no-enable-chunked-prefill"]
    return cmd + extra


def wait_until_ready(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise UserError(f"the vLLM server exited with status {process.returncode} before answering (its log is above)")
        try:  # /health: not behind --api-key, which guards the /v1 routes
            with urllib.request.urlopen(url + "/health", timeout=5):
                return
        except OSError:
            time.sleep(1)
    process.terminate()
    raise UserError(f"the vLLM server did not answer at {url} within {timeout_s:g} s; raise --startup-timeout")


def _interrupted(signum, frame) -> None:
    raise KeyboardInterrupt  # runs main's `finally`, which stops the vLLM server


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="python -m align serve", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="a built-in name (tiny, smollm2-135m-instruct), a folder or a hub id")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--dtype", default=None, help="default: float32 on CPU, bfloat16 on GPU (the trainer's engine dtype)")
    p.add_argument("--max-model-len", type=int, default=None, help="default: the model's context, at most 4096")
    p.add_argument("--kv-cache-mb", type=int, default=256, help="CPU only: the KV cache size")
    p.add_argument("--cache-dir", default="~/.cache/align", help="where built-in models are built")
    p.add_argument("--allow-remote-weight-updates", action="store_true",
                   help="bind a non-loopback --host although vLLM's API key does not guard its weight-update routes")
    p.add_argument("--startup-timeout", type=float, default=600.0)
    args, extra = p.parse_known_args(argv)
    if args.host not in LOOPBACK and not args.allow_remote_weight_updates:
        raise ConfigError(f"--host {args.host}: anyone who reaches the port can replace the model's weights (vLLM's "
                          "--api-key does not guard /update_weights); use a trusted network and add "
                          "--allow-remote-weight-updates, or keep the default 127.0.0.1")
    from transformers import AutoConfig

    path = resolve_model_path(args.model, os.path.expanduser(args.cache_dir))
    context = model_context(AutoConfig.from_pretrained(path))
    dtype = args.dtype or ("bfloat16" if torch.cuda.is_available() else "float32")
    cmd = vllm_command(path, args.host, args.port, dtype, args.max_model_len or context, args.kv_cache_mb, extra)
    env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
    if not torch.cuda.is_available():
        env.setdefault("TORCHDYNAMO_DISABLE", "1")  # eager CPU: no compile on the first logprob request
    url = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{args.port}"
    process = subprocess.Popen(cmd, env=env)
    # SIGTERM (a job scheduler, a test's terminate()) must stop the server too, not orphan it.
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        wait_until_ready(url, process, args.startup_timeout)
        print(f"serving {path} at {url}: train with rollout.engine=server 'rollout.servers=[{url}]'", flush=True)
        if process.wait() != 0:
            raise UserError(f"the vLLM server at {url} exited with status {process.returncode} (its log is above)")
    except KeyboardInterrupt:
        pass
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
