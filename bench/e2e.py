"""Whole-process benchmark: vidworker's local upscale against the official Real-ESRGAN video pipeline.

Same clip (320x180, 10 fps, 6 s = 60 frames, AAC audio; ffmpeg lavfi testsrc2
+ sine, made once), realesr-animevideov3, x2, CPU fp32. Each run is a fresh
process, timed from spawn to exit, so start-up, imports, model load, probe,
decode, colour conversion, inference, resize, x264 encode and audio mux all count:

* vidworker: ``python test_upscale_local.py --input CLIP --output DIR --scale 2
  --device cpu --model realesr-animevideov3 --no-validation``;
* official: ``python -m bench.official_video --input CLIP --output OUT.mp4``, the
  single-process path of Real-ESRGAN's ``inference_realesrgan_video.py``
  (see that module).

The machine is shared and drifts, so the two alternate (A B, B A, ...) over
``--rounds`` and medians are compared. CPU seconds are the child's user + system
time from ``os.wait4``, which include the children it waited for (its ffmpegs):
another job on the machine disturbs them less than wall time. Both outputs must
exist, be 640x360 and hold as many frames as the source (``ffprobe -count_frames``).

Where vidworker's CPU time goes: each round also runs, right after vidworker,
``python -m bench.e2e --serve-inference CLIP``, a fresh process that creates the
engine as the task does (``UpscaleTask.engine_config`` of the same parameters,
``EngineCache``), decodes the clip into memory in the task's batches untimed,
and reports the CPU seconds (``time.process_time()``) of the engine calls alone
over every frame, first call included, no warm-up (the task has none either).
``outside_inference_cpu_s_per_frame`` is (vidworker's process CPU-s − that
inference CPU-s) / output frames, median over rounds: everything but the
network, i.e. start-up and imports, model load, probe, decode, colour
conversion, resize, encode and mux (ffmpeg children included).

The parent's environment goes to every child unchanged (``WEIGHTS_MIRROR``,
``WORKER_RUNTIME``, thread settings). This process never imports torch.

    python -m bench.e2e [--rounds 3] [--quick]

Key lines: ``whole_process_speedup: X.XX`` (median official wall / median
vidworker wall), ``whole_process_cpu_ratio: X.XX`` (the same for CPU-s) and
``outside_inference_cpu_s_per_frame: X.XXX``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.pipeline import Clip

ROOT = Path(__file__).resolve().parent.parent
MODEL = "realesr-animevideov3"
SCALE = 2
PARAMS: dict[str, Any] = {"scale_factor": SCALE, "device": "cpu", "model": MODEL, "tile": None}
"""The job parameters ``test_upscale_local.py`` builds from the command line below."""

# 320x180 is ~0.4-1.1 s a frame on 2 cores: one full round is ~2-3 min, a quick one ~30-60 s.
CLIP = Clip(320, 180, 10, 6)
QUICK_CLIP = Clip(320, 180, 10, 1)
CASES = ("vidworker", "official")


@dataclass(frozen=True)
class Run:
    """One child process: wall seconds from spawn to exit, CPU seconds (its own + its waited children)."""

    wall_s: float
    cpu_s: float
    max_rss_kib: int


def command(case: str, clip: Path, out: Path) -> list[str]:
    """The timed child for ``case``; ``out``: vidworker's output folder, the official output file."""
    if case == "vidworker":
        return [
            sys.executable, "test_upscale_local.py", "--input", str(clip), "--output", str(out),
            "--scale", str(SCALE), "--device", "cpu", "--model", MODEL, "--no-validation",
        ]  # fmt: skip
    return [sys.executable, "-m", "bench.official_video", "--input", str(clip), "--output", str(out)]


def spawn(argv: list[str], stdout: Path, stderr: Path) -> Run:
    """Run ``argv`` in the repo root with this environment; its rusage from ``os.wait4``."""
    with stdout.open("wb") as out, stderr.open("wb") as err:
        start = time.perf_counter()
        process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    if process.returncode != 0:
        tail = "\n".join(stderr.read_text(errors="replace").strip().splitlines()[-20:])
        raise RuntimeError(f"{' '.join(argv[1:3])} failed (exit {process.returncode}):\n{tail}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)


def video_facts(path: Path) -> dict[str, Any]:
    """Frames (decoded and counted), size, and whether an audio stream is there."""
    if not path.is_file():
        raise RuntimeError(f"no output at {path}")
    probe = [
        "ffprobe", "-v", "error", "-count_frames", "-show_entries",
        "stream=codec_type,width,height,nb_read_frames", "-of", "json", str(path),
    ]  # fmt: skip
    streams: list[dict[str, Any]] = json.loads(subprocess.run(probe, check=True, capture_output=True).stdout)[
        "streams"
    ]
    video = next(stream for stream in streams if stream["codec_type"] == "video")
    return {
        "frames": int(video["nb_read_frames"]),
        "size": f"{video['width']}x{video['height']}",
        "audio": any(stream["codec_type"] == "audio" for stream in streams),
    }


def check_output(case: str, path: Path, source: dict[str, Any], clip: Clip) -> dict[str, Any]:
    """``path``'s :func:`video_facts`, checked: the source's frame count, x2 size, audio."""
    facts = video_facts(path)
    size = f"{clip.width * SCALE}x{clip.height * SCALE}"
    if facts["frames"] != source["frames"] or facts["size"] != size or not facts["audio"]:
        raise RuntimeError(
            f"{case} output {path.name}: {facts}; expected {source['frames']} frames, {size}, audio"
        )
    return facts


# ---------------------------------------------------------------- child process: inference alone


def serve_inference(clip: Path) -> int:
    """Child: the task's engine over every frame of ``clip``; its JSON is the last line on stdout."""
    protocol = sys.stdout
    sys.stdout = sys.stderr  # anything else that prints stays off the protocol
    import torch

    from media import FrameReader, Tools, probe
    from models.__main__ import store_from_env
    from tasks import EngineCache, UpscaleTask

    store = store_from_env()  # as test_upscale_local.py builds its store and tools
    tools = Tools(
        ffmpeg=os.environ.get("FFMPEG_PATH", "ffmpeg"), ffprobe=os.environ.get("FFPROBE_PATH", "ffprobe")
    )
    task = UpscaleTask()
    params = task.parse(PARAMS)
    info = probe(clip, tools)
    engine = EngineCache(store, runtime=os.environ.get("WORKER_RUNTIME", "auto")).lease(
        UpscaleTask.engine_config(params)
    )
    with FrameReader(info, tools) as reader:  # untimed: decoded into memory, in the task's batches
        batches = list(reader.batches(engine.frames_per_call(info.height, info.width)))
    cpu, start = time.process_time(), time.perf_counter()
    for batch in batches:
        engine(batch)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    result = {
        "cpu_s": cpu,
        "wall_s": seconds,
        "frames": sum(len(batch) for batch in batches),
        "batch_size": engine.frames_per_call(info.height, info.width),
        "tile": engine.engine.tile,
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result), file=protocol, flush=True)
    return 0


# ---------------------------------------------------------------- parent: clip, rounds, report


def box_line() -> str:
    """The ``CPU: ...`` line every figure is printed under: model, AVX-512 or not, usable cores."""
    name, avx512 = cpu_name()
    return f"CPU: {name}; avx512f: {'yes' if avx512 else 'no'}; {len(os.sched_getaffinity(0))} usable cores"


def cpu_name() -> tuple[str, bool]:
    """``model name`` from /proc/cpuinfo and whether its flags have avx512f."""
    name, avx512 = "unknown", False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return name, avx512
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == "unknown":
            name = value.strip()
        elif key.strip() == "flags":
            avx512 = avx512 or "avx512f" in value.split()
    return name, avx512


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="rounds of the timed pair (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a 1 s clip (10 frames)")
    parser.add_argument("--serve-inference", type=Path, metavar="CLIP", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_inference:
        return serve_inference(args.serve_inference)
    rounds = max(1, args.rounds or (1 if args.quick else 3))
    clip = QUICK_CLIP if args.quick else CLIP

    started = time.perf_counter()
    runs: dict[str, list[Run]] = {case: [] for case in CASES}
    inference: list[dict[str, Any]] = []
    output_frames: list[int] = []
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp:
        directory = Path(tmp)
        source = clip.make(directory)
        source_facts = video_facts(source)
        for index in range(rounds):
            order = CASES if index % 2 == 0 else CASES[::-1]  # A B, B A: linear drift cancels
            for case in order:
                work = directory / f"round{index}-{case}"
                work.mkdir()
                out = work / "out.mp4" if case == "official" else work
                logs = (work.with_suffix(".out"), work.with_suffix(".err"))
                runs[case].append(spawn(command(case, source, out), *logs))
                produced = work / f"{source.stem}_upscaled.mp4" if case == "vidworker" else out
                facts = check_output(case, produced, source_facts, clip)
                if case == "vidworker":  # inference alone, right after it
                    output_frames.append(facts["frames"])
                    logs = (
                        work.with_name(f"round{index}-inference.out"),
                        work.with_name(f"round{index}-inference.err"),
                    )
                    spawn([sys.executable, "-m", "bench.e2e", "--serve-inference", str(source)], *logs)
                    inference.append(json.loads(logs[0].read_text().strip().splitlines()[-1]))
    elapsed = time.perf_counter() - started
    report(clip, source_facts, runs, inference, output_frames, elapsed)
    return 0


def report(
    clip: Clip,
    source: dict[str, Any],
    runs: dict[str, list[Run]],
    inference: list[dict[str, Any]],
    output_frames: list[int],
    elapsed: float,
) -> None:
    wall = {case: statistics.median(run.wall_s for run in runs[case]) for case in CASES}
    cpu = {case: statistics.median(run.cpu_s for run in runs[case]) for case in CASES}
    frames = output_frames[-1]
    if any(row["frames"] != frames for row in inference):
        print(f"warning: inference child ran {[row['frames'] for row in inference]} frames, output {frames}")
    last = inference[-1]
    runtime = os.environ.get("WORKER_RUNTIME") or "unset"
    print(box_line())
    print(
        f"{MODEL} x{SCALE}, CPU fp32; WORKER_RUNTIME={runtime}; vidworker engine: tile {last['tile']}, "
        f"batch {last['batch_size']}, {last['threads']} torch threads"
    )
    print(f"clip: {clip.describe()}; source decodes to {source['frames']} frames")
    print("each run a fresh process, wall from spawn to exit; CPU = user+sys of it and its ffmpeg children;")
    rounds = len(runs["vidworker"])
    print(f"{rounds} rounds alternating (A B, B A ...), medians; whole benchmark {elapsed:.0f} s")
    header = f"{'median s':>9} {'s/frame':>8} {'min s':>7} {'max s':>7} {'CPU s':>7} {'RSS MiB':>8}"
    print(f"{'case':10} {header}  runs (wall s)")
    for case in CASES:
        values = [run.wall_s for run in runs[case]]
        rss = max(run.max_rss_kib for run in runs[case]) / 1024
        listed = " ".join(f"{value:.2f}" for value in values)
        print(
            f"{case:10} {wall[case]:9.2f} {wall[case] / frames:8.3f} {min(values):7.2f} {max(values):7.2f} "
            f"{cpu[case]:7.2f} {rss:8.0f}  {listed}"
        )
    pairs = list(zip(runs["official"], runs["vidworker"], strict=True))
    wall_rounds = " ".join(f"{b.wall_s / a.wall_s:.2f}" for b, a in pairs)
    cpu_rounds = " ".join(f"{b.cpu_s / a.cpu_s:.2f}" for b, a in pairs)
    print(f"official / vidworker per round: wall {wall_rounds}; CPU {cpu_rounds}")
    inference_cpu = [row["cpu_s"] for row in inference]
    outside = [
        (run.cpu_s - row["cpu_s"]) / count
        for run, row, count in zip(runs["vidworker"], inference, output_frames, strict=True)
    ]
    median_inference = statistics.median(inference_cpu)
    print(
        f"vidworker inference alone: {median_inference:.2f} CPU-s ({median_inference / frames:.3f}/frame), "
        f"{statistics.median(row['wall_s'] for row in inference):.2f} s wall; per round "
        + " ".join(f"{value:.2f}" for value in inference_cpu)
    )
    print(
        "vidworker outside inference (start-up, model load, decode, colour, resize, encode), CPU-s/frame "
        "per round: " + " ".join(f"{value:.3f}" for value in outside)
    )
    print()
    print(f"frames: {frames}")
    print(f"vidworker_wall_s: {wall['vidworker']:.3f}")
    print(f"official_wall_s: {wall['official']:.3f}")
    print(f"vidworker_cpu_s: {cpu['vidworker']:.3f}")
    print(f"official_cpu_s: {cpu['official']:.3f}")
    print(f"inference_cpu_s: {median_inference:.3f}")
    print(f"whole_process_speedup: {wall['official'] / wall['vidworker']:.2f}")
    print(f"whole_process_cpu_ratio: {cpu['official'] / cpu['vidworker']:.2f}")
    print(f"outside_inference_cpu_s_per_frame: {statistics.median(outside):.3f}")


if __name__ == "__main__":
    sys.exit(main())
