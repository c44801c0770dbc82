"""The server side of align's gloo weight transport (see gloo_transfer): a vLLM WeightTransferEngine.

Imported only inside a vLLM server process, by the plugin `gloo_transfer.register` installs, so
it may import vLLM at module level.
"""

from __future__ import annotations

import torch
from vllm.distributed.weight_transfer.base import WeightTransferEngine

from align.rollout.gloo_transfer import GlooInitInfo, GlooUpdateInfo, join_group


class GlooWeightTransferEngine(WeightTransferEngine[GlooInitInfo, GlooUpdateInfo]):
    init_info_cls = GlooInitInfo
    update_info_cls = GlooUpdateInfo
    supports_draft_weight_update = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._store = self._group = None

    def init_transfer_engine(self, init_info: GlooInitInfo) -> None:
        if self.parallel_config.world_size > 1:
            raise RuntimeError("align_gloo sends to one worker: start the server with --tensor-parallel-size 1")
        if self._group is not None:
            # A second trainer (or a restarted one) would silently share or steal the transport.
            raise RuntimeError("this vLLM server already has a trainer attached (align_gloo transport); one trainer "
                               "per server: if that trainer is gone (a crash), restart the server")
        self._store, self._group = join_group(init_info.master_address, init_info.master_port, 1,
                                          init_info.timeout_s, is_master=False)

    def start_weight_update(self) -> None:
        # Checkpoint-format tensors: vLLM's layerwise reload runs each layer's post-load
        # processing (the CPU build's weight repacking) once its tensors are all in.
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)

    def update_weights(self, update_info: dict) -> None:
        # The base class ends with torch.accelerator.synchronize(), which a CPU-only torch refuses.
        self.receive_weights(self.parse_update_info(update_info))

    def receive_weights(self, update_info: GlooUpdateInfo) -> None:
        if self._group is None:
            raise RuntimeError("align_gloo: update_weights before init_weight_transfer_engine")
        import torch.distributed as dist

        # The whole chunk first, then the load: a tensor vLLM refuses (another architecture, a bad
        # shape) then fails the HTTP call while the sender has finished its broadcasts, instead of
        # leaving it waiting on the next one until the timeout.
        received = []
        for name, dtype_name, shape in zip(update_info.names, update_info.dtype_names, update_info.shapes):
            tensor = torch.empty(shape, dtype=getattr(torch, dtype_name))
            self._group.broadcast([tensor], dist.BroadcastOptions()).wait()
            received.append((name, tensor))
        self.model.load_weights([(name, tensor.to(self.device)) for name, tensor in received])

    def shutdown(self) -> None:
        self._store = self._group = None
