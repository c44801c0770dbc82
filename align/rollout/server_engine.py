"""ServerEngine: rollouts from a `vllm serve` process elsewhere (another GPU, another node), weights
pushed after every optimizer step through vLLM's own RL endpoints.

The server is vLLM's OpenAI-compatible server started by `python -m align serve` (or by hand, see
the README) with `VLLM_SERVER_DEV_MODE=1`, which mounts the RL routes (`/pause`, `/resume`,
`/init_weight_transfer_engine`, `/start_weight_update`, `/update_weights`,
`/finish_weight_update`), and a weight-transfer backend: align's `align_gloo` (gloo_transfer.py)
on CPU machines. Token ids go in and come out (`/v1/completions` with `return_token_ids`), with
the logprobs of the sampling distribution (`--logprobs-mode processed_logprobs`), as the colocated
engine reports them.

A sync: pause -> start -> one `/update_weights` per chunk of tensors while the sender broadcasts
that chunk (the iterator is consumed once, a chunk at a time, so a ZeRO-3 gather never
materialises the whole model) -> finish with the weight version -> reset the prefix cache ->
resume; `RolloutEngine.sync_from` then verifies it with the probe, scored over HTTP. Every HTTP
failure or timeout is one line naming the server.
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

from align.errors import UserError
from align.models import merged_named_tensors
from align.rollout.base import (
    Completion,
    RolloutEngine,
    SamplingSettings,
    WeightSyncError,
    check_prompts,
    raise_if_any_rank_failed,
)
from align.rollout.gloo_transfer import GlooSender, join_group, local_address_towards
from align.rollout.weights import checkpoint_tensor_names
from align.runtime.seeds import derived_seed

# Bytes of tensors per /update_weights call: big enough that HTTP round trips do not dominate,
# small enough that a chunk held for sending stays a bounded extra copy.
CHUNK_BYTES = 256 << 20


class ServerError(UserError, RuntimeError):
    """A rollout server could not be reached, refused a request, or answered something unusable."""


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerEngine(RolloutEngine):
    """Rollouts on one vLLM server at `url`. See RolloutEngine; this class only speaks vLLM's HTTP API."""

    def __init__(self, url: str, model_path: str, *, dtype: str = "float32", seed: int = 0, timeout_s: float = 600.0,
                 api_key: str | None = None, probe_tolerance: float | None = None,
                 transfer_host: str | None = None, send_weights: bool = True) -> None:
        from transformers import AutoConfig

        self.url, self._timeout, self._api_key = url.rstrip("/"), timeout_s, api_key
        models = self._request("GET", "/v1/models").get("data") or []
        if not models:
            raise ServerError(f"rollout server {self.url} serves no model")
        self._model_id = models[0]["id"]
        self.max_model_len = int(models[0].get("max_model_len") or 1 << 30)  # the server's context
        try:
            self._request("GET", "/is_paused")
        except ServerError as error:
            raise ServerError(f"rollout server {self.url} has no RL endpoints ({error}); start it with "
                              "`python -m align serve` or set VLLM_SERVER_DEV_MODE=1 for `vllm serve`") from None
        self._check_tokenizer(model_path)
        vocab = AutoConfig.from_pretrained(model_path).vocab_size
        self._init_probe(vocab_size=vocab, seed=seed, dtype=dtype, probe_tolerance=probe_tolerance,
                         expected_names=checkpoint_tensor_names(model_path),
                         prompt_len=min(144, self.max_model_len - 16))
        self._sender = None
        if send_weights:
            # The server's worker connects back to this address: the one on this machine's route to it.
            where = urllib.parse.urlsplit(self.url)
            self._connect_sender(transfer_host or local_address_towards(where.hostname, where.port or 80))

    def _connect_sender(self, transfer_host: str) -> None:
        """Open the transport. The server's worker joins a gloo group whose store this process hosts;
        its init call blocks until both ends are in, so the two run at once."""
        timeout_s = self._timeout
        port = _free_port(transfer_host)
        init_info = {"master_address": transfer_host, "master_port": port, "timeout_s": timeout_s}
        errors = self._open_transport(init_info, lambda: GlooSender(transfer_host, port, timeout_s))
        if errors:
            hint = "" if "already has a trainer attached" in str(errors[0]) else (
                " (was it started with --weight-transfer-config '{\"backend\": \"align_gloo\"}'? `python -m align serve` adds it)")
            raise ServerError(f"could not open the weight transport: {errors[0]}{hint}")

    def _check_tokenizer(self, model_path: str) -> None:
        """The server must turn text into the trainer's token ids (rewards decode them, stop strings
        match on them): a fixed text tokenized on both sides."""
        from align.models import load_tokenizer

        text = "Hello, world! 12+7=19; Ünïcödé and\ttabs."
        ours = load_tokenizer(model_path)(text, add_special_tokens=False)["input_ids"]
        theirs = self._request("POST", "/tokenize", {"model": self._model_id, "prompt": text,
                                                       "add_special_tokens": False})["tokens"]
        if list(theirs) != list(ours):
            raise ServerError(f"rollout server {self.url} serves {self._model_id}, whose tokenizer differs from "
                              f"{model_path}'s ({len(theirs)} vs {len(ours)} ids for one test text): start it with the "
                              "trainer's model (`python -m align serve --model` the same name or folder)")

    # ---- HTTP ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, payload: dict | None = None) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        if self._api_key:
            request.add_header("Authorization", f"Bearer {self._api_key}")
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            try:  # vLLM's errors: {"error": {"message": ...}} or FastAPI's {"detail": ...}
                parsed = json.loads(detail)
                detail = str((parsed.get("error") or {}).get("message") or parsed.get("detail") or detail)
            except (ValueError, AttributeError):
                pass
            raise ServerError(f"rollout server {self.url}{path}: HTTP {error.code}: {detail[:400]}".replace("\n", " ")) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise ServerError(f"rollout server {self.url} unreachable on {path} ({reason}); is `python -m align serve` "
                              f"running there, and is rollout.server_timeout_s={self._timeout:g} long enough?") from None
        return json.loads(body) if body else {}

    def _open_transport(self, init_info: dict, make_sender) -> list[Exception]:
        """Both ends of the rendezvous at once; a server that refuses fails at once, not after the
        sender waited out its timeout (its thread is then left to time out on its own)."""
        opened: list = []

        def join() -> None:
            try:
                opened.append(make_sender())
            except Exception as error:  # noqa: BLE001 - reported below (a taken port, a refused connection)
                opened.append(error)

        joining = threading.Thread(target=join, daemon=True)
        joining.start()
        try:
            self._request("POST", "/init_weight_transfer_engine", {"init_info": init_info})
        except ServerError as error:
            # The worker never joined: complete the rendezvous from here, so the sender's thread
            # returns now instead of blocking until its timeout (or the interpreter's exit).
            stand_in = threading.Thread(target=lambda: join_group(init_info["master_address"], init_info["master_port"], 1,
                                                              30.0, is_master=False), daemon=True)
            stand_in.start()
            joining.join(35.0)
            for sender in opened:
                if isinstance(sender, GlooSender):
                    sender.close()
            return [error]
        joining.join(self._timeout)
        if not opened:
            return [TimeoutError(f"the server's worker did not join the transport within {self._timeout:g} s")]
        if isinstance(opened[0], Exception):
            return [opened[0]]
        self._sender = opened[0]
        return []

    def _in_thread(self, method: str, path: str, payload: dict, work) -> list[Exception]:
        """Run the HTTP call in a thread while `work()` runs here (the two ends of one collective);
        the errors of either, in the order they happened."""
        errors: list[Exception] = []

        def call() -> None:
            try:
                self._request(method, path, payload)
            except Exception as error:  # noqa: BLE001 - reported by the caller with the server's name
                errors.append(error)

        thread = threading.Thread(target=call, daemon=True)
        thread.start()
        try:
            work()
        except Exception as error:  # noqa: BLE001
            errors.append(error)
        thread.join(self._timeout)
        if thread.is_alive():
            errors.append(TimeoutError(f"{path} did not return within {self._timeout:g} s"))
        return errors

    # ---- generation ------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], n: int, sampling: SamplingSettings) -> list[list[Completion]]:
        return self.generate_slice(prompts, n, sampling)

    def generate_slice(self, prompts: list[list[int]], n: int, sampling: SamplingSettings,
                       first: int = 0) -> list[list[Completion]]:
        """`generate` for prompts `first`, `first` + 1, ... of a larger call (ServerPool deals one call over
        several servers): a seeded prompt's seed is that of its place in the whole call."""
        check_prompts(prompts, n)
        payload = {
            "model": self._model_id, "n": n, "max_tokens": sampling.max_tokens, "temperature": sampling.temperature,
            "top_p": sampling.top_p, "top_k": sampling.top_k or -1, "stop": list(sampling.stop), "logprobs": 0,
            "return_token_ids": True, "skip_special_tokens": True,
        }
        if not prompts:
            return []
        if sampling.seed is None:  # the server's own stream: one request for all prompts
            return self._sample({**payload, "prompt": [list(p) for p in prompts]}, prompts, n)
        # A request's seed seeds each of its prompts alike (their samples would repeat each other):
        # one request per prompt, each with a seed of its own, sent together so the server batches them.
        seeds = [derived_seed(sampling.seed, first + i) for i in range(len(prompts))]
        with ThreadPoolExecutor(max_workers=min(32, len(prompts))) as pool:
            groups = pool.map(lambda ps: self._sample({**payload, "prompt": [list(ps[0])], "seed": ps[1]}, [ps[0]], n),
                              zip(prompts, seeds))
            return [group[0] for group in groups]

    def _sample(self, payload: dict, prompts: list[list[int]], n: int) -> list[list[Completion]]:
        choices = sorted(self._request("POST", "/v1/completions", payload)["choices"], key=lambda c: c["index"])
        if len(choices) != len(prompts) * n:
            raise ServerError(f"rollout server {self.url} returned {len(choices)} completions for {len(prompts)} x {n}")
        return [[self._completion(prompts[i], choices[i * n + j]) for j in range(n)] for i in range(len(prompts))]

    def _completion(self, prompt: list[int], choice: dict) -> Completion:
        reason = choice.get("finish_reason")
        if reason not in ("stop", "length"):
            raise ServerError(f"rollout server {self.url} finished a request with reason {reason!r}; expected stop or length")
        token_ids = list(choice["token_ids"])
        logprobs = list(choice["logprobs"]["token_logprobs"])
        if len(logprobs) != len(token_ids):
            raise ServerError(f"rollout server {self.url}: {len(token_ids)} tokens but {len(logprobs)} logprobs")
        return Completion(list(prompt), token_ids, logprobs, choice.get("text", ""), reason, self._weight_version)

    def score(self, sequences: list[tuple[list[int], list[int]]]) -> list[list[float]]:
        if not sequences:
            return []
        payload = {"model": self._model_id, "prompt": [list(p) + list(c) for p, c in sequences], "max_tokens": 1,
                   "prompt_logprobs": 0, "temperature": 0.0}
        choices = sorted(self._request("POST", "/v1/completions", payload)["choices"], key=lambda c: c["index"])
        scores = []
        for (prompt, completion), choice in zip(sequences, choices):
            steps = choice["prompt_logprobs"][len(prompt):]
            scores.append([float(step[str(tok)]["logprob"]) for tok, step in zip(completion, steps)])
        return scores

    # ---- weights ---------------------------------------------------------------------------
    def attach(self, model, named_tensors: Iterable[tuple[str, torch.Tensor]] | None = None) -> None:
        # A server keeps whatever the last run left in it: load the trainer's weights as version 0
        # (what TRL's server mode does before its first generation). A model of another
        # architecture or vocabulary fails here, in vLLM's load_weights.
        self._weight_version = -1  # so that the server records this load as version 0
        self.load_weights(merged_named_tensors(model) if named_tensors is None else named_tensors)

    def calibrate(self, model) -> float:
        try:
            return super().calibrate(model)
        except WeightSyncError as error:
            raise WeightSyncError(f"rollout server {self.url}: {error}; the trainer's weights were just loaded into it, so "
                                  f"check that the server computes in the trainer's engine dtype ({self.dtype}: "
                                  f"`python -m align serve --dtype {self.dtype}`)") from None

    def _before_load(self) -> None:
        if self._sender is not None:  # another rank's request would wait on this rank's pause below
            self._warm_probe()  # the probe prompts in the server's prefix cache, to catch a missed reset

    def _load(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """The sending rank pushes; every other rank only walks the tensors (under ZeRO-3 each one is
        a collective gather). All return together, after the server resumed, and all raise if the
        push failed: no rank probes a half-loaded server or waits in a collective for a failed one."""
        failure = None
        if self._sender is None:
            for _ in named_tensors:
                pass
        else:
            try:
                self._push(named_tensors)
            except ServerError as error:
                failure = str(error)
                for _ in named_tensors:  # the other ranks are still gathering: keep in step with them
                    pass
        raise_if_any_rank_failed(failure)

    def _push(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        # Nothing is in flight between align's calls ("wait" loses nothing if a request is); the
        # cache is reset after the load below, not by the pause (vLLM deprecates clear_cache there).
        self._request("POST", "/pause?mode=wait&clear_cache=false", {})
        try:
            self._request("POST", "/start_weight_update", {})
            for chunk in _chunks(named_tensors, CHUNK_BYTES):
                info = {"names": [n for n, _ in chunk], "dtype_names": [str(t.dtype).removeprefix("torch.") for _, t in chunk],
                        "shapes": [list(t.shape) for _, t in chunk]}
                errors = self._in_thread("POST", "/update_weights", {"update_info": info},
                                         lambda chunk=chunk: self._sender.send([t for _, t in chunk]))
                if errors:
                    raise ServerError(f"rollout server {self.url}: weight update failed: {errors[0]}")
            self._request("POST", "/finish_weight_update", {"weight_version": str(self._weight_version + 1)})
            self._request("POST", "/reset_prefix_cache", {})
        finally:
            self._request("POST", "/resume", {})

    def _engine_tensors(self, names: set[str]) -> dict[str, torch.Tensor]:
        return {}  # the server's tensors are not readable from here; the probe judges the sync

    def close(self) -> None:
        sender = self.__dict__.pop("_sender", None)
        if sender is None:  # not this rank's transport, or closed already
            return
        try:
            self._request("POST", "/shutdown_weight_transfer_engine", {})
        except ServerError:
            pass  # a server that is gone has nothing left to shut down
        sender.close()


def _chunks(named: Iterable[tuple[str, torch.Tensor]], limit: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Consecutive groups of (name, tensor) of at most `limit` bytes (a bigger tensor goes alone)."""
    chunk, size = [], 0
    for name, tensor in named:
        nbytes = tensor.numel() * tensor.element_size()
        if chunk and size + nbytes > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append((name, tensor))
        size += nbytes
    if chunk:
        yield chunk
