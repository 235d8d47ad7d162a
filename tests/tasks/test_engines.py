"""EngineCache and its per-job leases on real weights: warnings per job, device faults, the device probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tasks.engines
from models import DeviceError, DeviceLost, UpscalerConfig, WeightStore
from models.runtime import TorchRuntime
from tasks import EngineCache
from tests.models.faults import ILLEGAL_ACCESS, FaultAt, OomAbove

MODEL = "realesr-animevideov3"
CONFIG = UpscalerConfig(MODEL, 4, "cpu", tile=16)
OTHER = UpscalerConfig(MODEL, 2, "cpu")


@pytest.fixture
def engines(real_store: WeightStore) -> EngineCache:
    return EngineCache(real_store, size=2)


def _frames(height: int = 40, width: int = 40) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)


def test_a_device_fault_drops_every_engine_on_the_device(engines: EngineCache) -> None:
    other = engines.get(OTHER)
    lease = engines.lease(CONFIG)
    lease.engine.runtime = TorchRuntime(
        FaultAt(lease.engine.network, call=2, error=RuntimeError(ILLEGAL_ACCESS))
    )
    with pytest.raises(DeviceError) as info:
        lease(_frames())
    assert type(info.value) is DeviceError and info.value.retryable and ILLEGAL_ACCESS in str(info.value)
    fresh = engines.get(CONFIG)
    assert fresh is not lease.engine and engines.get(OTHER) is not other
    assert fresh(_frames()).shape == (1, 160, 160, 3)


def test_a_device_that_stays_broken_is_lost(engines: EngineCache, monkeypatch: pytest.MonkeyPatch) -> None:
    probed: list[torch.device] = []

    def broken(device: torch.device) -> bool:
        probed.append(device)
        return False

    monkeypatch.setattr(tasks.engines, "device_works", broken)
    lease = engines.lease(CONFIG)
    lease.engine.runtime = TorchRuntime(
        FaultAt(lease.engine.network, call=1, error=RuntimeError(ILLEGAL_ACCESS))
    )
    with pytest.raises(DeviceLost) as info:
        lease(_frames())
    assert (info.value.code, info.value.retryable) == ("DEVICE_LOST", True)
    assert isinstance(info.value, DeviceError) and type(info.value.__cause__) is DeviceError
    assert probed == [lease.device] and engines.get(CONFIG) is not lease.engine


def test_an_error_that_is_no_device_fault_keeps_the_engine(
    engines: EngineCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks.engines, "device_works", lambda device: pytest.fail("probed"))
    lease = engines.lease(CONFIG)
    lease.engine.runtime = TorchRuntime(
        FaultAt(lease.engine.network, call=1, error=RuntimeError("shape mismatch"))
    )
    with pytest.raises(RuntimeError, match="shape mismatch"):
        lease(_frames())
    assert engines.get(CONFIG) is lease.engine


def test_run_time_warnings_belong_to_the_job_load_time_ones_to_every_job(engines: EngineCache) -> None:
    """Two jobs on one cached engine; the first runs out of memory, the second is not told of it."""
    device = "cpu" if torch.cuda.is_available() else "gpu"  # without CUDA: a load-time warning
    config = UpscalerConfig(MODEL, 4, device, tile=0)
    first = engines.lease(config)
    loaded = first.engine.info.warnings
    engine = first.engine
    engine.runtime = TorchRuntime(OomAbove(engine.network, limit=128 + first.engine.pad))
    first(_frames(90, 160))
    second = engines.lease(config)
    second(_frames(90, 160))
    assert second.engine is first.engine
    assert first.warnings == (*loaded, "out of memory at tile 160; continued at tile 128")
    assert second.warnings == loaded
    if device == "gpu":
        assert "CUDA is not available" in loaded[0]
