"""Server mode against the colocated engine: weight-sync time and generation throughput, same model.

    .venv/bin/python bench/server.py [--model tiny] [--syncs 5]      # table + bench/results/server_<model>.json

Starts `python -m align serve` for the model, then measures for both engines (vLLM colocated in
this process; the server over HTTP and the align_gloo transport):
- sync: `load_weights` of the whole model (median of --syncs), and the same with the probe's
  verification (`sync_from`), as seconds and as nanoseconds per parameter byte;
- generate: --prompts random prompts x --g completions of at most --max-tokens new tokens, seeded
  alike on both engines; tokens per second counts the tokens actually generated (median of 3).
On a GPU the same script runs both engines on it (the transport is still gloo through host memory).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"


def start_server(model_path: str, log: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "align", "serve", "--model", model_path, "--port", str(port),
                                 "--max-model-len", "1024"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    while "serving " not in log.read_text():
        if proc.poll() is not None:
            sys.exit(f"the server exited: {log.read_text()[-2000:]}")
        time.sleep(1)
    return proc, f"http://127.0.0.1:{port}"


def measure(engine, model, args) -> dict:
    import torch

    from align.models import merged_named_tensors
    from align.rollout import SamplingSettings

    nbytes = sum(t.numel() * t.element_size() for _, t in merged_named_tensors(model))
    loads, verified = [], []
    for _ in range(args.syncs):
        start = time.perf_counter()
        engine.load_weights(merged_named_tensors(model))
        loads.append(time.perf_counter() - start)
        verified.append(engine.sync_from(model).seconds)
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 90, (32,), generator=gen).tolist() for _ in range(args.prompts)]
    sampling = SamplingSettings(max_tokens=args.max_tokens, seed=1)
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        out = engine.generate(prompts, args.g, sampling)
        rates.append(sum(len(c.token_ids) for g in out for c in g) / (time.perf_counter() - start))
    load = statistics.median(loads)
    return {"param_bytes": nbytes, "load_s": load, "sync_verified_s": statistics.median(verified),
            "load_ns_per_byte": 1e9 * load / nbytes, "gen_tok_s": statistics.median(rates)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny")
    p.add_argument("--syncs", type=int, default=5)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--g", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--cache-dir", default="~/.cache/align")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    from align.demo import resolve_model_path
    from align.models import load_model
    from align.rollout.server_engine import ServerEngine
    from align.rollout.vllm_engine import VLLMEngine

    import torch

    path = resolve_model_path(args.model, os.path.expanduser(args.cache_dir))
    model = load_model(path)
    dtype = "bfloat16" if torch.cuda.is_available() else "float32"  # what align serve defaults to
    results = {}
    colocated = VLLMEngine(path, dtype=dtype, max_model_len=1024)
    colocated.calibrate(model)
    results["colocated"] = measure(colocated, model, args)
    colocated.close()
    proc, url = start_server(path, Path(tempfile.mkdtemp()) / "serve.log")
    try:
        server = ServerEngine(url, path, dtype=dtype)
        server.attach(model)
        server.calibrate(model)
        results["server"] = measure(server, model, args)
        server.close()
    finally:
        proc.terminate()
        proc.wait(60)
    load = os.getloadavg()
    print(f"{args.model}: {results['server']['param_bytes'] / 2**20:.1f} MiB of weights; load average {load[0]:.2f}")
    print("| engine | load_weights s | sync + verify s | ns / param byte | generate tok/s |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['load_s']:.3f} | {r['sync_verified_s']:.3f} | {r['load_ns_per_byte']:.2f} | {r['gen_tok_s']:.0f} |")
    s, c = results["server"], results["colocated"]
    print(f"server / colocated: sync x{s['load_s'] / c['load_s']:.2f}, generation x{s['gen_tok_s'] / c['gen_tok_s']:.2f}")
    payload = {"args": vars(args), "loadavg": load, "results": results}
    out = Path(args.out or RESULTS / f"server_{args.model}.json")
    out.write_text(json.dumps(payload, indent=1))
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()
