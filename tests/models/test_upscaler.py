"""The engine on real weights (animevideov3) and on official-layout RRDBNet files."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data as samples

from models import (
    DeviceError,
    InferenceFailed,
    OutOfMemory,
    UnsupportedScale,
    Upscaler,
    UpscalerConfig,
    WeightStore,
)
from models.device import device_works, half_output_ok, is_device_fault, is_out_of_memory, select_device
from models.runtime import TorchRuntime
from models.weights import sha256_of
from tests.models.faults import ILLEGAL_ACCESS, FaultAt, OomAbove
from tests.models.rrdb_weights import write_rrdbnet

ONE_STEP = 1  # 1/255: the tolerance for tiled vs whole-frame output


def _frames(count: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with texture: natural-ish content for a tiny clip."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for index in range(count):
        base = np.stack([x / width, y / height, (x + y + index) / (width + height)], axis=-1) * 200
        noise = cv2.GaussianBlur(rng.normal(0, 25, (height, width, 3)).astype(np.float32), (0, 0), 1.5)
        frames.append(np.clip(base + noise + 20, 0, 255).astype(np.uint8))
    return np.stack(frames)


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def test_output_shape_dtype_and_range(anime: Upscaler) -> None:
    frames = _frames(3, 36, 64)
    out = anime(frames)
    assert out.shape == (3, 144, 256, 3) and out.dtype == np.uint8
    assert out.min() >= 0 and out.max() <= 255 and out.std() > 10
    single = anime(frames[1])
    assert single.shape == (144, 256, 3)
    assert np.array_equal(single, out[1])  # batching never mixes frames up


def test_info_reports_cpu_fp32_and_an_exact_overlap(anime: Upscaler) -> None:
    info = anime.info
    assert (info.device, info.dtype, info.model_scale, info.scale) == ("cpu", "float32", 4, 4)
    assert info.pad >= 18 and info.blend == "crop"


@pytest.mark.parametrize(("tile", "size"), [(16, (36, 64)), (24, (33, 19)), (64, (100, 70))])
def test_tiled_output_equals_whole_frame(real_store: WeightStore, tile: int, size: tuple[int, int]) -> None:
    frames = _frames(2, *size, seed=tile)
    whole = Upscaler.create(UpscalerConfig("realesr-animevideov3", 4, "cpu", tile=0), real_store)(frames)
    tiled_engine = Upscaler.create(
        UpscalerConfig("realesr-animevideov3", 4, "cpu", tile=tile, batch_size=3), real_store
    )
    assert _max_diff(tiled_engine(frames), whole) <= ONE_STEP


def test_scale_two_from_a_x4_model_is_a_filtered_downscale(real_store: WeightStore, anime: Upscaler) -> None:
    frames = _frames(1, 36, 64)
    half = Upscaler.create(UpscalerConfig("realesr-animevideov3", 2, "cpu"), real_store)
    out2 = half(frames)
    assert out2.shape == (1, 72, 128, 3)
    area = cv2.resize(anime(frames)[0], (128, 72), interpolation=cv2.INTER_AREA)
    assert np.abs(out2[0].astype(int) - area).mean() < 3


def _sharpness(image: np.ndarray) -> float:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_on_a_photo_beats_nearest_and_is_sharper_than_bicubic(anime: Upscaler, name: str) -> None:
    """PSNR above nearest-neighbour, more detail than bicubic, on a 4x-downscaled photo.

    PSNR, not mean absolute error: the GAN-trained network invents texture, which
    the squared error forgives less than nearest's blocky edges (measured: on these
    photos the model's MAE is 3-10 % above nearest's while its MSE is 13-22 % below).
    """
    photo = getattr(samples, name)()
    height, width = photo.shape[0] // 4 * 4, photo.shape[1] // 4 * 4
    photo = photo[:height, :width]
    small = cv2.resize(photo, (width // 4, height // 4), interpolation=cv2.INTER_AREA)
    restored = anime(small)
    nearest = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    bicubic = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)

    def psnr(image: np.ndarray) -> float:
        mse = float(((image.astype(np.float64) - photo) ** 2).mean())
        return 10 * math.log10(255**2 / mse)

    assert psnr(restored) > psnr(nearest) + 0.5
    assert _sharpness(restored) > 1.2 * _sharpness(bicubic)


def test_out_of_memory_retries_the_same_frames_with_a_smaller_tile(real_store: WeightStore) -> None:
    frames = _frames(2, 90, 160)
    engine = Upscaler.create(UpscalerConfig("realesr-animevideov3", 4, "cpu", tile=0), real_store)
    whole = engine(frames)
    # windows across 160 px: 80 + pad at tile 128 (too big), at most 54 + 2 * pad at tile 64
    engine.runtime = TorchRuntime(OomAbove(engine.network, limit=54 + 2 * engine.pad))
    assert 80 + engine.pad > 54 + 2 * engine.pad
    warnings: list[str] = []
    out = engine(frames, warnings)
    # 160 (whole frame) -> 128 (windows still too big) -> 64
    assert engine.tile == 64 and engine.oom_retries == 2
    assert warnings == [
        "out of memory at tile 160; continued at tile 128",
        "out of memory at tile 128; continued at tile 64",
    ]
    assert out.shape == whole.shape
    assert _max_diff(out, whole) <= ONE_STEP


def test_out_of_memory_at_the_smallest_tile_raises(real_store: WeightStore) -> None:
    engine = Upscaler.create(UpscalerConfig("realesr-animevideov3", 4, "cpu", tile=0), real_store)
    engine.runtime = TorchRuntime(OomAbove(engine.network, limit=8))
    with pytest.raises(OutOfMemory, match="smallest tile") as info:
        engine(_frames(1, 90, 160))
    assert info.value.retryable


def test_nan_output_fails_instead_of_writing_a_frame(real_store: WeightStore) -> None:
    engine = Upscaler.create(UpscalerConfig("realesr-animevideov3", 4, "cpu"), real_store)
    engine.runtime = TorchRuntime(
        lambda batch: torch.full((batch.shape[0], 3, batch.shape[2] * 4, batch.shape[3] * 4), float("nan"))
    )
    with pytest.raises(InferenceFailed, match="NaN"):
        engine(_frames(1, 8, 8))


def test_run_time_warnings_go_to_the_call_that_raised_them(real_store: WeightStore) -> None:
    """The engine is shared by jobs: a shrunk tile stays, its warning goes to that call's list only."""
    engine = Upscaler.create(UpscalerConfig("realesr-animevideov3", 4, "cpu", tile=0), real_store)
    # the whole 160 px frame fails; 128 px tiles (at most 128 + pad across 160) fit
    engine.runtime = TorchRuntime(OomAbove(engine.network, limit=128 + engine.pad))
    first: list[str] = []
    second: list[str] = []
    engine(_frames(1, 90, 160), first)
    engine(_frames(1, 90, 160), second)
    engine(_frames(1, 90, 160))  # no list: logged only
    assert first == ["out of memory at tile 160; continued at tile 128"]
    assert second == [] and engine.tile == 128 and engine.oom_retries == 1
    assert engine.info.warnings == ()


def test_a_network_error_propagates_untouched(real_store: WeightStore) -> None:
    engine = Upscaler.create(UpscalerConfig("realesr-animevideov3", 4, "cpu", tile=8), real_store)

    def broken(batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("shape '[1, 3, 40, 40]' is invalid for input of size 4")

    engine.runtime = TorchRuntime(broken)
    with pytest.raises(RuntimeError, match="is invalid for input") as info:
        engine(_frames(1, 40, 40))
    assert type(info.value) is RuntimeError and engine.oom_retries == 0


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError(ILLEGAL_ACCESS),
        RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED"),
        RuntimeError("CUDA error: CUBLAS_STATUS_EXECUTION_FAILED when calling `cublasGemmEx(handle, ...)`"),
        torch.AcceleratorError("CUDA error: unspecified launch failure"),
    ],
    ids=["illegal-access", "cudnn", "cublas", "accelerator-error"],
)
def test_a_device_fault_is_a_retryable_device_error(real_store: WeightStore, error: Exception) -> None:
    engine = Upscaler.create(UpscalerConfig("realesr-animevideov3", 4, "cpu", tile=16), real_store)
    engine.runtime = TorchRuntime(FaultAt(engine.network, call=2, error=error))  # mid-frame, between tiles
    with pytest.raises(DeviceError) as info:
        engine(_frames(1, 40, 40))
    assert (info.value.code, info.value.retryable) == ("DEVICE_ERROR", True)
    assert info.value.__cause__ is error and str(error) in str(info.value)
    assert engine.oom_retries == 0


def test_bad_frames_are_refused(anime: Upscaler) -> None:
    with pytest.raises(ValueError, match="uint8"):
        anime(np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        anime(np.zeros((8, 8, 4), dtype=np.uint8))


def test_gpu_request_without_cuda_falls_back_to_cpu_with_a_warning(real_store: WeightStore) -> None:
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    device, warnings = select_device("gpu")
    assert device.type == "cpu" and "GPU requested but CUDA is not available" in warnings[0]
    engine = Upscaler.create(UpscalerConfig("realesr-animevideov3", 4, "gpu"), real_store)
    assert engine.info.device == "cpu" and engine.info.warnings == tuple(warnings)
    with pytest.raises(ValueError, match="device must be"):
        select_device("tpu")


def test_fp16_probe_and_oom_detection_rules() -> None:
    assert half_output_ok(torch.full((1, 3, 4, 4), 0.5, dtype=torch.float16))
    assert not half_output_ok(torch.zeros((1, 3, 4, 4), dtype=torch.float16))
    assert not half_output_ok(torch.full((1, 3, 4, 4), float("nan"), dtype=torch.float16))
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_device_fault_rules() -> None:
    assert is_device_fault(RuntimeError(ILLEGAL_ACCESS))
    assert is_device_fault(RuntimeError("CUDA error: device-side assert triggered"))
    assert is_device_fault(RuntimeError("CUDA driver error: unknown error"))
    assert is_device_fault(RuntimeError("NCCL error in: ProcessGroupNCCL.cpp:1, unhandled cuda error"))
    assert is_device_fault(torch.AcceleratorError("CUDA error: misaligned address"))
    assert not is_device_fault(RuntimeError("shape mismatch"))
    assert not is_device_fault(ValueError("CUDA error: not raised by torch"))
    assert not is_device_fault(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))


def test_device_probe() -> None:
    assert device_works(torch.device("cpu"))
    if not torch.cuda.is_available():
        assert not device_works(torch.device("cuda"))  # fails inside, reported as broken


@pytest.fixture(scope="module")
def rrdb_store(tmp_path_factory: pytest.TempPathFactory) -> WeightStore:
    """A mirror holding random x4plus and x2plus weights in the official layout."""
    mirror = tmp_path_factory.mktemp("rrdb-mirror")
    write_rrdbnet(mirror / "RealESRGAN_x4plus.pth", scale=4, seed=1)
    write_rrdbnet(mirror / "RealESRGAN_x2plus.pth", scale=2, seed=2)
    sums = [
        f"{sha256_of(mirror / name)}  {name}" for name in ("RealESRGAN_x4plus.pth", "RealESRGAN_x2plus.pth")
    ]
    (mirror / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    return WeightStore(mirror / "empty", mirror, allow_download=False)


@pytest.mark.parametrize(
    ("model", "scale", "size"),
    [
        ("realesrgan-x4plus", 4, (12, 16)),
        ("realesrgan-x4plus", 2, (12, 16)),
        ("realesrgan-x2plus", 2, (11, 17)),
    ],
)
def test_rrdbnet_models_load_and_run(
    rrdb_store: WeightStore, model: str, scale: int, size: tuple[int, int]
) -> None:
    engine = Upscaler.create(UpscalerConfig(model, scale, "cpu"), rrdb_store)
    assert engine.info.blend == "feather"
    out = engine(_frames(2, *size))
    assert out.shape == (2, size[0] * scale, size[1] * scale, 3) and out.dtype == np.uint8


def test_rrdbnet_tiles_are_feather_blended_without_seams(rrdb_store: WeightStore) -> None:
    frames = _frames(1, 24, 40)
    whole = Upscaler.create(UpscalerConfig("realesrgan-x2plus", 2, "cpu", tile=0), rrdb_store)(frames)
    tiled = Upscaler.create(UpscalerConfig("realesrgan-x2plus", 2, "cpu", tile=12, pad=8), rrdb_store)(frames)
    assert tiled.shape == whole.shape
    assert np.abs(tiled.astype(int) - whole).mean() < 2.0


def test_x2plus_cannot_make_scale_four(rrdb_store: WeightStore) -> None:
    with pytest.raises(UnsupportedScale, match="native x2 model; it can produce scale 2, not 4") as info:
        Upscaler.create(UpscalerConfig("realesrgan-x2plus", 4, "cpu"), rrdb_store)
    assert info.value.code == "INPUT_INVALID"


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        UpscalerConfig().scale = 2  # type: ignore[misc]


def test_weights_dir_is_not_written_by_loading(rrdb_store: WeightStore) -> None:
    Upscaler.create(UpscalerConfig("realesrgan-x4plus", 4, "cpu"), rrdb_store)
    assert not Path(rrdb_store.weights_dir).exists()
