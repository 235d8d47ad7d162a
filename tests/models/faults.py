"""Networks that fail like a GPU does, wrapped around a real one (no GPU needed)."""

from __future__ import annotations

from collections.abc import Callable

import torch

ILLEGAL_ACCESS = "CUDA error: an illegal memory access was encountered"
"""What torch raises after a kernel touched memory it should not: a sticky fault."""

Network = Callable[[torch.Tensor], torch.Tensor]


class OomAbove:
    """Wraps a network; raises the CUDA OOM error for windows larger than ``limit`` pixels a side."""

    def __init__(self, network: Network, limit: int) -> None:
        self.network = network
        self.limit = limit
        self.calls = 0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if max(batch.shape[2:]) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.network(batch)


class FaultAt:
    """Wraps a network; its ``call``-th call (1-based) raises ``error``, the others run."""

    def __init__(self, network: Network, call: int, error: Exception) -> None:
        self.network = network
        self.call = call
        self.error = error
        self.calls = 0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.call:
            raise self.error
        return self.network(batch)
