"""Runtimes: OpenVINO against torch on the real weights, its disk cache, and falling back to torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import Upscaler, UpscalerConfig, WeightStore
from models.runtime import OpenVinoRuntime, TorchRuntime, choose_runtime, describe
from models.weights import sha256_of
from tests.conftest import ROOT, mirror_dir
from tests.models.rrdb_weights import write_rrdbnet

ONE_STEP = 1  # 1/255: what a runtime may change, at the same tiling and precision


def _frames(count: int, height: int, width: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 200
    return np.stack([np.clip(base + rng.normal(0, 20, base.shape), 0, 255) for _ in range(count)]).astype(
        np.uint8
    )


def _engine(store: WeightStore, runtime: str, **config: object) -> Upscaler:
    settings = {"model": "realesr-animevideov3", "scale": 4, "device": "cpu", **config}
    return Upscaler.create(UpscalerConfig(runtime=runtime, **settings), store)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("scale", "tile"), [(4, 0), (2, 0), (4, 32)], ids=["x4-whole", "x2-whole", "x4-tile32"]
)
def test_openvino_matches_torch_within_one_step(real_store: WeightStore, scale: int, tile: int) -> None:
    frames = _frames(3, 45, 70)
    ours = _engine(real_store, "openvino", scale=scale, tile=tile)
    reference = _engine(real_store, "torch", scale=scale, tile=tile)
    assert (ours.info.runtime, reference.info.runtime) == ("openvino", "torch")
    assert ours.info.warnings == () and (ours.frames_per_call(45, 70), ours.frames_per_call(1080, 1920)) == (
        24,
        2,
    )
    assert reference.frames_per_call(1080, 1920) == 1
    got, want = ours(frames), reference(frames)
    assert got.shape == want.shape == (3, 45 * scale, 70 * scale, 3)
    assert int(np.abs(got.astype(np.int16) - want).max()) <= ONE_STEP


def test_auto_is_openvino_on_the_cpu(real_store: WeightStore) -> None:
    assert _engine(real_store, "auto").info.runtime == "openvino"
    assert describe("auto", "cpu").startswith("auto -> openvino ")
    assert describe("auto", "cuda").startswith("auto -> torch ")


def test_rrdbnet_converts_and_matches_torch(tmp_path: Path) -> None:
    write_rrdbnet(tmp_path / "RealESRGAN_x4plus.pth", scale=4, seed=5)
    (tmp_path / "SHA256SUMS").write_text(
        f"{sha256_of(tmp_path / 'RealESRGAN_x4plus.pth')}  RealESRGAN_x4plus.pth\n"
    )
    store = WeightStore(tmp_path / "empty", tmp_path, allow_download=False)
    frames = _frames(2, 12, 16)
    ours = _engine(store, "openvino", model="realesrgan-x4plus")
    reference = _engine(store, "torch", model="realesrgan-x4plus")
    assert ours.info.runtime == "openvino"
    assert int(np.abs(ours(frames).astype(np.int16) - reference(frames)).max()) <= ONE_STEP


def test_the_converted_model_is_cached_on_disk_and_read_back(
    real_store: WeightStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKER_RUNTIME_CACHE", str(tmp_path))
    first = _engine(real_store, "openvino")
    cached = sorted(path.name for path in tmp_path.glob("*.xml"))
    sha = real_store.resolve(first.spec).sha256
    assert len(cached) == 1 and cached[0].startswith(f"realesr-animevideov3-{sha[:16]}-ov")
    assert (tmp_path / cached[0]).with_suffix(".bin").stat().st_size > 1_000_000  # fp32 weights, not fp16

    import openvino as ov

    def no_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted again although the IR was cached")

    monkeypatch.setattr(ov, "convert_model", no_conversion)
    second = _engine(real_store, "openvino")
    assert second.info.runtime == "openvino"
    frames = _frames(1, 20, 24)
    assert np.array_equal(first(frames), second(frames))


FROM_CACHE = """
import sys
import numpy as np
from models import Upscaler, UpscalerConfig
from models.__main__ import store_from_env
engine = Upscaler.create(UpscalerConfig("realesr-animevideov3", scale=2, device="cpu"), store_from_env())
out = engine(np.full((16, 16, 3), 128, np.uint8))
print(engine.info.runtime, out.shape, [name for name in ("spandrel", "torch._dynamo") if name in sys.modules])
"""


def test_an_engine_served_from_the_cache_never_builds_the_torch_module(
    real_store: WeightStore, tmp_path: Path
) -> None:
    """Nor imports spandrel, whose architectures pull torchvision and torch._dynamo (~2 s of start-up)."""
    env = {**os.environ, "WORKER_RUNTIME_CACHE": str(tmp_path), "WEIGHTS_MIRROR": str(mirror_dir())}

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", FROM_CACHE], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run().startswith("openvino (32, 32, 3) ['spandrel'")  # converted: the module was needed
    assert run() == "openvino (32, 32, 3) []"  # read back: never built


def test_an_unwritable_cache_still_runs(
    real_store: WeightStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("WORKER_RUNTIME_CACHE", str(blocker / "cache"))
    engine = _engine(real_store, "openvino")
    assert engine.info.runtime == "openvino" and engine(_frames(1, 16, 16)).shape == (1, 64, 64, 3)


def test_a_model_openvino_cannot_load_runs_on_torch(
    real_store: WeightStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> OpenVinoRuntime:
        raise RuntimeError("Cannot create Interpolate layer")

    monkeypatch.setattr(OpenVinoRuntime, "load", refuse)
    asked = _engine(real_store, "openvino")
    assert asked.info.runtime == "torch"
    assert asked.info.warnings == (
        "OpenVINO unavailable (RuntimeError: Cannot create Interpolate layer); running torch",
    )
    automatic = _engine(real_store, "auto")  # auto asked for nothing in particular: no warning
    assert automatic.info.runtime == "torch" and automatic.info.warnings == ()
    assert automatic(_frames(1, 16, 16)).shape == (1, 64, 64, 3)


def test_openvino_on_a_gpu_device_is_torch_with_a_warning() -> None:
    def network() -> torch.nn.Module:
        return torch.nn.Identity()

    runtime, warnings = choose_runtime(
        "openvino", network, torch.device("cuda"), key="k", cache=None, threads=None
    )
    assert isinstance(runtime, TorchRuntime)
    assert warnings == ["runtime openvino runs on the CPU only; running torch on cuda"]
    runtime, warnings = choose_runtime(
        "auto", network, torch.device("cuda"), key="k", cache=None, threads=None
    )
    assert isinstance(runtime, TorchRuntime) and warnings == []
    with pytest.raises(ValueError, match="runtime must be one of auto, torch, openvino"):
        choose_runtime("tensorrt", network, torch.device("cpu"), key="k", cache=None, threads=None)
