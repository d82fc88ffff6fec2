"""torchrun in one place: ranks, the process group, broadcast and gather, and data-parallel training of one model
(batch split, run-folder sharing, agreed stops). A sweep under torchrun joins the group without DDP."""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from params import UserError


ACTIVE = [False]  # set by setup(): main.py trains one model over the group (a sweep under torchrun does not)


def launched() -> bool:
    """True under torchrun with several processes (its WORLD_SIZE); False for a plain `python main.py`."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def world_size() -> int:
    """Processes training this model together: 1 unless setup() joined a process group."""
    return dist.get_world_size() if ACTIVE[0] else 1


def rank() -> int:
    return dist.get_rank() if ACTIVE[0] else 0


def launch_rank() -> tuple[int, int]:
    """(rank, world size) that torchrun gave this process (env RANK, WORLD_SIZE); (0, 1) for a plain run."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else (0, 1)


def join_group(device: torch.device, timeout: datetime.timedelta | None = None) -> torch.device:
    """Join torchrun's process group (nccl on CUDA, one GPU per local rank; gloo on CPU); returns this rank's
    device."""
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                **({"timeout": timeout} if timeout is not None else {}))
    return device


def setup(batch_size: int, device: torch.device) -> torch.device:
    """Train one model data-parallel over the group; returns this rank's device. The global batch stays
    batch_size, so each rank draws batch_size / world_size images of it."""
    world = int(os.environ["WORLD_SIZE"])
    if batch_size % world:
        raise UserError(f"batch_size={batch_size} does not split over {world} processes; use a multiple of {world} "
                        f"(the batch is global: each process trains on batch_size / {world} images).")
    device = join_group(device)
    ACTIVE[0] = True
    return device


def broadcast(message: list) -> list:
    """Rank 0's list of picklable values, on every rank."""
    dist.broadcast_object_list(message, src=0)
    return message


def gather(value) -> list:
    """Every rank's value, in rank order, on every rank (a barrier)."""
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, value)
    return everyone


def share_run_dir(make) -> str:
    """Rank 0 calls make() (create or lock the run folder, write params.yaml) and sends its folder to every rank;
    a UserError on rank 0 stops every rank with the same sentence."""
    message = [None, None]
    if rank() == 0:
        try:
            message = [make(), None]
        except UserError as error:
            message = [None, str(error)]
    message = broadcast(message)
    if message[1] is not None:
        raise UserError(message[1])
    return message[0]


def agree(means: dict[str, torch.Tensor], signum: int) -> tuple[dict[str, torch.Tensor], int]:
    """At a log boundary: every rank's window means averaged (equal local batches, so the global batch's means),
    and the stop signal any rank received (0: none), so all ranks log and stop at the same step."""
    names = list(means)
    flat = torch.cat([means[name].double().reshape(-1) for name in names])
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    stop = torch.tensor([float(signum)], dtype=torch.float64, device=device)
    flat = flat.to(device)
    dist.all_reduce(flat)
    dist.all_reduce(stop, op=dist.ReduceOp.MAX)
    flat = (flat / world_size()).cpu()
    averaged, offset = {}, 0
    for name in names:
        size = means[name].numel()
        averaged[name] = flat[offset:offset + size].reshape(means[name].shape).to(means[name].dtype)
        offset += size
    return averaged, int(stop.item())


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model the training step calls: DistributedDataParallel over `model` (whose state_dict, without the
    `module.` prefix, is what checkpoints hold) when there are several processes, else `model` itself."""
    if world_size() == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def finish() -> None:
    """Leave the process group (no-op for a single process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    ACTIVE[0] = False
