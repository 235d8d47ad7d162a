"""The inference engine: uint8 RGB frames in, upscaled uint8 RGB frames out."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from models.device import (
    DEFAULTS,
    free_cached_memory,
    half_output_ok,
    is_device_fault,
    is_out_of_memory,
    select_device,
    tune_cpu,
)
from models.errors import DeviceError, InferenceFailed, OutOfMemory, UnsupportedScale
from models.registry import DEFAULT_MODEL, MODELS, ModelSpec
from models.reuse import ReuseState, same_window
from models.runtime import ModuleSource, Runtime, TorchRuntime, choose_runtime, default_cache
from models.tiling import TilePlan, Window, feather_weights, plan_tiles
from models.weights import WeightStore

log = logging.getLogger(__name__)

CALL_PIXELS = 3 << 19
"""Input pixels handed to one engine call at most, beyond the minimum (outputs are 16x that, in floats)."""
CALL_FRAMES = 24
"""Frames a call at most. Enough that what reuse leaves to compute splits evenly over the requests
in flight: with two, an odd count leaves one window alone on one core (on threes, 8 frames a call
compute 2 or 3, and every 3 costs as 4; 24 compute about 8)."""

OOM_TILES = (256, 128, 64)
"""Tile sizes tried in turn after an out-of-memory error; 64 is the floor."""

FEATHER_PAD = 16
"""Overlap for models whose receptive field is too large to cover (RRDBNet)."""

Network = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class UpscalerConfig:
    """What to run and how. ``None`` fields take the device's defaults.

    ``tile`` is the core size of a tile in input pixels (0: whole frame), ``pad``
    the overlap on each side, ``batch_size`` the windows per network call,
    ``runtime`` what executes the network (:mod:`models.runtime`).
    """

    model: str = DEFAULT_MODEL
    scale: int = 4
    device: str = "auto"
    tile: int | None = None
    pad: int | None = None
    batch_size: int | None = None
    half: bool | None = None
    threads: int | None = None
    runtime: str = "auto"


@dataclass(frozen=True)
class UpscalerInfo:
    """What the engine actually runs with, for logs and job metadata.

    ``warnings`` are load-time facts (a GPU request served by the CPU, fp16
    refused): true of every job the engine serves. ``tile`` is the current one,
    smaller than configured once an out-of-memory error shrank it.
    """

    model: str
    device: str
    dtype: str
    model_scale: int
    scale: int
    tile: int
    pad: int
    batch_size: int
    blend: str
    runtime: str = "torch"
    warnings: tuple[str, ...] = field(default=())


class Upscaler:
    """Real-ESRGAN over frames, tiled, batched and never silently wrong.

    Call contract: ``frames`` is a uint8 RGB array, ``(H, W, 3)`` or
    ``(N, H, W, 3)``, values 0-255. The result has the same layout at
    ``(H * scale, W * scale)``, uint8 0-255, a fresh array owned by the caller.
    Every input frame yields exactly one output frame or the call raises
    (:class:`OutOfMemory` at the smallest tile, :class:`DeviceError` on a CUDA /
    cuDNN / cuBLAS / driver fault, :class:`InferenceFailed` on NaN output, any
    other exception untouched); nothing is skipped. With a ``reuse`` state a
    window whose input equals the previous frame's takes that frame's output
    (:mod:`models.reuse`: byte-identical to computing it). After a
    :class:`DeviceError` the engine must be dropped, not called again.

    One engine serves many jobs (it is cached), so it keeps no job's state: the
    run-time warnings of a call go to the ``warnings`` list the caller passes,
    the previous frame to its ``reuse`` state.
    A tile shrunk after out-of-memory stays shrunk for later calls (the device
    did not gain memory); only the call that shrank it is warned.

    The network sees float tensors ``(B, 3, h, w)`` in 0-1 on ``device`` in
    fp16 (CUDA) or fp32, under ``torch.inference_mode()``, through ``runtime``
    (:mod:`models.runtime`); every call's ``B`` is ``batch_size``. The torch
    module is built when first needed (:attr:`network`): never, for an engine
    whose runtime reads a converted model from its cache.
    """

    def __init__(
        self,
        spec: ModelSpec,
        module: ModuleSource,
        *,
        device: torch.device,
        dtype: torch.dtype,
        scale: int,
        tile: int,
        pad: int,
        batch_size: int,
        runtime: Runtime | None = None,
        warnings: Sequence[str] = (),
    ) -> None:
        check_scale(spec, scale)
        self.spec = spec
        self._module = module
        self.runtime: Runtime = runtime or TorchRuntime(module())
        self.device = device
        self.dtype = dtype
        self.scale = scale
        self.tile = tile
        self.pad = pad
        self.batch_size = max(1, batch_size)
        self.oom_retries = 0  # since the engine was loaded: every call, every job
        self._load_warnings = tuple(warnings)
        self._multiple = spec.multiple
        self._crop = spec.reach is not None and pad >= spec.reach
        self._weights: dict[tuple[int, int, int], tuple[list[torch.Tensor], torch.Tensor]] = {}

    @classmethod
    def create(cls, config: UpscalerConfig, store: WeightStore) -> Upscaler:
        """Resolve and verify weights, pick the device, load, probe fp16."""
        spec = MODELS.get(config.model)
        check_scale(spec, config.scale)  # before any file is read
        weights = store.resolve(spec)
        device, warnings = select_device(config.device)
        defaults = DEFAULTS[device.type]
        if device.type == "cpu":
            tune_cpu(config.threads)
        else:
            torch.backends.cudnn.benchmark = True
        fp32 = functools.cache(functools.partial(_load_module, spec, weights.path, device))
        dtype = torch.float32
        if device.type == "cuda" and (defaults.half if config.half is None else config.half):
            dtype, warning = _choose_half(fp32(), device)
            warnings.extend(warning)

        @functools.cache
        def module() -> torch.nn.Module:
            return fp32().to(dtype=dtype)

        key = f"{spec.name}-{weights.sha256[:16]}"
        runtime, runtime_warnings = choose_runtime(
            config.runtime, module, device, key=key, cache=default_cache(), threads=config.threads
        )
        warnings.extend(runtime_warnings)
        pad = config.pad if config.pad is not None else max(defaults.pad, spec.reach or FEATHER_PAD)
        return cls(
            spec,
            module,
            device=device,
            dtype=dtype,
            scale=config.scale,
            tile=defaults.tile if config.tile is None else config.tile,
            pad=pad,
            batch_size=config.batch_size or defaults.batch_size,
            runtime=runtime,
            warnings=warnings,
        )

    @property
    def network(self) -> Network:
        """The torch module, built on first use."""
        return cast(Network, self._module())

    @property
    def info(self) -> UpscalerInfo:
        return UpscalerInfo(
            model=self.spec.name,
            device=self.device.type,
            dtype=str(self.dtype).removeprefix("torch."),
            model_scale=self.spec.scale,
            scale=self.scale,
            tile=self.tile,
            pad=self.pad,
            batch_size=self.batch_size,
            blend="crop" if self._crop else "feather",
            runtime=self.runtime.name,
            warnings=self._load_warnings,
        )

    def frames_per_call(self, height: int, width: int) -> int:
        """How many ``height x width`` frames to hand one call.

        At least one network batch per request in flight. Small frames (one
        window each) get more, up to :data:`CALL_FRAMES` within :data:`CALL_PIXELS`:
        when reuse skips held frames, the frames still to compute must be
        enough to keep every request busy (drawn on twos, 2 frames a call
        would leave one request, one core, idle).
        """
        floor = self.batch_size * self.runtime.in_flight
        return max(floor, min(CALL_FRAMES, CALL_PIXELS // max(1, height * width)))

    def __call__(
        self, frames: np.ndarray, warnings: list[str] | None = None, reuse: ReuseState | None = None
    ) -> np.ndarray:
        """Upscale ``frames``; run-time warnings go to ``warnings``; ``reuse`` carries the previous frame."""
        single = frames.ndim == 3
        batch = frames[None] if single else frames
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"expected uint8 (N,H,W,3) or (H,W,3) frames, got {frames.dtype} {frames.shape}")
        if batch.shape[0] == 0:
            raise ValueError("no frames given")
        result = self._upscale_with_retry(batch, [] if warnings is None else warnings, reuse)
        return result[0] if single else result

    def _upscale_with_retry(
        self, frames: np.ndarray, warnings: list[str], reuse: ReuseState | None
    ) -> np.ndarray:
        """Run the batch; on out-of-memory shrink the tile and run the same batch again."""
        while True:
            try:
                return self._upscale(frames, reuse)
            except Exception as exc:
                if is_out_of_memory(exc):
                    self._shrink_tile(frames.shape[1], frames.shape[2], exc, warnings)
                elif is_device_fault(exc):
                    raise DeviceError(f"{self.spec.name} on {self.device}: {exc}") from exc
                else:
                    raise

    def _shrink_tile(self, height: int, width: int, exc: BaseException, warnings: list[str]) -> None:
        current = self.tile if 0 < self.tile < max(height, width) else max(height, width)
        smaller = [size for size in OOM_TILES if size < current]
        free_cached_memory(self.device)
        if not smaller:
            raise OutOfMemory(
                f"out of memory at the smallest tile ({current} px) on {self.device.type}: {exc}"
            ) from exc
        log.warning("out of memory at tile %s; retrying the batch at tile %s", current, smaller[0])
        warnings.append(f"out of memory at tile {current}; continued at tile {smaller[0]}")
        self.tile = smaller[0]
        self.oom_retries += 1

    def _upscale(self, frames: np.ndarray, reuse: ReuseState | None) -> np.ndarray:
        with torch.inference_mode():
            pixels = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
            # (N,H,W,3) viewed as (N,3,H,W) is already channels-last: no copy.
            x = pixels.permute(0, 3, 1, 2).to(self.dtype).div_(255.0)
            plan = plan_tiles(x.shape[2], x.shape[3], self.tile, self.pad)
            outputs = self._window_outputs(frames, x, plan, reuse)
            canvas = self._assemble(outputs, plan)
            return self._to_frames(canvas, x.shape[2], x.shape[3])

    def _window_outputs(
        self, frames: np.ndarray, x: torch.Tensor, plan: TilePlan, reuse: ReuseState | None
    ) -> list[list[torch.Tensor]]:
        """Float (3, h*s, w*s) network output per frame per window: computed, or the previous frame's."""
        previous = None if reuse is None else reuse.previous(plan, self.tile)
        reused: list[list[bool]] = []
        todo: list[tuple[int, int]] = []
        for index, frame in enumerate(frames):
            prior = frames[index - 1] if index else (None if previous is None else previous[0])
            same = [prior is not None and same_window(frame, prior, window) for window in plan.windows]
            if reuse is None:
                same = [False] * len(plan.windows)
            reused.append(same)
            todo.extend((index, k) for k, hit in enumerate(same) if not hit)
            if reuse is not None:
                reuse.count(plan, same)
        computed = self._run(x, plan, todo)
        results: list[list[torch.Tensor]] = []
        for index, same in enumerate(reused):
            before = results[index - 1] if index else (previous[1] if previous is not None else [])
            results.append([before[k] if hit else computed[index, k] for k, hit in enumerate(same)])
        if reuse is not None:
            reuse.remember(plan, self.tile, frames[-1], results[-1])
        return results

    def _run(
        self, x: torch.Tensor, plan: TilePlan, todo: list[tuple[int, int]]
    ) -> dict[tuple[int, int], torch.Tensor]:
        """The network's output for each ``(frame, window)`` item, windows of one shape batched together.

        Each shape's items go ``batch_size`` per call, every call full: a partial
        last batch is padded with copies of its last window (and the extra
        outputs dropped) so each call has the same shape whatever was skipped:
        the kernels, hence the bits, do not change with reuse.
        """
        groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for item in todo:
            groups.setdefault(plan.windows[item[1]].shape, []).append(item)
        computed: dict[tuple[int, int], torch.Tensor] = {}
        for shape, group in groups.items():
            batches = []
            for start in range(0, len(group), self.batch_size):
                items = group[start : start + self.batch_size]
                items += [items[-1]] * (self.batch_size - len(items))
                batches.append(torch.cat([_window_of(x, index, plan.windows[k]) for index, k in items]))
            outputs = [self._finish(output, shape) for output in self.runtime.map(self._fit(batches))]
            windows = [window for output in outputs for window in output][: len(group)]
            computed.update(zip(group, windows, strict=True))
        return computed

    def _fit(self, batches: list[torch.Tensor]) -> list[torch.Tensor]:
        """Pad each batch on the right and bottom to the network's size multiple."""
        if not batches:
            return batches
        pad_h = -batches[0].shape[2] % self._multiple
        pad_w = -batches[0].shape[3] % self._multiple
        if not (pad_h or pad_w):
            return batches
        return [F.pad(batch, (0, pad_w, 0, pad_h), mode="replicate") for batch in batches]

    def _finish(self, output: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """One call's output cropped to its windows' ``shape`` times the scale, float32 in 0-1; NaN raises."""
        s = self.spec.scale
        height, width = shape
        output = output[:, :, : height * s, : width * s].float().clamp_(0.0, 1.0)
        if torch.isnan(output).any():
            raise InferenceFailed(
                f"{self.spec.name} produced NaN output on {self.device.type} ({self.dtype})"
            )
        return output

    def _assemble(self, outputs: list[list[torch.Tensor]], plan: TilePlan) -> torch.Tensor:
        """Float (N, 3, H*s, W*s) frames from their window outputs, s = model scale."""
        if len(plan.windows) == 1:
            return torch.stack([windows[0] for windows in outputs])
        s = self.spec.scale
        canvas = torch.zeros(
            (len(outputs), 3, plan.height * s, plan.width * s), device=self.device, dtype=torch.float32
        ).contiguous(memory_format=torch.channels_last)
        weights, weight_sum = (None, None) if self._crop else self._feather(plan)
        for frame, windows in zip(canvas, outputs, strict=True):
            for k, output in enumerate(windows):
                self._place(frame, plan.windows[k], output, None if weights is None else weights[k])
        if weight_sum is not None:
            canvas.div_(weight_sum)
        return canvas

    def _place(
        self, frame: torch.Tensor, window: Window, output: torch.Tensor, weight: torch.Tensor | None
    ) -> None:
        """Write one window's output into its frame: the core only, or weighted (feather)."""
        s = self.spec.scale
        rows, cols = window.rows, window.cols
        if weight is None:
            top, left = (rows.core_start - rows.start) * s, (cols.core_start - cols.start) * s
            height, width = (rows.core_stop - rows.core_start) * s, (cols.core_stop - cols.core_start) * s
            frame[:, rows.core_start * s : rows.core_stop * s, cols.core_start * s : cols.core_stop * s] = (
                output[:, top : top + height, left : left + width]
            )
            return
        frame[:, rows.start * s : rows.stop * s, cols.start * s : cols.stop * s].addcmul_(output, weight[0])

    def _feather(self, plan: TilePlan) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-window blend weights and their per-pixel sum, cached per frame size and tile."""
        key = (plan.height, plan.width, self.tile)
        if key not in self._weights:
            weights = [w.to(self.device) for w in feather_weights(plan, self.spec.scale)]
            self._weights[key] = (weights, self._weight_sum(plan, weights))
        return self._weights[key]

    def _weight_sum(self, plan: TilePlan, weights: list[torch.Tensor]) -> torch.Tensor:
        s = self.spec.scale
        total = torch.zeros((1, 1, plan.height * s, plan.width * s), device=self.device)
        for window, weight in zip(plan.windows, weights, strict=True):
            rows, cols = window.rows, window.cols
            total[:, :, rows.start * s : rows.stop * s, cols.start * s : cols.stop * s] += weight
        return total

    def _to_frames(self, canvas: torch.Tensor, height: int, width: int) -> np.ndarray:
        if self.scale != self.spec.scale:
            size = (height * self.scale, width * self.scale)
            canvas = F.interpolate(canvas, size=size, mode="bicubic", antialias=True, align_corners=False)
            canvas = canvas.clamp_(0.0, 1.0)
        frames = canvas.mul_(255.0).round_().to(torch.uint8)
        array: np.ndarray = frames.permute(0, 2, 3, 1).contiguous().cpu().numpy()
        return array


def check_scale(spec: ModelSpec, scale: int) -> None:
    """Scale 2 or 4, and never above the network's native scale (no plain resize up)."""
    if scale not in (2, 4) or scale > spec.scale:
        raise UnsupportedScale(
            f"{spec.name} is a native x{spec.scale} model; it can produce scale 2"
            f"{' or 4' if spec.scale == 4 else ''}, not {scale}"
        )


def _window_of(x: torch.Tensor, index: int, window: Window) -> torch.Tensor:
    rows, cols = window.rows, window.cols
    return x[index : index + 1, :, rows.start : rows.stop, cols.start : cols.stop]


def _load_module(spec: ModelSpec, path: Path, device: torch.device) -> torch.nn.Module:
    """``spec``'s torch module from ``path``, fp32, channels-last on ``device``."""
    from models.loader import load_descriptor  # spandrel: imported only by an engine that needs the module

    module: torch.nn.Module = load_descriptor(spec, path).model
    return module.to(device).to(memory_format=torch.channels_last)


def _choose_half(model: torch.nn.Module, device: torch.device) -> tuple[torch.dtype, list[str]]:
    """fp16 unless a probe tile comes out NaN or black in fp16; then fp32 with a warning."""
    ramp = torch.linspace(0.0, 1.0, 64, device=device)
    probe = torch.stack(
        [ramp[None, :].expand(64, 64), ramp[:, None].expand(64, 64), 0.5 * torch.ones(64, 64, device=device)]
    )
    probe = probe[None].contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        output = model.half()(probe.half())
    model.float()
    if half_output_ok(output):
        return torch.float16, []
    return torch.float32, ["fp16 probe gave NaN or black output; running in fp32"]
