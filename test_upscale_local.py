#!/usr/bin/env python3
"""Upscale a local video with the same task the daemon runs, no AWS involved (spec §9).

    python test_upscale_local.py --input sample.mp4 [--output DIR] [--scale 2|4]
        [--device cpu|gpu] [--model NAME] [--runtime auto|torch|openvino] [--no-reuse] [--no-validation]

Weights come from ``WEIGHTS_DIR`` (default ``weights/``), then ``WEIGHTS_MIRROR``,
then the official download. Exit status: 0 done, 1 the job failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from media import MediaError, Tools
from models import DEFAULT_MODEL, MODELS, ModelError, WeightStore
from models.__main__ import store_from_env
from models.runtime import RUNTIMES
from tasks import EngineCache, Progress, Resources, TaskContext, TaskError, UpscaleTask


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Upscale a local video with Real-ESRGAN.")
    parser.add_argument("--input", required=True, type=Path, help="source video file")
    parser.add_argument(
        "--output", default=Path("output"), type=Path, help="output folder (default: output/)"
    )
    parser.add_argument("--scale", default=4, type=int, choices=(2, 4))
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=MODELS.names())
    parser.add_argument("--tile", type=int, default=None, help="tile size in input pixels (0: whole frame)")
    parser.add_argument(
        "--runtime",
        default=os.environ.get("WORKER_RUNTIME", "auto"),
        choices=RUNTIMES,
        help="what runs the network (default: WORKER_RUNTIME, else auto: OpenVINO on a CPU)",
    )
    parser.add_argument(
        "--no-reuse", action="store_true", help="compute every frame (no reuse of repeated frames)"
    )
    parser.add_argument("--no-validation", action="store_true", help="skip the environment report")
    return parser.parse_args(argv)


def environment_report(store: WeightStore, tools: Tools, model: str) -> tuple[bool, list[str]]:
    """Lines describing this host, and whether the job can run (weights and ffmpeg usable)."""
    cuda = torch.cuda.is_available()
    lines = [f"torch        {torch.__version__} (CUDA build {torch.version.cuda or 'none'})"]
    if cuda:
        props = torch.cuda.get_device_properties(0)
        lines.append(f"GPU          {props.name}, {props.total_memory / 1024**3:.1f} GiB")
    else:
        lines.append("GPU          none (CUDA not available): inference runs on the CPU in fp32")
    version = tools.version()
    lines.append(f"ffmpeg       {version}")
    nvenc = tools.encoder_works("h264_nvenc")
    lines.append(f"NVENC        {'usable' if nvenc else 'not usable: encoding with libx264/libx265'}")
    present, weights = store.status(MODELS.get(model))
    lines.append(f"weights      {model}: {weights}")
    ok = present and not version.startswith("unavailable")
    return ok, lines


def run(args: argparse.Namespace) -> int:
    store = store_from_env()
    tools = Tools(
        ffmpeg=os.environ.get("FFMPEG_PATH", "ffmpeg"), ffprobe=os.environ.get("FFPROBE_PATH", "ffprobe")
    )
    if not args.no_validation:
        ok, lines = environment_report(store, tools, args.model)
        print("\n".join(["Environment", *(f"  {line}" for line in lines)]), flush=True)
        if not ok:
            print("  (missing weights are downloaded now if the network allows)", flush=True)
    if not args.input.is_file():
        print(f"error: input {args.input} is not a file", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    task = UpscaleTask()
    params = task.parse(
        {"scale_factor": args.scale, "device": args.device, "model": args.model, "tile": args.tile}
    )
    engines = EngineCache(store, runtime=args.runtime, reuse=not args.no_reuse)
    resources = Resources(tools=tools, store=store, engines=engines)
    with (
        tempfile.TemporaryDirectory(prefix=".vidworker-", dir=args.output) as work,
        tqdm(unit="frame") as bar,
    ):

        def progress(update: Progress) -> None:
            bar.total = update.total
            bar.n = update.done
            bar.refresh()

        result = task.run(args.input, params, TaskContext(Path(work), resources, progress=progress))
        bar.close()
        target = args.output / f"{args.input.stem}_upscaled.mp4"
        os.replace(result.output, target)
    print(f"output       {target.resolve()}")
    print(json.dumps(result.metadata(), indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (MediaError, ModelError, TaskError) as error:
        print(f"error [{error.code}]: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
