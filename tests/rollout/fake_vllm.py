"""A recording stand-in for the `vllm` package, to pin how VLLMEngine drives vLLM on a GPU without one.

`install(monkeypatch)` puts it in `sys.modules["vllm"]` and makes VLLMEngine believe it runs on a
GPU. The fake `LLM` records its constructor arguments and every call (generate, sleep, wake_up,
collective_rpc, reset_prefix_cache, plus torch.cuda.empty_cache) in one ordered log, and behaves
like vLLM where a wrong call order would show:

- it really samples, from a transformers copy of the checkpoint in the engine's dtype (bf16 logits
  for dtype="bfloat16"), with vLLM's semantics (n samples per request, processed logprobs after
  temperature / top-k / top-p, greedy = raw logprobs, prompt logprobs for scoring);
- it seeds the way vLLM 0.32's V2 model runner does on CUDA (v1/worker/gpu/sample/states.py): an
  unseeded request draws its seed from NumPy's global generator when it is added, and the n
  children of a request are requests of their own (seed + index when seeded,
  v1/engine/parallel_sampling.py); torch's global generator plays no part;
- building an `LLM` reseeds the whole process (Python, NumPy, torch), as vLLM's worker does;
- the sleep-mode allocator is one per process: `sleep(level=2)` of any engine discards the weights
  (NaN) and KV cache of every engine built with enable_sleep_mode; `wake_up(tags=["weights"])` maps
  weights again without their values; generating before `wake_up(tags=["kv_cache"])` raises;
- `collective_rpc("reload_weights", kwargs={"weights_iterator": it})` copies the tensors in the way
  vLLM's load_weights does (a tied lm_head is skipped: the engine's output layer is its embedding)
  and records, per tensor, its device and dtype, and the iterator's type (a list would mean the
  trainer materialised the whole model); `drop_on_load` names tensors a faulty load skips;
- `apply_model` hands over the model as vLLM holds it: q/k/v and gate/up fused into one parameter
  each, under vLLM's names, so a checkpoint name never shows up where vLLM would not have it.
"""

from __future__ import annotations

import random
import sys
import types
from dataclasses import dataclass, field

import numpy as np
import torch

__version__ = "0.32.0"


@dataclass
class Call:
    name: str
    args: dict = field(default_factory=dict)


LOG: list[Call] = []
INSTANCES: list[LLM] = []


class SamplingParams:
    def __init__(self, n: int = 1, max_tokens: int = 16, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                 stop=None, seed: int | None = None, logprobs: int | None = None, prompt_logprobs: int | None = None,
                 detokenize: bool = True) -> None:
        if temperature == 0 and n > 1:
            raise ValueError(f"n must be 1 when using greedy sampling, got {n}")
        self.n, self.max_tokens, self.temperature, self.top_p, self.top_k = n, max_tokens, temperature, top_p, top_k
        self.stop, self.seed, self.logprobs, self.prompt_logprobs = list(stop or []), seed, logprobs, prompt_logprobs


@dataclass
class Logprob:
    logprob: float


@dataclass
class CompletionOutput:
    token_ids: list[int]
    logprobs: list[dict[int, Logprob]]
    text: str
    finish_reason: str


@dataclass
class RequestOutput:
    outputs: list[CompletionOutput]
    prompt_logprobs: list | None = None


def _processed(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """vLLM's processed logits: temperature, then top-k, then top-p (greedy: untouched)."""
    if p.temperature == 0:
        return logits
    logits = logits / p.temperature
    if p.top_k:
        kth = logits.topk(p.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1:
        sorted_logits, order = logits.sort(dim=-1)
        drop = sorted_logits.softmax(-1).cumsum(-1) <= 1 - p.top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class LLM:
    def __init__(self, **kwargs) -> None:
        from align.models import load_model, load_tokenizer

        LOG.append(Call("LLM", dict(kwargs)))
        INSTANCES.append(self)
        self.kwargs = kwargs
        seed = kwargs.get("seed", 0)
        random.seed(seed)  # vLLM's worker: set_random_seed(model_config.seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.model = load_model(kwargs["model"], kwargs.get("dtype", "float32")).eval()
        self.tied = bool(getattr(self.model.config, "tie_word_embeddings", False))
        self.tokenizer = load_tokenizer(kwargs["model"])
        self.eos = {self.tokenizer.eos_token_id}
        self.weights_state = "loaded"  # loaded | discarded | mapped (awake, values garbage)
        self.kv_awake = True
        vocab = self.model.get_output_embeddings().weight.shape[0]
        config = types.SimpleNamespace(cache_config=types.SimpleNamespace(block_size=16),
                                       model_config=types.SimpleNamespace(get_vocab_size=lambda: vocab))
        self.llm_engine = types.SimpleNamespace(vllm_config=config)
        self.loads: list[dict] = []
        self.drop_on_load: set[str] = set()  # checkpoint names a faulty load skips (tests set it)

    # ---- generation ----------------------------------------------------------------------
    def _check_ready(self) -> None:
        if self.weights_state != "loaded" or not self.kv_awake:
            raise RuntimeError(f"fake vLLM: generate while asleep (weights {self.weights_state}, kv awake {self.kv_awake})")

    @torch.no_grad()
    def generate(self, requests, params, use_tqdm: bool = False):
        self._check_ready()
        params_list = params if isinstance(params, list) else [params] * len(requests)
        LOG.append(Call("generate", {"requests": len(requests), "params": params_list}))
        return [self._one(list(r["prompt_token_ids"]), p) for r, p in zip(requests, params_list)]

    def _one(self, prompt: list[int], p: SamplingParams) -> RequestOutput:
        if p.prompt_logprobs is not None:  # scoring: log p(token i | tokens < i), raw
            logp = self.model(torch.tensor([prompt])).logits[0].float().log_softmax(-1)
            steps = [None] + [{tok: Logprob(float(logp[i - 1, tok]))} for i, tok in enumerate(prompt) if i > 0]
            return RequestOutput([], steps)
        # V2: one seed per child request, drawn from NumPy when the request carries none
        seeds = [p.seed + i if p.seed is not None else int(np.random.randint(-2**63, 2**63 - 1, dtype=np.int64))
                 for i in range(p.n)]
        generators = [torch.Generator().manual_seed(s % 2**63) for s in seeds]
        rows = torch.tensor([prompt] * p.n)
        tokens: list[list[int]] = [[] for _ in range(p.n)]
        logprobs: list[list[float]] = [[] for _ in range(p.n)]
        done = [False] * p.n
        for _ in range(p.max_tokens):
            logits = _processed(self.model(rows).logits[:, -1].float(), p)
            logp = logits.log_softmax(-1)
            if p.temperature == 0:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.stack([torch.multinomial(logp[i].exp(), 1, generator=g)[0] for i, g in enumerate(generators)])
            for i in range(p.n):
                if not done[i]:
                    tokens[i].append(int(nxt[i]))
                    logprobs[i].append(float(logp[i, nxt[i]]))
                    done[i] = int(nxt[i]) in self.eos
            rows = torch.cat([rows, nxt[:, None]], dim=1)
            if all(done):
                break
        outs = []
        for toks, lps in zip(tokens, logprobs):
            stopped = toks[-1] in self.eos
            text = self.tokenizer.decode([t for t in toks if t not in self.eos], skip_special_tokens=True)
            outs.append(CompletionOutput(toks, [{t: Logprob(lp)} for t, lp in zip(toks, lps)], text,
                                         "stop" if stopped else "length"))
        return RequestOutput(outs)

    # ---- weights and memory --------------------------------------------------------------
    @torch.no_grad()
    def collective_rpc(self, method: str, timeout=None, args: tuple = (), kwargs: dict | None = None):
        kwargs = kwargs or {}
        record = {"method": method}
        if method == "reload_weights":
            if self.weights_state == "discarded":
                raise RuntimeError("fake vLLM: reload_weights while the weights are unmapped (wake_up(tags=['weights']) first)")
            iterator = kwargs["weights_iterator"]
            record |= {"iterator_type": type(iterator).__name__, "tensors": []}
            state = self.model.state_dict()
            for name, tensor in iterator:
                record["tensors"].append((name, tensor.device, tensor.dtype))
                if name == "lm_head.weight" and self.tied:
                    continue  # vLLM's load_weights skips it: the tied output layer is the embedding
                if name in self.drop_on_load:
                    continue  # a fault: a loader that silently leaves this tensor stale
                state[name].copy_(tensor)
            self.weights_state = "loaded"
        LOG.append(Call("collective_rpc", record))
        return [None]

    def reset_prefix_cache(self, *args, **kwargs) -> bool:
        LOG.append(Call("reset_prefix_cache"))
        return True

    @torch.no_grad()
    def sleep(self, level: int = 1, mode: str = "abort") -> None:
        LOG.append(Call("sleep", {"level": level}))
        # One allocator per process: every sleep-mode engine's memory is in its pool.
        for llm in [i for i in INSTANCES if i.kwargs.get("enable_sleep_mode")] or [self]:
            if level == 2:
                for param in llm.model.parameters():
                    param.fill_(float("nan"))  # level 2 keeps no copy of the weights
                llm.weights_state = "discarded"
            llm.kv_awake = False

    def wake_up(self, tags: list[str] | None = None) -> bool:
        LOG.append(Call("wake_up", {"tags": tags}))
        tags = tags or ["weights", "kv_cache"]
        for llm in [i for i in INSTANCES if i.kwargs.get("enable_sleep_mode")] or [self]:
            if "weights" in tags and llm.weights_state == "discarded":
                llm.weights_state = "mapped"
            if "kv_cache" in tags:
                llm.kv_awake = True
        return self.kv_awake

    def apply_model(self, func):
        return [func(EngineModel(self.model))]


# vLLM's Qwen2/Llama classes: checkpoint modules that load into one fused parameter.
PACKED_MODULES = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}


class EngineModel:
    """The model as vLLM's apply_model hands it over: q/k/v and gate/up fused into one parameter
    each (concatenated along the output dimension, in packed_modules_mapping order), a tied lm_head
    not a parameter of its own, and the model class's packed_modules_mapping."""

    packed_modules_mapping = PACKED_MODULES

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def named_parameters(self):
        fused: dict[str, list[torch.Tensor]] = {}
        for name, param in self.model.named_parameters():  # a tied lm_head is deduplicated here
            parts = name.split(".")
            target = next(((i, f) for i, p in enumerate(parts) for f, members in PACKED_MODULES.items() if p in members), None)
            if target is None:
                yield name, param
                continue
            i, into = target
            fused.setdefault(".".join(parts[:i] + [into] + parts[i + 1:]), []).append(param)
        for name, params in fused.items():
            yield name, torch.cat([p.detach() for p in params])


class CuMemAllocator:
    """vllm.device_allocator.cumem.CuMemAllocator's constructor: releases before vLLM learnt to switch
    expandable segments off around its pool asserted on them here (`asserts_on_expandable`)."""

    asserts_on_expandable = False

    def __init__(self) -> None:
        import os

        if type(self).asserts_on_expandable:
            assert "expandable_segments:True" not in os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""), (
                "Expandable segments are not compatible with memory pool.")


def install(monkeypatch, version: str = __version__, allocator_asserts: bool = False) -> types.ModuleType:
    """Make `import vllm` return this module (at `version`) and VLLMEngine see a GPU; returns the module.
    allocator_asserts: the sleep-mode allocator refuses expandable segments (older vLLM)."""
    import align.rollout.vllm_engine as vllm_engine

    module = sys.modules[__name__]
    LOG.clear()
    INSTANCES.clear()
    monkeypatch.setattr(module, "__version__", version)
    monkeypatch.setitem(sys.modules, "vllm", module)
    for name in [n for n in sys.modules if n.startswith("vllm.")]:  # the real package's submodules, if imported
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(CuMemAllocator, "asserts_on_expandable", allocator_asserts)
    cumem = types.ModuleType("vllm.device_allocator.cumem")
    cumem.CuMemAllocator = CuMemAllocator
    monkeypatch.setitem(sys.modules, "vllm.device_allocator", types.ModuleType("vllm.device_allocator"))
    monkeypatch.setitem(sys.modules, "vllm.device_allocator.cumem", cumem)
    monkeypatch.setattr(vllm_engine, "_on_cpu", lambda: False)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: LOG.append(Call("empty_cache")))
    return module
