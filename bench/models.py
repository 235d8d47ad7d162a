"""Per-frame cost of each registered model on this host's CPU, for the default-model choice per tier.

Only animevideov3's real weights are in this workplace's mirror; the others are
timed with random weights in the official file layout (same network, same
work: the values do not change the cost). One 180x320 frame at x4, whole frame,
fp32, models interleaved round by round (the machine drifts); medians printed.

    python -m bench.models [--rounds 3] [--size 180x320]

Lines: ``model_cost: NAME s_per_frame=X gmac_per_frame=Y`` and the seconds one
minute of 30 fps 640x480 video would take on one such host.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from models import MODELS, Upscaler, UpscalerConfig, WeightStore
from models.__main__ import store_from_env
from models.device import tune_cpu
from models.weights import sha256_of
from tests.models.rrdb_weights import write_rrdbnet

TIMED = ("realesr-animevideov3", "realesr-general-x4v3", "realesrgan-x4plus", "realesrgan-x2plus")


def write_srvgg(path: Path, num_conv: int, seed: int = 0) -> None:
    """Random SRVGGNetCompact (64 features, PReLU, x4) weights as the official ``{"params": ...}`` file."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    channels = [(64, 3)] + [(64, 64)] * num_conv + [(3 * 16, 64)]
    for index, (out_ch, in_ch) in enumerate(channels):
        state[f"body.{2 * index}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=gen) * 0.02
        state[f"body.{2 * index}.bias"] = torch.zeros(out_ch)
        if index < len(channels) - 1:
            state[f"body.{2 * index + 1}.weight"] = torch.full((out_ch,), 0.25)
    torch.save({"params": state}, path)


def random_store(folder: Path) -> WeightStore:
    """A mirror with random general-x4v3, x4plus and x2plus weights, and a SHA256SUMS that accepts them."""
    write_srvgg(folder / "realesr-general-x4v3.pth", num_conv=32)
    write_rrdbnet(folder / "RealESRGAN_x4plus.pth", scale=4, seed=1)
    write_rrdbnet(folder / "RealESRGAN_x2plus.pth", scale=2, seed=2)
    names = ("realesr-general-x4v3.pth", "RealESRGAN_x4plus.pth", "RealESRGAN_x2plus.pth")
    (folder / "SHA256SUMS").write_text("".join(f"{sha256_of(folder / n)}  {n}\n" for n in names))
    return WeightStore(folder / "empty", folder, allow_download=False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", default="180x320")
    args = parser.parse_args()
    height, width = (int(part) for part in args.size.split("x"))
    tune_cpu(None)
    frame = np.random.default_rng(0).integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    with tempfile.TemporaryDirectory() as folder:
        stores = {"realesr-animevideov3": store_from_env(allow_download=False)}
        random = random_store(Path(folder))
        engines = {
            name: Upscaler.create(
                UpscalerConfig(model=name, scale=MODELS.get(name).scale, device="cpu", tile=0),
                stores.get(name, random),
            )
            for name in TIMED
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in TIMED}
        for _ in range(args.rounds):
            for name, engine in engines.items():
                started = time.perf_counter()
                engine(frame)
                times[name].append(time.perf_counter() - started)
    flags = open("/proc/cpuinfo").read().split("flags")[1].split("\n")[0]  # noqa: SIM115
    box = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "baseline x86-64"
    threads = torch.get_num_threads()
    print(f"box: {threads} threads, {box}; frame {width}x{height}, native scale, fp32, whole frame")
    for name in TIMED:
        median = statistics.median(times[name])
        minute = median * (640 * 480) / (width * height) * 30 * 60
        hours = f"{minute / 3600:.1f}"
        arch = MODELS.get(name).arch
        per_megapixel = median / (width * height / 1e6)
        print(f"model_cost: {name} ({arch}, x{MODELS.get(name).scale}) s_per_frame={median:.2f} "
              f"s_per_input_megapixel={per_megapixel:.1f} one_minute_640x480_30fps_h={hours}")  # fmt: skip


if __name__ == "__main__":
    main()
