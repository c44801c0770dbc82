"""The vLLM-on-GPU path, pinned without a GPU (issue 18): a real 2-step Trainer drives VLLMEngine
against the recording fake `vllm` of tests/rollout/fake_vllm.py, with VLLMEngine's CPU check
patched to "GPU". What the engine asks of vLLM (arguments, call order, tensors handed over) is what
a GPU run would do."""

from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

import pytest
import torch

from tests.rollout import fake_vllm

ROOT = Path(__file__).resolve().parents[2]
DIGITS = ROOT / "tests" / "trainers" / "rewards_for_tests.py"


def make_trainer(cache_dir: str, run_dir: Path, *overrides: str, sleep_mode: bool = True):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    from align.algorithms import load_config
    from align.cli.train import build_algorithm
    from align.training.loop import Trainer

    cfg = load_config(["recipe=grpo_math", f"reward.functions=[{DIGITS}:digit_fraction]", "reward.weights=[1.0]",
                       "train.batch_size=8", "rollout.num_generations=4", "rollout.max_tokens=8", "data.options.size=32",
                       "train.lr=1e-3", "rollout.engine=vllm", "log.report_to=[]", "log.console=false",
                       f"model.cache_dir={cache_dir}", f"log.run_dir={run_dir}", *overrides])
    cfg.rollout.sleep_mode = sleep_mode  # validate() refuses it on this CPU machine; the fake is the "GPU"
    AcceleratorState._reset_state(True)  # a fresh accelerator per test (a process-wide singleton)
    GradientState._reset_state()
    return Trainer(cfg, Accelerator(cpu=True), build_algorithm(cfg), run_dir)


@pytest.fixture
def double_calls(monkeypatch):
    """Every Tensor.double() call while the trainer runs (float64 checksums copied whole tensors)."""
    calls = []
    real = torch.Tensor.double
    monkeypatch.setattr(torch.Tensor, "double", lambda self, *a, **k: (calls.append(tuple(self.shape)), real(self, *a, **k))[1])
    return calls


@pytest.fixture
def two_steps(cache_dir, tmp_path, monkeypatch, double_calls):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")  # inherited from a user's shell
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF", raising=False)
    fake_vllm.install(monkeypatch)
    import align.rollout.vllm_engine as vllm_engine

    monkeypatch.setattr(vllm_engine, "_barrier_if_distributed", lambda: fake_vllm.LOG.append(fake_vllm.Call("barrier")))
    trainer = make_trainer(cache_dir, tmp_path / "run")
    start = len(fake_vllm.LOG)
    metrics = [trainer.step(0)[0], trainer.step(1)[0]]
    return trainer, fake_vllm.LOG[:start], fake_vllm.LOG[start:], metrics


def test_engine_arguments(two_steps):
    import os

    trainer, construction, _, _ = two_steps
    llm = construction[0]
    assert llm.name == "LLM" and construction[1].name == "barrier"  # every rank built its engine first
    args = llm.args
    assert args["seed"] == trainer.cfg.train.seed + trainer.rank  # one sampling stream per rank
    assert args["logprobs_mode"] == "processed_logprobs" and args["generation_config"] == "vllm"
    assert args["max_num_seqs"] == 8 and args["max_num_batched_tokens"] == 8192  # rows per rank; 4k-8k tokens
    assert args["enable_sleep_mode"] is True and args["tensor_parallel_size"] == 1
    assert args["gpu_memory_utilization"] == trainer.cfg.rollout.gpu_memory_utilization
    assert "kv_cache_memory_bytes" not in args and "enforce_eager" not in args  # CPU-only settings stay off the GPU
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # forced over the inherited 1


def test_sleep_wake_and_load_order(two_steps):
    _, _, steps, metrics = two_steps
    memory = [(c.name, c.args.get("level") or c.args.get("tags") or c.args.get("method")) for c in steps
              if c.name in ("sleep", "empty_cache", "wake_up", "collective_rpc", "reset_prefix_cache")]
    # the cache is emptied before each wake: the reload's layer copies are cached until the KV cache maps again
    one_step = [("sleep", 2), ("empty_cache", None), ("wake_up", ["weights"]), ("collective_rpc", "reload_weights"),
                ("empty_cache", None), ("wake_up", ["kv_cache"]), ("reset_prefix_cache", None)]
    assert memory == one_step * 2
    # rollouts come before the sleep; the probe's generates after the KV cache is back
    names = [c.name for c in steps]
    first_sleep, first_kv = names.index("sleep"), names.index("wake_up") + 2
    assert "generate" in names[:first_sleep] and "generate" in names[first_kv:names.index("sleep", first_kv)]
    # the verified syncs passed: the engine followed the trainer through sleep and wake
    assert [m["sync/weight_version"] for m in metrics] == [1, 2]
    assert all(m["sync/probe_diff"] < 1e-4 for m in metrics)


def test_no_per_request_seeds_on_the_training_path(two_steps):
    _, _, steps, _ = two_steps
    params = [p for c in steps if c.name == "generate" for p in c.args["params"]]
    assert params and all(p.seed is None for p in params)


def test_weights_stream_on_the_model_device_without_float64_copies(two_steps, double_calls):
    trainer, _, steps, _ = two_steps
    loads = [c.args for c in steps if c.name == "collective_rpc"]
    model = trainer.acc.unwrap_model(trainer.model)
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    for load in loads:
        assert load["iterator_type"] == "generator"  # streamed, never a materialised list
        assert {n for n, _, _ in load["tensors"]} == set(model.state_dict())
        assert all(d == device and t == dtype for _, d, t in load["tensors"])
    assert double_calls == []


def test_calibration_at_version_zero(two_steps):
    trainer, construction, _, _ = two_steps
    engine = trainer.engine
    assert engine.calibrated_diff is not None and engine.calibrated_diff < 1e-4
    # the calibration ran the probe before any load
    assert [c.name for c in construction].count("generate") >= 2 and "collective_rpc" not in [c.name for c in construction]


def test_without_sleep_mode_nothing_sleeps(cache_dir, tmp_path, monkeypatch):
    fake_vllm.install(monkeypatch)
    trainer = make_trainer(cache_dir, tmp_path / "run", sleep_mode=False)
    trainer.step(0)
    assert not {"sleep", "wake_up", "empty_cache"} & {c.name for c in fake_vllm.LOG}
    assert fake_vllm.LOG[0].args["enable_sleep_mode"] is False


def test_wake_without_a_load_is_refused(tiny_path, monkeypatch):
    fake_vllm.install(monkeypatch)
    from align.rollout import SamplingSettings, VLLMEngine

    engine = VLLMEngine(tiny_path, enable_sleep_mode=True)
    engine.sleep()
    with pytest.raises(RuntimeError, match="kept no weights: wake it by loading weights"):
        engine.wake()
    with pytest.raises(RuntimeError, match="asleep"):
        engine.generate([[5, 6]], 1, SamplingSettings(max_tokens=2))


# ---- one-line errors instead of a failure deep in vLLM ----------------------------------------
def test_old_vllm_is_refused_up_front(tiny_path, monkeypatch):
    fake_vllm.install(monkeypatch, version="0.15.1")
    from align.rollout import VLLMEngine

    with pytest.raises(ImportError, match=r"vLLM 0.15.1 is too old: .*reload_weights\(weights_iterator=...\).*vllm>=0.16"):
        VLLMEngine(tiny_path)


def test_sleep_mode_with_expandable_segments_on_a_vllm_that_asserts(tiny_path, monkeypatch):
    fake_vllm.install(monkeypatch, allocator_asserts=True)  # an older allocator
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    from align.rollout import VLLMEngine

    with pytest.raises(ValueError, match="expandable_segments:True.*unset it, or upgrade vLLM"):
        VLLMEngine(tiny_path, enable_sleep_mode=True)
    assert not fake_vllm.INSTANCES  # refused before vLLM starts


def test_expandable_segments_are_judged_by_the_allocator_not_a_module(tiny_path, monkeypatch):
    # Issue 26 #8: an allocator that handles expandable segments is not refused, whatever modules exist
    # (the fake has no vllm.device_allocator.alloc_conf, which the old check took for "asserts").
    fake_vllm.install(monkeypatch, allocator_asserts=False)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    from align.rollout import VLLMEngine

    VLLMEngine(tiny_path, enable_sleep_mode=True).close()
    assert len(fake_vllm.INSTANCES) == 1


# ---- what vLLM 0.32 does on CUDA that the CPU wheel does not (issue 26) ---------------------------
def test_seeded_calls_reproduce_under_v2_seeding(tiny_path, monkeypatch):
    # V2 draws unseeded requests' seeds from NumPy: seeding torch alone left same-seed calls different.
    fake_vllm.install(monkeypatch)
    import numpy as np

    from align.rollout import SamplingSettings, VLLMEngine

    engine = VLLMEngine(tiny_path)
    sampling = SamplingSettings(max_tokens=6, seed=11)
    ids = lambda out: [c.token_ids for group in out for c in group]  # noqa: E731
    first = ids(engine.generate([[5, 6, 7], [8, 9]], 3, sampling))
    np.random.rand(5)  # whatever the process drew in between
    assert ids(engine.generate([[5, 6, 7], [8, 9]], 3, sampling)) == first
    assert ids(engine.generate([[5, 6, 7], [8, 9]], 3, SamplingSettings(max_tokens=6, seed=12))) != first
    # seed_per_prompt's promise: a prompt seeded alone samples the same whatever else is in the call
    alone = ids(engine.generate([[5, 6, 7]], 3, sampling))
    assert alone == ids(engine.generate([[5, 6, 7]], 3, sampling)) and alone == first[:3]
    state = np.random.get_state()[1].copy()
    engine.generate([[5, 6]], 2, sampling)
    assert (np.random.get_state()[1] == state).all()  # the caller's NumPy stream is untouched


def test_building_an_engine_leaves_the_trainers_random_draws_unchanged(tiny_path, monkeypatch):
    fake_vllm.install(monkeypatch)  # like vLLM's worker, the fake LLM reseeds the process
    import random

    import numpy as np

    from align.rollout import VLLMEngine

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    expected = draws()
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    VLLMEngine(tiny_path, seed=7).close()
    assert draws() == expected


def test_one_sleep_mode_engine_per_process(tiny_path, monkeypatch):
    fake_vllm.install(monkeypatch)
    from align.rollout import SamplingSettings, VLLMEngine

    policy = VLLMEngine(tiny_path, enable_sleep_mode=True)
    with pytest.raises(ValueError, match="second vLLM engine with sleep mode in one process.*enable_sleep_mode=False"):
        VLLMEngine(tiny_path, enable_sleep_mode=True)
    judge = VLLMEngine(tiny_path)  # outside the sleep-mode pool: the policy's sleep leaves it whole
    policy.sleep()
    assert judge.generate([[5, 6]], 1, SamplingSettings(max_tokens=3, temperature=0.0))[0][0].token_ids
    policy.close()
    VLLMEngine(tiny_path, enable_sleep_mode=True).close()  # a closed engine frees the pool for another


def test_a_judge_engine_is_built_without_sleep_mode(cache_dir, tmp_path, tiny_path, monkeypatch):
    # recipes/grao_hh.yaml pairs a sleeping policy engine with a judge's: the judge's must stay out of the pool
    fake_vllm.install(monkeypatch)
    trainer = make_trainer(cache_dir, tmp_path / "run", sleep_mode=True)
    judge = trainer._make_reward_engine(tiny_path)
    assert fake_vllm.LOG[0].args["enable_sleep_mode"] is True
    assert [c.args["enable_sleep_mode"] for c in fake_vllm.LOG if c.name == "LLM"][-1] is False
    judge.close()


@pytest.mark.parametrize("dropped, named", [
    ("model.layers.1.mlp.down_proj.weight", "model.layers.1.mlp.down_proj.weight"),
    # fused in vLLM: the stale part shows up as the fused parameter, with its checkpoint parts
    ("model.layers.2.self_attn.v_proj.weight", "model.layers.2.self_attn.qkv_proj.weight (from "),
])
def test_one_stale_layer_of_a_bf16_engine_is_caught(tiny_path, monkeypatch, dropped, named):
    """bf16 logits move a probe by ~1e-2 per token on their own, so one layer left at the previous
    weights hides inside the calibrated tolerance; its bits do not."""
    fake_vllm.install(monkeypatch)
    from align.models import load_model
    from align.rollout import VLLMEngine, WeightSyncError
    from tests.rollout.conftest import perturbed_copy

    trainer = load_model(tiny_path)  # fp32 masters, as the trainer holds them
    engine = VLLMEngine(tiny_path, dtype="bfloat16")
    engine.calibrate(trainer)
    engine.sync_from(trainer)
    assert engine.tensors_checked[0] == engine.tensors_checked[1] > 0  # every engine tensor judged
    step = perturbed_copy(trainer, scale=2e-3, seed=5)
    fake_vllm.INSTANCES[-1].drop_on_load = {dropped}
    probe_only = monkeypatch.context()
    with probe_only as m:  # what the probe alone (the old check) says of the same faulty sync
        m.setattr(engine, "_engine_bit_sums", lambda dtype: {})
        engine.sync_from(trainer)
        engine.sync_from(step)
        engine.sync_from(trainer)
    with pytest.raises(WeightSyncError, match=re.escape(f"1 of the engine's tensors do not hold the trainer's values (bfloat16, exact): {named}")):
        engine.sync_from(step)
    engine.close()


def test_sleep_mode_and_tensor_parallel_are_config_errors_here():
    from align.config import ConfigError
    from align.algorithms import load_config

    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="rollout.sleep_mode=true .* needs a CUDA GPU"):
            load_config(["rollout.sleep_mode=true"])
    with pytest.raises(ConfigError, match="rollout.tensor_parallel_size=2 is not supported"):
        load_config(["rollout.tensor_parallel_size=2"])


def test_vllm_engine_rejects_sleep_mode_on_cpu(tiny_path, monkeypatch):
    fake_vllm.install(monkeypatch)
    import align.rollout.vllm_engine as vllm_engine
    from align.rollout import VLLMEngine

    monkeypatch.setattr(vllm_engine, "_on_cpu", lambda: True)
    with pytest.raises(ValueError, match="rollout.sleep_mode=true needs a CUDA GPU"):
        VLLMEngine(tiny_path, enable_sleep_mode=True)


# ---- the real vLLM wheel has the API the floor promises ------------------------------------------
def test_installed_vllm_has_the_reload_and_sampling_api():
    vllm = pytest.importorskip("vllm")
    from vllm.config.model import LogprobsMode
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    assert "weights_iterator" in inspect.signature(GPUModelRunner.reload_weights).parameters
    assert "processed_logprobs" in typing.get_args(LogprobsMode)
    assert set(inspect.signature(vllm.LLM.wake_up).parameters) >= {"tags"}
    assert "level" in inspect.signature(vllm.LLM.sleep).parameters
    import os

    from align.rollout.vllm_engine import _allocator_refuses_expandable_segments

    os.environ["PYTORCH_CUDA_ALLOC_CONF"], saved = "expandable_segments:True", os.environ.get("PYTORCH_CUDA_ALLOC_CONF")
    try:
        assert not _allocator_refuses_expandable_segments()  # 0.32's allocator handles expandable segments
    finally:
        os.environ.pop("PYTORCH_CUDA_ALLOC_CONF") if saved is None else os.environ.__setitem__("PYTORCH_CUDA_ALLOC_CONF", saved)
