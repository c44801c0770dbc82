"""A CPU weight transport for vLLM servers: gloo broadcasts behind vLLM's weight-transfer API.

vLLM 0.32 registers weight-transfer engines for GPUs only (`nccl`, `ipc`, ...). This one, named
`align_gloo`, moves the trainer's tensors over a two-member gloo group (the trainer's sender = rank
0, the server's worker = rank 1) so the whole server path runs on CPU machines too. The server
loads it as a vLLM general plugin (the `vllm.general_plugins` entry point `align_gloo` in
pyproject.toml, which calls `register`); `python -m align serve` starts vLLM with
`--weight-transfer-config '{"backend": "align_gloo"}'`.

Worker side (`GlooWeightTransferEngine`, in the server): `init_transfer_engine` joins the group
over a TCPStore the trainer hosts; each `update_weights` call receives the tensors its metadata
lists, one broadcast each, and loads them through the model's own `load_weights` inside vLLM's
layerwise reload (checkpoint names, so fused q/k/v and repacked CPU weights are handled by vLLM).

Trainer side (`GlooSender`): hosts the store, joins as rank 0, broadcasts each tensor of a chunk
while the HTTP `/update_weights` call for that chunk waits on the other side. A broadcast is a
real collective: a worker that never receives makes the sender time out, not report success.
"""

from __future__ import annotations

import datetime
import socket
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

BACKEND = "align_gloo"


def local_address_towards(host: str, port: int) -> str:
    """This machine's address on the route to host:port (a UDP "connect" sends nothing), so that
    gloo listens where the other end can reach it, not on whatever the hostname resolves to."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((host, port))
        return probe.getsockname()[0]


def join_group(host: str, port: int, rank: int, timeout_s: float, is_master: bool):
    """(store, two-member gloo group) over a TCPStore at host:port, which the trainer hosts (is_master)."""
    timeout = datetime.timedelta(seconds=timeout_s)
    store = dist.TCPStore(host, port, world_size=2, is_master=is_master, timeout=timeout, wait_for_workers=False)
    options = dist.ProcessGroupGloo._Options()
    options._timeout = timeout
    options._devices = [dist.ProcessGroupGloo.create_device(hostname=local_address_towards(host, port))]
    return store, dist.ProcessGroupGloo(store, rank, 2, options)


class GlooSender:
    """The trainer's end: hosts the rendezvous store on `port` and joins the group as rank 0 (blocks
    until the server's worker joins, so start the server's init call in another thread first)."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.store, self.group = join_group(host, port, 0, timeout_s, is_master=True)

    def send(self, tensors: Sequence[torch.Tensor]) -> None:
        for tensor in tensors:
            # gloo moves CPU tensors; a GPU trainer's tensor is copied to the host one at a time
            work = self.group.broadcast([tensor.detach().cpu().contiguous()], dist.BroadcastOptions())
            work.wait()

    def close(self) -> None:
        self.group = None
        self.store = None


def register() -> None:
    """vLLM general-plugin hook: make `align_gloo` a weight-transfer backend in this process.
    vLLM may call it more than once per process (its plugin loader's warning), hence the check."""
    from vllm.distributed.weight_transfer.factory import WeightTransferEngineFactory

    if BACKEND not in WeightTransferEngineFactory._registry:
        WeightTransferEngineFactory.register_engine(BACKEND, "align.rollout.gloo_worker", "GlooWeightTransferEngine")


@dataclass
class GlooInitInfo:
    """What the worker needs to join: the trainer's store address and the collective timeout."""

    master_address: str
    master_port: int
    timeout_s: float = 600.0


@dataclass
class GlooUpdateInfo:
    """One chunk: the tensors' checkpoint names, dtypes and shapes, in broadcast order."""

    names: list[str]
    dtype_names: list[str]
    shapes: list[list[int]]

    def __post_init__(self) -> None:
        if not len(self.names) == len(self.dtype_names) == len(self.shapes):
            raise ValueError(f"update_info: {len(self.names)} names, {len(self.dtype_names)} dtypes and "
                             f"{len(self.shapes)} shapes; one of each per tensor")
