"""Loaded upscalers kept between jobs (loading and the fp16 probe cost seconds), lent one job at a time."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

import numpy as np
import torch

from models import DeviceError, DeviceLost, ModelSpec, Upscaler, UpscalerConfig, WeightStore
from models.device import device_works, free_cached_memory
from models.reuse import ReuseState

log = logging.getLogger(__name__)


class EngineCache:
    """The most recently used :class:`Upscaler`\\ s, keyed by their config.

    ``size`` engines are kept (one by default: on a GPU each holds weights and
    workspace in device memory). Thread-safe; an engine is used by one job at a
    time. A job takes its engine with :meth:`lease`. ``runtime`` (``WORKER_RUNTIME``)
    is what every engine runs on; ``reuse`` turns lossless temporal reuse on.
    """

    def __init__(
        self, store: WeightStore, size: int = 1, *, runtime: str = "auto", reuse: bool = True
    ) -> None:
        self.store = store
        self.size = max(1, size)
        self.runtime = runtime
        self.reuse = reuse
        self._engines: dict[UpscalerConfig, Upscaler] = {}
        self._lock = threading.Lock()

    def get(self, config: UpscalerConfig) -> Upscaler:
        config = replace(config, runtime=self.runtime)
        with self._lock:
            engine = self._engines.pop(config, None)
            if engine is None:
                while len(self._engines) >= self.size:
                    self._engines.pop(next(iter(self._engines)))
                engine = Upscaler.create(config, self.store)
            self._engines[config] = engine  # most recent last
            return engine

    def lease(self, config: UpscalerConfig) -> EngineLease:
        """The engine for ``config``, wrapped for one job (its warnings, reuse, device-fault handling)."""
        return EngineLease(self, self.get(config), ReuseState() if self.reuse else None)

    def drop_device(self, device: torch.device) -> None:
        """Forget every engine on ``device`` and free the device's cached memory.

        After a device fault none of them can be trusted: the next :meth:`get`
        loads a fresh engine. A job still holding one keeps it alive until it ends.
        """
        with self._lock:
            dropped = [config for config, engine in self._engines.items() if engine.device == device]
            for config in dropped:
                del self._engines[config]
        log.warning("dropped %d cached engine(s) on %s after a device fault", len(dropped), device)
        free_cached_memory(device)


class EngineLease:
    """One job's use of a cached engine: the engine's calls plus this job's state.

    Calls take the job's frames (the :class:`Upscaler` call contract), in order:
    the lease keeps the job's previous frame for reuse (``reuse``, None: every
    frame computed) and collects the job's run-time warnings; :attr:`warnings`
    adds the engine's load-time ones. On a :class:`DeviceError` every cached engine on the device is dropped
    and the device is probed: if it still computes the DeviceError propagates
    (the job may be retried; the next job loads a fresh engine), if not
    :class:`DeviceLost` is raised in its place (the process must restart).
    """

    def __init__(self, cache: EngineCache, engine: Upscaler, reuse: ReuseState | None = None) -> None:
        self.cache = cache
        self.engine = engine
        self.reuse = reuse
        self._warnings: list[str] = []

    @property
    def device(self) -> torch.device:
        return self.engine.device

    @property
    def spec(self) -> ModelSpec:
        return self.engine.spec

    def frames_per_call(self, height: int, width: int) -> int:
        return self.engine.frames_per_call(height, width)

    @property
    def runtime(self) -> str:
        return self.engine.runtime.name

    @property
    def warnings(self) -> tuple[str, ...]:
        """The engine's load-time warnings, then this job's run-time ones, in order."""
        return (*self.engine.info.warnings, *self._warnings)

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        try:
            return self.engine(frames, self._warnings, self.reuse)
        except DeviceError as error:
            self.cache.drop_device(self.device)
            if not device_works(self.device):
                raise DeviceLost(f"{self.device} still fails after dropping its engines: {error}") from error
            raise
