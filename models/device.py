"""Device choice, CPU tuning, the fp16 sanity probe, and telling device faults and health."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_HEAP_KEEP_BYTES = 1 << 30

DEVICE_FAULT_MARKERS = (
    "cuda error",
    "cuda driver",
    "cublas_status",
    "cudnn error",
    "cudnn_status",
    "nccl error",
    "device-side assert",
    "illegal memory access",
    "unspecified launch failure",
    "misaligned address",
    "uncorrectable ecc error",
)
"""Lower-case fragments of the messages torch gives CUDA, cuBLAS, cuDNN, NCCL and driver faults."""


@dataclass(frozen=True)
class DeviceDefaults:
    """Per-device inference defaults. ``tile`` and ``pad`` are input pixels."""

    tile: int
    pad: int
    batch_size: int
    half: bool


# Seed guide: GPU tile 256 / pad 10 / fp16, CPU tile 128 / pad 5 / fp32. Those are
# minimums. On CPU the overlap re-computed around small tiles costs more than the
# cache gain (180x320, animevideov3: tile 128 with an exact 18 px overlap does
# 1.9x the work of the whole frame), so the CPU tile is 512: whole frames up to
# 512 px, bounded memory above. The pad is raised to the model's reach anyway.
DEFAULTS = {
    "cuda": DeviceDefaults(tile=256, pad=10, batch_size=4, half=True),
    "cpu": DeviceDefaults(tile=512, pad=5, batch_size=1, half=False),
}


def select_device(requested: str) -> tuple[torch.device, list[str]]:
    """Map ``auto`` / ``gpu`` / ``cuda`` / ``cpu`` to a torch device, with warnings.

    A GPU request on a host without CUDA falls back to the CPU and says so.
    """
    choice = requested.strip().lower()
    if choice not in {"auto", "gpu", "cuda", "cpu"}:
        raise ValueError(f"device must be auto, gpu or cpu, not {requested!r}")
    if choice == "cpu":
        return torch.device("cpu"), []
    if torch.cuda.is_available():
        return torch.device("cuda"), []
    if choice == "auto":
        return torch.device("cpu"), []
    return torch.device("cpu"), ["GPU requested but CUDA is not available; running on CPU (fp32)"]


def usable_cpus() -> int:
    """Cores this process may run on (cgroup/affinity aware where the OS says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def tune_cpu(threads: int | None) -> None:
    """Use every usable core for torch ops and keep large freed buffers in the heap.

    glibc returns big blocks to the OS with munmap on free, so each frame's
    activations are page-faulted in anew (measured: ~38k faults and 0.13 s of
    system time per 180x320 frame). Raising the mmap and trim thresholds to
    1 GiB keeps them for reuse; the process holds its peak instead.
    """
    torch.set_num_threads(threads or usable_cpus())
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:  # pragma: no cover - not glibc
        return
    libc = ctypes.CDLL(libc_name)
    if hasattr(libc, "mallopt"):
        libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_KEEP_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, _HEAP_KEEP_BYTES)


def half_output_ok(output: torch.Tensor) -> bool:
    """True when an fp16 probe output is finite and not all black (values 0-1)."""
    values = output.float()
    return bool(torch.isfinite(values).all()) and float(values.amax()) > 1.0 / 255.0


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA OOM, or the CPU allocator failing to allocate."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    message = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in message or "can't allocate memory" in message
    )


def is_device_fault(exc: BaseException) -> bool:
    """A CUDA / cuDNN / cuBLAS / NCCL / driver fault that is not out-of-memory (check that first)."""
    if isinstance(exc, torch.AcceleratorError):
        return True
    message = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(marker in message for marker in DEVICE_FAULT_MARKERS)


def free_cached_memory(device: torch.device) -> None:
    """Hand the CUDA caching allocator's unused blocks back to the driver; never raises.

    After a device fault the call may itself fail (the context is broken); that is
    logged and left to :func:`device_works` to judge.
    """
    if device.type != "cuda":
        return
    try:
        torch.cuda.empty_cache()
    except Exception as error:
        log.warning("emptying the CUDA cache failed: %s", error)


def device_works(device: torch.device) -> bool:
    """True when a tiny computation on ``device`` completes with the right result.

    Synchronizes, so an asynchronous fault still pending on the device shows here.
    A CUDA context broken by a sticky fault (illegal memory access, device-side
    assert) fails every call, this one included, until the process exits.
    """
    try:
        total = torch.ones(8, device=device).add_(1.0).sum()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return float(total.item()) == 16.0
    except Exception as error:
        log.error("%s fails a trivial computation: %s", device, error)
        return False
