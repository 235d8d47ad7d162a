"""The models vidworker can run, as frozen entries in one registry.

Sizes and sha256 values are those of the official Real-ESRGAN release files.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from models.errors import UnknownModel

_RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download"


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable Real-ESRGAN model.

    ``arch`` is the spandrel architecture id the file must load as; ``scale`` is
    the network's native upscale factor. ``reach`` is the receptive-field radius
    in input pixels: with a tile overlap of at least ``reach`` a tiled frame
    equals the whole-frame result, so tiles are simply cropped. ``None`` means
    the field is too large to cover (RRDBNet); tiles are then feather-blended.
    """

    name: str
    filename: str
    url: str
    size: int
    sha256: str
    arch: str
    scale: int
    reach: int | None
    description: str
    cpu_cost: float
    """Seconds per input megapixel of one frame on the CPU (``bench/models.py``: 2 threads of the
    AVX-512 box, fp32): the planner's estimate until a worker has measured its own."""
    multiple: int = 1
    """The network's input height and width must be multiples of this (RRDBNet x2 unshuffles by 2 twice):
    known here so an engine served from a converted model never loads the torch module to learn it."""


class ModelRegistry:
    """Name → :class:`ModelSpec`. Names are matched case-insensitively."""

    def __init__(self) -> None:
        self._specs: dict[str, ModelSpec] = {}

    def add(self, spec: ModelSpec) -> None:
        key = spec.name.lower()
        if key in self._specs:
            raise ValueError(f"model {spec.name!r} is already registered")
        self._specs[key] = spec

    def get(self, name: str) -> ModelSpec:
        spec = self._specs.get(name.strip().lower())
        if spec is None:
            known = ", ".join(self.names())
            raise UnknownModel(f"unknown model {name!r}; known models: {known}")
        return spec

    def names(self) -> list[str]:
        return [spec.name for spec in self._specs.values()]

    def __iter__(self) -> Iterator[ModelSpec]:
        return iter(list(self._specs.values()))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self._specs


MODELS = ModelRegistry()
MODELS.add(
    ModelSpec(
        name="realesrgan-x4plus",
        filename="RealESRGAN_x4plus.pth",
        url=f"{_RELEASES}/v0.1.0/RealESRGAN_x4plus.pth",
        size=67_040_989,
        sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
        arch="ESRGAN",
        scale=4,
        reach=None,
        description="RRDBNet, 23 blocks: general photos, best quality, slowest",
        cpu_cost=130.0,
    )
)
MODELS.add(
    ModelSpec(
        name="realesrgan-x2plus",
        filename="RealESRGAN_x2plus.pth",
        url=f"{_RELEASES}/v0.2.1/RealESRGAN_x2plus.pth",
        size=67_061_725,
        sha256="49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        arch="ESRGAN",
        scale=2,
        reach=None,
        description="RRDBNet, 23 blocks, native 2x",
        cpu_cost=33.0,  # 0.26 x x4plus's, measured on the AMD EPYC box (the Intel box did not time it)
        multiple=4,
    )
)
MODELS.add(
    ModelSpec(
        name="realesr-animevideov3",
        filename="realesr-animevideov3.pth",
        url=f"{_RELEASES}/v0.2.5.0/realesr-animevideov3.pth",
        size=2_504_012,
        sha256="b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d",
        arch="Compact",
        scale=4,
        reach=18,
        description="SRVGGNetCompact (16 convs): anime and video, fast",
        cpu_cost=3.8,
    )
)
MODELS.add(
    ModelSpec(
        name="realesr-general-x4v3",
        filename="realesr-general-x4v3.pth",
        url=f"{_RELEASES}/v0.2.5.0/realesr-general-x4v3.pth",
        size=4_885_111,
        sha256="8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
        arch="Compact",
        scale=4,
        reach=34,
        description="SRVGGNetCompact (32 convs): general scenes, fast",
        cpu_cost=7.3,
    )
)

DEFAULT_MODEL = "realesrgan-x4plus"
