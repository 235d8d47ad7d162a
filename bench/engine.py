"""Engine benchmark: vidworker's Upscaler against the official RealESRGANer.

Same frame (a 180x320 photo), same model (realesr-animevideov3), CPU fp32,
torch threads = usable cores. The machine is shared and drifts, so the two are
interleaved (A B A B ...) and medians compared. Also measures this machine's
3x3-conv throughput (64->64 channels, channels-last, the model's own layer
shape) as the ceiling the model can reach.

    python -m bench.engine [--rounds 7] [--size 180x320]

Last line: ``speedup_vs_official: X.XX``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from skimage import data as samples

from models import MODELS, Upscaler, UpscalerConfig
from models.__main__ import store_from_env
from models.device import tune_cpu, usable_cpus

MODEL = "realesr-animevideov3"


def official_upscaler(weights: Path, tile: int) -> Callable[[np.ndarray], np.ndarray]:
    """RealESRGANer as its video script builds it (pre_pad 0, tile_pad 10), RGB in and out."""
    import torchvision.transforms.functional as tvf

    # basicsr 1.4.2 imports a torchvision module removed in 0.17; give it the one function it uses.
    shim = types.ModuleType("torchvision.transforms.functional_tensor")
    shim.rgb_to_grayscale = tvf.rgb_to_grayscale  # type: ignore[attr-defined]
    sys.modules.setdefault("torchvision.transforms.functional_tensor", shim)
    from realesrgan import RealESRGANer
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    net = SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type="prelu")
    engine = RealESRGANer(
        scale=4,
        model_path=str(weights),
        model=net,
        tile=tile,
        tile_pad=10,
        pre_pad=0,
        half=False,
        device=torch.device("cpu"),
    )

    def run(frame: np.ndarray) -> np.ndarray:
        output, _ = engine.enhance(np.ascontiguousarray(frame[:, :, ::-1]), outscale=4)
        rgb: np.ndarray = output[:, :, ::-1]
        return rgb

    return run


def model_flops(upscaler: Upscaler, height: int, width: int) -> float:
    """Floating-point operations (2 per multiply-add) of one whole-frame pass."""
    module: Any = upscaler.network
    macs = 0
    for layer in module.modules():
        if isinstance(layer, torch.nn.Conv2d):
            kh, kw = layer.kernel_size
            macs += layer.in_channels * layer.out_channels * kh * kw * height * width
    return 2.0 * macs


def conv_probe(height: int, width: int) -> tuple[Callable[[], object], float]:
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval().to(memory_format=torch.channels_last)
    x = torch.rand(1, 64, height, width).contiguous(memory_format=torch.channels_last)

    def run() -> object:
        with torch.inference_mode():
            return conv(x)

    return run, 2.0 * 64 * 64 * 9 * height * width


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_frame(height: int, width: int) -> np.ndarray:
    photo = samples.astronaut()
    frame: np.ndarray = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
    return frame


CASES: dict[str, tuple[str, int | None, str]] = {
    # name: (implementation, tile (None = vidworker's device default), runtime)
    "official tile 0": ("official", 0, ""),
    "vidworker default": ("vidworker", None, "auto"),
    "vidworker torch": ("vidworker", None, "torch"),
    "conv 3x3 64->64": ("conv", None, ""),
    "official tile 128": ("official", 128, ""),
    "vidworker tile 128": ("vidworker", 128, "auto"),
}


def build_case(
    name: str, height: int, width: int, threads: int
) -> tuple[Callable[[], object], np.ndarray | None, int]:
    """The callable to time for one case, its output frame (None for the conv probe), frames per call."""
    implementation, tile, runtime = CASES[name]
    store = store_from_env(allow_download=False)
    frame = test_frame(height, width)
    if implementation == "conv":
        tune_cpu(threads)  # the ceiling gets the same allocator tuning the engine has
        run, _ = conv_probe(height, width)
        return run, None, 1
    if implementation == "official":
        torch.set_num_threads(threads)
        official = official_upscaler(store.resolve(MODELS.get(MODEL)).path, tile=tile or 0)
        return (lambda: official(frame)), official(frame), 1
    ours = Upscaler.create(
        UpscalerConfig(MODEL, 4, "cpu", tile=tile, threads=threads, runtime=runtime), store
    )
    frames = np.stack([frame] * ours.frames_per_call(height, width))  # as the task hands them
    return (lambda: ours(frames)), ours(frames)[0], len(frames)


def serve(name: str, height: int, width: int, threads: int, output: Path) -> int:
    """Child process: one case, isolated (no allocator or thread settings shared with the others).

    Writes the output frame to ``output``, then times one call per ``run`` line on stdin
    and answers seconds per frame (vidworker is handed ``frames_per_call()`` frames a call).
    """
    protocol = sys.stdout
    sys.stdout = sys.stderr  # RealESRGANer prints "Tile i/n" progress; keep it off the protocol
    run, frame, per_call = build_case(name, height, width, threads)
    if frame is not None:
        np.save(output, frame)
    run()  # warm-up
    print("ready", file=protocol, flush=True)
    for line in sys.stdin:
        if line.strip() == "run":
            print(f"{timed(run) / per_call:.6f}", file=protocol, flush=True)
    return 0


class Child:
    def __init__(self, name: str, args: argparse.Namespace, output: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "bench.engine",
            "--serve",
            name,
            "--size",
            args.size,
            "--output",
            str(output),
        ]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.output = output

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"bench child failed to start: {line!r}")

    def run(self) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("run\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--size", default="180x320", help="HxW of the input frame")
    parser.add_argument("--serve", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))
    threads = usable_cpus()
    if args.serve:
        return serve(args.serve, height, width, threads, args.output)

    with tempfile.TemporaryDirectory() as tmp:
        children = {name: Child(name, args, Path(tmp) / f"{index}.npy") for index, name in enumerate(CASES)}
        for child in children.values():
            child.wait_ready()
        times: dict[str, list[float]] = {name: [] for name in CASES}
        for _ in range(args.rounds):
            for name, child in children.items():
                times[name].append(child.run())
        for child in children.values():
            child.close()
        outputs = {name: np.load(child.output) for name, child in children.items() if child.output.exists()}
    medians = {name: statistics.median(values) for name, values in times.items()}
    report(medians, outputs, height, width, threads, args.rounds)
    return 0


def report(
    medians: dict[str, float],
    outputs: dict[str, np.ndarray],
    height: int,
    width: int,
    threads: int,
    rounds: int,
) -> None:
    store = store_from_env(allow_download=False)
    ours = Upscaler.create(UpscalerConfig(MODEL, 4, "cpu", threads=threads), store)
    flops = model_flops(ours, height, width)
    _, conv_flops = conv_probe(height, width)
    peak = conv_flops / medians["conv 3x3 64->64"]
    reference = outputs["official tile 0"].astype(np.int16)
    print(f"frame {height}x{width}, {MODEL}, CPU fp32, {threads} threads; each case in its own process,")
    print(f"{rounds} interleaved rounds, medians. vidworker default: tile {ours.tile} pad {ours.pad}")
    print(
        f"work {flops / 1e9:.1f} GFLOP/frame; conv peak (3x3 64->64 channels-last): {peak / 1e9:.0f} GFLOP/s"
    )
    print(f"{'case':22} {'s/frame':>8} {'GFLOP/s':>8} {'of peak':>8} {'max|diff| vs official tile 0':>30}")
    for name in CASES:
        if name not in outputs:
            continue
        seconds = medians[name]
        rate = flops / seconds
        delta = int(np.abs(outputs[name].astype(np.int16) - reference).max())
        print(f"{name:22} {seconds:8.3f} {rate / 1e9:8.0f} {rate / peak:8.0%} {delta:>30}")
    print(f"speedup_at_tile_128: {medians['official tile 128'] / medians['vidworker tile 128']:.2f}")
    print(f"conv_peak_fraction: {flops / medians['vidworker default'] / peak:.2f}")
    print(f"speedup_vs_official: {medians['official tile 0'] / medians['vidworker default']:.2f}")


if __name__ == "__main__":
    sys.exit(main())
