"""One code path for one process or many: ``torchrun`` + DistributedDataParallel.

``torchrun --nproc_per_node N -m loce train CONFIG`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` reads them and starts the process group with NCCL on
CUDA and gloo on the CPU. Without those variables everything runs in one process and the
helpers below degrade to no-ops.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_object",
    "average_batchnorm_statistics",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "exit_now",
    "gather_files",
    "is_peer_failure",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "select_device",
]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def select_device(name: str) -> torch.device:
    """``"auto"``, ``"cpu"`` or ``"cuda"`` → this process's device (its local GPU under torchrun)."""
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            from loce.errors import ConfigError

            raise ConfigError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def init_distributed(device: torch.device) -> bool:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1). Returns whether it did."""
    if is_distributed():
        return True
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return True


def cleanup_distributed() -> None:
    if is_distributed():
        dist.destroy_process_group()


def exit_now(message: str | None, status: int) -> None:
    """End this process at once with ``status``, printing ``message`` (when given) last.

    For a rank of a multi-process run that cannot go on: the other ranks are blocked in a
    collective that fails as soon as this process is gone, so they stop within moments
    instead of waiting for the process-group timeout. Under torchrun the message is also
    written to the rank's error file, so torchrun's failure summary (printed last) ends with
    it. Nothing is cleaned up: tearing down the process group would wait for the peers.
    """
    import sys
    import time

    from loce.errors import LoceError
    from loce.fileio import atomic_write_json

    if message is not None:
        print(message, file=sys.stderr, flush=True)
        error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
        if error_file:
            try:
                atomic_write_json(error_file, {"message": message,
                                               "timestamp": int(time.time())},
                                  what="torchrun error file")
            except LoceError:
                pass
    sys.stdout.flush()
    os._exit(status)


def is_peer_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because another rank of the run has exited."""
    dist_error = getattr(dist, "DistError", ())
    text = str(err)
    return isinstance(err, dist_error) or (isinstance(err, RuntimeError) and any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer",
                            "Broken pipe", "NCCL communicator was aborted")))


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (just ``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _collective_device() -> torch.device:
    """Where tensors for the process group's point-to-point calls must be: NCCL moves CUDA
    tensors only, gloo CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_files(path: str | os.PathLike, received: Callable[[int], Path], *,
                 what: str = "file", chunk_bytes: int = 1 << 24) -> list[Path]:
    """Bring every rank's file ``path`` to rank 0 over the process group (every rank calls).

    Nothing assumes that the ranks share a disk: each rank ``r > 0`` sends its file to rank 0
    in blocks of ``chunk_bytes`` (through the GPU under NCCL), and rank 0 writes it, atomically,
    to ``received(r)``. Ranks send one after the other, so rank 0 holds one block at a time
    whatever the files' sizes. ``received(r)`` must not be the path of rank ``r``'s own file:
    on a shared disk that is the file being sent.

    Args:
        path: this rank's file.
        received: where rank 0 puts rank ``r``'s copy.
        what: what the files are, for error messages.
        chunk_bytes: block size.

    Returns:
        On rank 0, the files in rank order: its own ``path``, then ``received(1)``, ...; on
        other ranks an empty list. In one process, ``[path]``.

    Raises:
        FileWriteError: rank 0 cannot write a copy (the other ranks have sent theirs by then).
    """
    from loce.fileio import atomic_write

    path = Path(path)
    if not is_distributed():
        return [path]
    rank, world = get_rank(), get_world_size()
    sizes = all_gather_object(path.stat().st_size)
    device = _collective_device()
    out = [path] if rank == 0 else []
    for src in range(1, world):
        if rank == src:
            with path.open("rb") as f:
                for _ in range(0, sizes[src], chunk_bytes):
                    block = f.read(chunk_bytes)
                    dist.send(torch.frombuffer(bytearray(block), dtype=torch.uint8).to(device),
                              dst=0)
        elif rank == 0:
            buffer = torch.empty(min(chunk_bytes, sizes[src]), dtype=torch.uint8, device=device)
            with atomic_write(received(src), "wb", what=what) as f:
                for start in range(0, sizes[src], chunk_bytes):
                    block = buffer[: min(chunk_bytes, sizes[src] - start)]
                    dist.recv(block, src=src)
                    f.write(block.cpu().numpy().tobytes())
            out.append(received(src))
    return out


def average_batchnorm_statistics(model: torch.nn.Module) -> int:
    """Average BatchNorm running means and variances over ranks; returns how many layers.

    Models with ordinary (batch-statistics) BatchNorm — the synthetic presets train from
    scratch with it — are wrapped with ``broadcast_buffers=False`` so that method state is
    never overwritten by rank 0; their running statistics therefore drift apart across
    ranks. The training loop calls this before every checkpoint and evaluation so that the
    saved and evaluated model is the same on every rank. (SyncBatchNorm would also sync the
    batch statistics, but it runs on CUDA only.)
    """
    if not is_distributed():
        return 0
    world = get_world_size()
    count = 0
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats \
                and module.running_mean is not None:
            for buf in (module.running_mean, module.running_var):
                dist.all_reduce(buf)
                buf.div_(world)
            count += 1
    return count
