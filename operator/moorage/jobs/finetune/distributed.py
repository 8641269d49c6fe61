"""Where this process stands among the training processes, and the few collectives training needs.

One process per GPU, started by torchrun (which sets RANK, LOCAL_RANK and WORLD_SIZE); a plain start is
a world of one.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints, outputs and the report."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env() -> World:
    return World(
        rank=int(os.environ.get("RANK", "0")),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        size=int(os.environ.get("WORLD_SIZE", "1")),
    )


def start(world: World, device: torch.device) -> None:
    if not world.distributed:
        return
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None
    )


def stop(world: World) -> None:
    if world.distributed:
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def mean(world: World, value: float, device: torch.device) -> float:
    """The mean of a number over all processes (a loss, for the log every process prints the same)."""
    if not world.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / world.size


def total(world: World, value: int, device: torch.device) -> int:
    if not world.distributed:
        return value
    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor)
    return int(tensor.item())
