"""Shared fixtures: the real weights mirror and a CPU upscaler on real weights."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models import Upscaler, UpscalerConfig, WeightStore
from models.registry import MODELS
from tests.clips import make_clip

ROOT = Path(__file__).resolve().parent.parent
# Converted models (OpenVINO IR) for every test and the workers they start, kept between runs.
os.environ.setdefault("WORKER_RUNTIME_CACHE", str(ROOT / ".pytest_cache" / "runtime"))


def mirror_dir() -> Path:
    configured = os.environ.get("WEIGHTS_MIRROR")
    return Path(configured) if configured else ROOT.parent / "shared" / "weights"


@pytest.fixture(scope="session")
def real_store() -> WeightStore:
    """Weights from weights/ or the mirror; never the network."""
    store = WeightStore(ROOT / "weights", mirror_dir(), allow_download=False)
    if store.find(MODELS.get("realesr-animevideov3")) is None:
        pytest.fail("realesr-animevideov3 weights missing: run `make setup` (or set WEIGHTS_MIRROR)")
    return store


@pytest.fixture(scope="session")
def anime(real_store: WeightStore) -> Upscaler:
    """realesr-animevideov3 on the CPU at x4, whole frames (tile 512)."""
    return Upscaler.create(UpscalerConfig(model="realesr-animevideov3", scale=4, device="cpu"), real_store)


class Clips:
    """Generated clips by name, made once per test session (see tests/clips.py)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._made: dict[str, Path] = {}

    def __call__(self, name: str) -> Path:
        if name not in self._made:
            self._made[name] = make_clip(name, self.directory)
        return self._made[name]


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    return Clips(tmp_path_factory.mktemp("clips"))
