"""Data parallelism applied from outside the model: DDP or FSDP2 over any recur model.

Under `torchrun` (or `recur train --nproc N`) every process draws the same global batch
from the seed and trains on its own slice; gradients are averaged across processes, so
N processes with global batch B follow the curve of one process with batch B split into
N micro-batches. Nothing under recur.ops, recur.layers or recur.models imports
torch.distributed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

STRATEGIES = ("ddp", "fsdp")


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init(device: str) -> Context:
    """Joins the process group torchrun describes in the environment (one process: no-op)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    return Context(dist.get_rank(), dist.get_world_size(), local_rank)


def shutdown(context: Context) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, context: Context, strategy: str) -> nn.Module:
    """DDP, or FSDP2 sharding each block and then the root, when more than one process runs."""
    if not context.enabled:
        return model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [context.local_rank] if next(model.parameters()).is_cuda else None
        return DistributedDataParallel(model, device_ids=device_ids)
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in model.backbone.blocks:
            fully_shard(block)
        fully_shard(model)
        return model
    raise ValueError(f"train.distributed must be one of {list(STRATEGIES)}; got {strategy!r}")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer, context: Context, strategy: str):
    """(model state, optimiser state) as full unsharded tensors on the CPU, for checkpoints."""
    if context.enabled and strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(model, optimizer, options=options)
    return unwrap(model).state_dict(), optimizer.state_dict()


def full_model_state(model: nn.Module, context: Context, strategy: str) -> dict:
    """The model's weights as full unsharded tensors on the CPU (every process takes part)."""
    if context.enabled and strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return unwrap(model).state_dict()


def load_full_state(model: nn.Module, optimizer: torch.optim.Optimizer, model_state, optimizer_state,
                    context: Context, strategy: str) -> None:
    if context.enabled and strategy == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=False)
        set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state, options=options)
        return
    unwrap(model).load_state_dict(model_state)
    optimizer.load_state_dict(optimizer_state)


def mean(value: float, context: Context, device: torch.device) -> float:
    """The mean of a per-process number over all processes."""
    if not context.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / context.world_size


def all_true(flag: bool, context: Context, device: torch.device) -> bool:
    """Whether `flag` holds in every process (a sync point: every process must call it)."""
    if not context.enabled:
        return flag
    t = torch.tensor([0.0 if flag else 1.0], device=device)
    dist.all_reduce(t)
    return float(t) == 0.0


def any_true(flag: bool, context: Context, device: torch.device) -> bool:
    """Whether `flag` holds in any process (a sync point: every process must call it)."""
    return not all_true(not flag, context, device)


def barrier(context: Context) -> None:
    if context.enabled:
        dist.barrier()
