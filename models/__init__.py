"""Real-ESRGAN models: registry, weights, loading and tiled inference.

Public surface: :class:`Upscaler` (frames in, frames out), :data:`MODELS`
(the registry), :class:`WeightStore` (find / download / verify weights) and the
errors in :mod:`models.errors` (:class:`DeviceLost`: this process's GPU is
broken; release the job and restart). Nothing here knows about queues, S3 or HTTP.
"""

from models.errors import (
    DeviceError,
    DeviceLost,
    InferenceFailed,
    ModelError,
    OutOfMemory,
    UnknownModel,
    UnsupportedScale,
    WeightsInvalid,
    WeightsUnavailable,
)
from models.registry import DEFAULT_MODEL, MODELS, ModelSpec
from models.upscaler import Upscaler, UpscalerConfig
from models.weights import WeightStore

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "DeviceError",
    "DeviceLost",
    "InferenceFailed",
    "ModelError",
    "ModelSpec",
    "OutOfMemory",
    "UnknownModel",
    "UnsupportedScale",
    "Upscaler",
    "UpscalerConfig",
    "WeightStore",
    "WeightsInvalid",
    "WeightsUnavailable",
]
