"""Process-group plumbing for torchrun: one object the trainer asks 'who am I, and sum this'.

Under `torchrun` the environment carries RANK, WORLD_SIZE and LOCAL_RANK; without it the run is
a single process and every collective is the identity, so the trainer has one code path.
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from .records import dumps

DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """All-reduce in place (sum); identity in a single process."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def max_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return tensor

    def gather_bytes(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Collect one uint8 tensor of equal length from every rank (for RNG states)."""
        if not self.enabled:
            return [tensor]
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor)
        return parts

    def share_json(self, value: Any, device: torch.device) -> Any:
        """Rank 0's JSON value on every rank (JSON bytes, never pickle)."""
        if not self.enabled:
            return value
        blob = dumps(value).encode() if self.is_main else b""
        size = torch.tensor([len(blob)], dtype=torch.int64, device=device)
        dist.broadcast(size, src=0)
        data = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
        if self.is_main:
            data.copy_(torch.frombuffer(bytearray(blob), dtype=torch.uint8))
        dist.broadcast(data, src=0)
        return json.loads(bytes(data.cpu().numpy()).decode())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device_type: str) -> DistContext:
    """Join the torchrun job if there is one: NCCL on CUDA, Gloo on CPU, with a timeout
    so that a rank that dies ends the job instead of hanging it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    timeout = datetime.timedelta(seconds=int(os.environ.get("BARD_DIST_TIMEOUT_S",
                                                            DEFAULT_TIMEOUT_S)))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=timeout)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown_distributed(context: DistContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
