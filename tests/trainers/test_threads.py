"""The trainer uses every core on CPU, whatever the launcher put in OMP_NUM_THREADS (issue 29)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from align.runtime.threads import available_cores, cpu_threads, use_cpu_threads

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_cores_are_shared_among_the_node_processes():
    assert cpu_threads(None, 1, 2) == 2
    assert cpu_threads(None, 2, 2) == 1 and cpu_threads(None, 4, 2) == 1  # never zero
    assert cpu_threads(None, 2, 16) == 8
    assert cpu_threads(3, 2, 16) == 3  # train.cpu_threads wins


@pytest.mark.skipif(torch.cuda.is_available(), reason="on GPUs torch's threads are left alone")
def test_an_explicit_count_changes_the_threads():
    before = torch.get_num_threads()
    real = torch.set_num_threads
    torch.set_num_threads = lambda n: None  # what vLLM's in-process CPU worker leaves behind
    try:
        assert use_cpu_threads(1, 1) == 1 and torch.get_num_threads() == 1
        assert use_cpu_threads(None, 1) == available_cores() == torch.get_num_threads()
    finally:
        torch.set_num_threads = real
        torch._C.set_num_threads(before)


def test_bad_thread_count_is_a_config_error():
    from align.algorithms import load_config
    from align.config import ConfigError

    with pytest.raises(ConfigError, match=r"train.cpu_threads=0: must be >= 1 \(or null\)"):
        load_config(["train.cpu_threads=0"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU run")
def test_plain_accelerate_launch_trains_on_every_core(cache_dir, tmp_path):
    """`accelerate launch` alone sets OMP_NUM_THREADS=1 in the child; the run still uses all cores."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | {"HF_HUB_OFFLINE": "1"}
    cmd = [str(BIN / "accelerate"), "launch", "align/train.py", "recipe=grpo_math", "model.name=tiny", "rollout.engine=hf",
           "rollout.num_generations=2", "train.batch_size=4", "rollout.max_tokens=4", "train.steps=1", "log.console=false",
           "log.report_to=[]", "log.eval_every=0", "log.save_every=0", f"model.cache_dir={cache_dir}",
           f"log.run_dir={tmp_path / 'run'}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = re.search(r"on (\d+) CPU thread\(s\)", proc.stdout)
    assert found, proc.stdout[-2000:]
    assert int(found.group(1)) == available_cores()


def test_train_cpu_threads_reaches_the_thread_setting_of_a_run(monkeypatch):
    # use_cpu_threads is tested above with its argument; this shows the run passes it the config's value.
    import align.cli.train as cli

    class Stop(Exception):
        pass

    seen = []

    def record(count, local_world):
        seen.append(count)
        raise Stop  # nothing after the thread setting is needed

    monkeypatch.setattr(cli, "use_cpu_threads", record)
    with pytest.raises(Stop):
        cli.main(["recipe=grpo_math", "train.cpu_threads=1"])
    assert seen == [1]
