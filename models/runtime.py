"""Runtimes: what executes the network. Same tensors in and out whichever one runs.

A :class:`Runtime` maps a list of same-shaped float batches ``(B, 3, h, w)`` in
0-1 to the network's raw outputs ``(B, 3, h*s, w*s)``. It may run several
batches at once (``in_flight``); the engine hands it as many as it has.

* ``torch``: the loaded module, eager, channels-last, one batch after another.
* ``openvino`` (CPU only): the module converted once by ``openvino.convert_model``,
  saved as IR under the cache directory keyed by the weights' sha256 and the
  OpenVINO version, compiled per input shape (OpenVINO's own model cache keeps
  the compiled blob on disk, keyed by shape and version too), f32 precision
  forced (an AVX-512 BF16/AMX CPU would otherwise pick bf16), THROUGHPUT hint
  with two asynchronous infer requests so two frames or tiles are in flight.
  Measured within 1/255 of torch fp32 (``tests/models/test_runtime.py``).

``WORKER_RUNTIME=auto`` takes OpenVINO on a CPU where it loads and torch
elsewhere; a runtime that cannot load a model falls back to torch with a
warning, never an error: a job is never refused for the runtime's sake.

The torch module comes from a :data:`ModuleSource`, called only when a path
needs it: torch runs it, or OpenVINO has no cached IR to read. An engine
served from the cache never builds it, nor imports spandrel (whose
architectures pull torchvision and ``torch._dynamo``: about 2 s of start-up).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from models.errors import ModelError

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "openvino")
"""Accepted values of ``WORKER_RUNTIME`` / ``UpscalerConfig.runtime``."""

OPENVINO_REQUESTS = 2
"""Asynchronous infer requests: two frames or tiles in flight (measured steadiest on 2 cores)."""

Network = Callable[[torch.Tensor], torch.Tensor]
ModuleSource = Callable[[], torch.nn.Module]
"""Builds (or returns the already built) torch module at its device and dtype; may raise ModelError."""


class Runtime(Protocol):
    name: str
    in_flight: int

    def map(self, batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The network's output for each batch, in order; batches of one call share a shape."""
        ...


class TorchRuntime:
    """The torch module itself (CPU fp32 or CUDA fp16/fp32), one batch at a time."""

    name = "torch"
    in_flight = 1

    def __init__(self, network: Network) -> None:
        self.network = network

    def map(self, batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [self.network(batch.contiguous(memory_format=torch.channels_last)) for batch in batches]


class OpenVinoRuntime:
    """The network as an OpenVINO CPU model: compiled per input shape, requests run asynchronously."""

    name = "openvino"
    in_flight = OPENVINO_REQUESTS

    def __init__(self, model: Any, core: Any, threads: int | None) -> None:
        self._model = model
        self._core = core
        self._threads = threads
        self._compiled: dict[tuple[int, ...], Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def load(cls, module: ModuleSource, key: str, cache: Path | None, threads: int | None) -> OpenVinoRuntime:
        """Read the cached IR named by ``key`` (model and weights' sha256), else convert ``module()``."""
        import openvino as ov

        core = ov.Core()
        version = ov.__version__.split("-")[0]
        cache = _usable(cache)
        ir = None if cache is None else cache / f"{key}-ov{version}.xml"
        if cache is not None:
            core.set_property({"CACHE_DIR": str(cache / "compiled")})
        if ir is not None and ir.is_file():
            model = core.read_model(ir)
        else:
            example = torch.zeros(1, 3, 64, 64)
            model = ov.convert_model(module(), example_input=example, input=[-1, 3, -1, -1])
            if ir is not None:
                _save_ir(ov, model, ir)
        runtime = cls(model, core, threads)
        runtime.requests((1, 3, 64, 64))  # fail here, at load, not in a job
        return runtime

    def requests(self, shape: tuple[int, ...]) -> Any:
        """The infer requests for one input shape, compiled and created on first use, then kept."""
        with self._lock:
            queue = self._compiled.get(shape)
            if queue is None:
                import openvino as ov

                model = self._model.clone()
                model.reshape({0: list(shape)})
                config: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"}
                if self._threads:
                    config["INFERENCE_NUM_THREADS"] = self._threads
                compiled = self._core.compile_model(model, "CPU", config)
                queue = ov.AsyncInferQueue(compiled, self.in_flight)
                self._compiled[shape] = queue
            return queue

    def map(self, batches: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if not batches:
            return []
        queue = self.requests(tuple(batches[0].shape))
        outputs: dict[int, torch.Tensor] = {}

        def done(request: Any, index: int) -> None:
            outputs[index] = torch.from_numpy(request.get_output_tensor(0).data.copy())

        queue.set_callback(done)
        inputs = [np.ascontiguousarray(batch.numpy()) for batch in batches]  # NCHW; alive until wait_all
        for index, array in enumerate(inputs):
            queue.start_async({0: array}, userdata=index, share_inputs=True)
        queue.wait_all()
        return [outputs[index] for index in range(len(batches))]


def _usable(cache: Path | None) -> Path | None:
    """``cache`` made ready for writing, or None (converted on every load) when it cannot be."""
    if cache is None:
        return None
    try:
        (cache / "compiled").mkdir(parents=True, exist_ok=True)
    except OSError as error:
        log.warning("no runtime cache (%s): the model is converted at every start", error)
        return None
    return cache


def _save_ir(ov: Any, model: Any, ir: Path) -> None:
    """Write the IR atomically (a reader never sees half a file); an unwritable cache is not an error."""
    try:
        partial = ir.with_name(f".{ir.stem}.{threading.get_ident()}.xml")
        ov.save_model(model, partial, compress_to_fp16=False)  # fp16 weights would change pixels
        partial.with_suffix(".bin").replace(ir.with_suffix(".bin"))
        partial.replace(ir)
    except OSError as error:
        log.warning("cannot cache the converted model in %s: %s", ir.parent, error)


def default_cache() -> Path:
    """Where converted models are kept: ``WORKER_RUNTIME_CACHE``, else the user's cache folder.

    Not the weights directory: loading a model never writes there (it may be a
    read-only image layer or a shared mirror).
    """
    configured = os.environ.get("WORKER_RUNTIME_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "vidworker" / "runtime"


def choose_runtime(
    requested: str,
    module: ModuleSource,
    device: torch.device,
    *,
    key: str,
    cache: Path | None,
    threads: int | None,
) -> tuple[Runtime, list[str]]:
    """The runtime ``requested`` names on ``device``, or torch with a warning when it cannot serve."""
    choice = requested.strip().lower()
    if choice not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, not {requested!r}")
    if choice == "torch" or (choice == "auto" and device.type != "cpu"):
        return TorchRuntime(module()), []
    if device.type != "cpu":
        warning = f"runtime {choice} runs on the CPU only; running torch on {device.type}"
        return TorchRuntime(module()), [warning]
    try:
        return OpenVinoRuntime.load(module, key, cache, threads), []
    except ModelError:  # the weights themselves do not load: no runtime can serve them
        raise
    except Exception as error:  # any failure to convert or compile: torch serves instead
        log.warning("OpenVINO cannot run this model (%s); using torch", error)
        said = f"OpenVINO unavailable ({type(error).__name__}: {error}); running torch"
        return TorchRuntime(module()), [] if choice == "auto" else [said]


def describe(requested: str, device: str) -> str:
    """What ``requested`` resolves to on ``device`` (``worker check``), without loading a model."""
    if requested == "torch" or device != "cpu":
        return f"{requested} -> torch {torch.__version__}"
    try:
        import openvino as ov
    except ImportError as error:
        return f"{requested} -> torch {torch.__version__} (OpenVINO not importable: {error})"
    return f"{requested} -> openvino {ov.__version__} (torch where a model does not convert)"
