"""Training on several processes with torch's DistributedDataParallel under torchrun: the device and rank of this
process, and what the ranks agree on (a checkpoint's step, their random states, each one's share of a batch)."""

import os

import torch
import torch.distributed as dist

from gpt.models.model import pick_device
from gpt.training.config import TrainConfig


def init_device(c: TrainConfig) -> tuple[torch.device, int, int]:
    """The device of this process, the number of processes and this one's rank (torchrun sets WORLD_SIZE and RANK)."""
    world, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    device = pick_device(c.device)
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() and c.device in ("auto", "cuda") else "gloo"
        dist.init_process_group(backend)
        if backend == "nccl":
            device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
            torch.cuda.set_device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but no CUDA GPU is available")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if c.threads:
        torch.set_num_threads(c.threads)
    if device.type == "cpu":  # subnormal floats slow CPU arithmetic as weights and moments shrink; flush them to zero
        torch.set_flush_denormal(True)
    return device, world, rank


def checkpoint_due(due: bool, world: int, device) -> bool:
    """Whether any rank's clock says a checkpoint is due: every rank must save at the same step."""
    if world == 1:
        return due
    flag = torch.tensor(int(due), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def gather_states(state: torch.Tensor, world: int, device) -> torch.Tensor:
    """Every rank's copy of a byte state, stacked (rank 0 writes them all to the checkpoint)."""
    if world == 1:
        return state[None]
    parts = [torch.empty_like(state, device=device) for _ in range(world)]
    dist.all_gather(parts, state.to(device))
    return torch.stack([p.cpu() for p in parts])


def share(rows: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This process's part of a global batch that every process drew alike (the same generator, the same seed): N
    processes at batch B then see the rows one process sees at batch N x B."""
    n = len(rows) // world
    return rows[rank * n : (rank + 1) * n]
