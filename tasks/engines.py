"""Loaded upscalers kept between jobs: loading and the fp16 probe cost seconds."""

from __future__ import annotations

import threading

from models import Upscaler, UpscalerConfig, WeightStore


class EngineCache:
    """The most recently used :class:`Upscaler`\\ s, keyed by their config.

    ``size`` engines are kept (one by default: on a GPU each holds weights and
    workspace in device memory). Thread-safe; an engine is used by one job at a time.
    """

    def __init__(self, store: WeightStore, size: int = 1) -> None:
        self.store = store
        self.size = max(1, size)
        self._engines: dict[UpscalerConfig, Upscaler] = {}
        self._lock = threading.Lock()

    def get(self, config: UpscalerConfig) -> Upscaler:
        with self._lock:
            engine = self._engines.pop(config, None)
            if engine is None:
                while len(self._engines) >= self.size:
                    self._engines.pop(next(iter(self._engines)))
                engine = Upscaler.create(config, self.store)
            self._engines[config] = engine  # most recent last
            return engine
