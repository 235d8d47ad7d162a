"""Errors raised by the model engine.

Each carries a stable ``code`` (the ``errorCode`` of a failure callback) and
whether retrying the job elsewhere or later could help (``retryable``).
"""

from __future__ import annotations

from errors import ErrorCode, VidworkerError


class ModelError(VidworkerError):
    """Base of every error raised by :mod:`models`."""

    code = ErrorCode.MODEL_ERROR
    retryable = False


class UnknownModel(ModelError):
    """The job names a model that is not in the registry."""

    code = ErrorCode.INPUT_INVALID


class UnsupportedScale(ModelError):
    """The requested output scale cannot be produced by the chosen model."""

    code = ErrorCode.INPUT_INVALID


class WeightsUnavailable(ModelError):
    """No weights file could be found, taken from the mirror or downloaded."""

    code = ErrorCode.MODEL_UNAVAILABLE
    retryable = True


class WeightsInvalid(ModelError):
    """A weights file exists but fails its checksum or does not load as the model."""

    code = ErrorCode.WEIGHTS_INVALID


class OutOfMemory(ModelError):
    """Inference ran out of memory even at the smallest tile size."""

    code = ErrorCode.OUT_OF_MEMORY
    retryable = True


class InferenceFailed(ModelError):
    """The network raised or produced unusable output (NaN) for a frame."""

    code = ErrorCode.INFERENCE_FAILED


class DeviceError(ModelError):
    """The accelerator faulted during a call (CUDA, cuDNN, cuBLAS or driver error), not out of memory.

    Transient as far as the job goes: another attempt, on a fresh engine or
    another host, may well succeed. The engine that raised it must not be used
    again (a fault can leave its tensors or the CUDA context corrupt);
    :class:`tasks.EngineCache` forgets every engine on that device.
    """

    code = ErrorCode.DEVICE_ERROR
    retryable = True


class DeviceLost(DeviceError):
    """The device still fails a trivial computation after a :class:`DeviceError`.

    Contract for the worker: the CUDA context of this process is broken for good
    (a sticky fault such as an illegal memory access poisons it until the
    process exits), so every later job here would fail too. Settle the job as
    any retryable failure (release its message: the job is not at fault), take
    no further job, and exit with a dedicated exit code so that the service
    manager restarts the process, which gets a fresh context.
    """

    code = ErrorCode.DEVICE_LOST
