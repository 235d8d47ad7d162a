"""Pipeline benchmark: the whole UPSCALE task against its own inference, and memory against clip length.

Two questions from the issue, on realesr-animevideov3 x4, CPU fp32:

* overhead: ``UpscaleTask.run`` wall time over the time of the bare
  ``Upscaler`` calls on the same clip's frames (target <= 1.10). "inference"
  probes and decodes every frame into memory first, untimed, then times only
  the engine calls, ``engine.frames_per_call()`` frames at a time as the task makes
  them. "e2e" times ``UpscaleTask.run`` (probe, decode, inference, x264 encode,
  AAC mux, output check). Both load the engine and make one warm-up call before
  the clock starts, so model loading counts in neither.
* memory: peak RSS of the full task on a 10 s and a 60 s clip of the same kind
  (target: within 5 %), of the Python process (``ru_maxrss``) and of its
  ffmpeg children. The children's figure is their ``VmHWM``, sampled from
  /proc while they run: ``RUSAGE_CHILDREN``'s ``ru_maxrss`` is no use here,
  because a child spawned with vfork+exec starts its high-water mark at the
  parent's RSS, so it reports the Python process's size, not ffmpeg's. (The
  same is why this parent process never imports torch: each child's own
  ``ru_maxrss`` starts at the parent's RSS.)

Every measurement runs in a fresh process. The machine is shared and drifts,
so the two timed cases alternate (A B, B A, ...) over ``--rounds`` and medians
are compared (also printed: the median of each round's own e2e/inference
ratio, and the ratio of CPU seconds, this process plus its ffmpeg children,
which another job on the machine disturbs less than wall time); the memory
runs, one per clip, are not timed against anything. Clips are generated with
ffmpeg's lavfi sources (testsrc2 video, a sine as AAC audio, so the output is
muxed with audio).

    python -m bench.pipeline [--rounds 3] [--quick]

Key lines: ``e2e_over_inference: X.XX`` and ``rss_60s_over_10s: X.XXX``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models import WeightStore

ROOT = Path(__file__).resolve().parent.parent
MODEL = "realesr-animevideov3"
PARAMS = {"device": "cpu", "model": MODEL, "scaleFactor": 4}
"""The job's ``parameters``: everything else (tile, batch size, codec, quality) at its default."""

FFMPEG = ["ffmpeg", "-v", "error", "-y", "-nostdin"]
CASES = ("e2e", "inference")
SAMPLE_SECONDS = 0.05
"""How often the memory case reads its children's /proc status."""


@dataclass(frozen=True)
class Clip:
    """A generated test clip: ``width``x``height`` pixels, ``fps`` frames/s, ``seconds`` long, with audio."""

    width: int
    height: int
    fps: int
    seconds: int

    @property
    def frames(self) -> int:
        return self.fps * self.seconds

    def describe(self) -> str:
        return f"{self.width}x{self.height} {self.fps} fps {self.seconds} s ({self.frames} frames) + AAC"

    def make(self, directory: Path) -> Path:
        path = directory / f"{self.width}x{self.height}_{self.fps}fps_{self.seconds}s.mp4"
        video = f"testsrc2=s={self.width}x{self.height}:r={self.fps}:d={self.seconds}"
        audio = f"sine=f=440:r=48000:d={self.seconds}"
        subprocess.run(
            [*FFMPEG, "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio, "-c:v", "libx264",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
            check=True,
        )  # fmt: skip
        return path


# One timed run takes ~7 s (quiet) to ~22 s (busy) here: 320x180 is 0.36-1.1 s a frame on 2 cores.
# The memory clips are 150 and 900 frames (64x36 is 0.04-0.08 s a frame): ~70 s for both.
RATIO_CLIP = Clip(320, 180, 10, 3)
RSS_CLIPS = {"10s": Clip(64, 36, 15, 10), "60s": Clip(64, 36, 15, 60)}
QUICK_RATIO_CLIP = Clip(320, 180, 10, 1)
QUICK_RSS_CLIPS = {"10s": Clip(64, 36, 5, 10), "60s": Clip(64, 36, 5, 60)}


# ---------------------------------------------------------------- child process: one measurement


def weight_store() -> WeightStore:
    """The real weights, as the tests find them: weights/ or the mirror, never the network."""
    from models import MODELS, WeightStore

    configured = os.environ.get("WEIGHTS_MIRROR")
    mirror = Path(configured) if configured else ROOT.parent / "shared" / "weights"
    store = WeightStore(ROOT / "weights", mirror, allow_download=False)
    if store.find(MODELS.get(MODEL)) is None:
        raise SystemExit(f"{MODEL} weights missing: run `make setup` (or set WEIGHTS_MIRROR)")
    return store


def kib_field(status: Path, key: str) -> int:
    """A ``kB`` field (VmHWM, VmRSS) of a /proc status file; 0 if the process is gone."""
    try:
        text = status.read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    return 0


class ChildMemory:
    """Samples this process's children (the ffmpegs) from /proc in a thread.

    ``peak_kib``: the largest single child's high-water RSS; ``concurrent_kib``:
    the largest sum of the children's RSS seen at one sample (decoder and
    encoder run together).
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.peak_kib = 0
        self.concurrent_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="child-memory", daemon=True)

    def __enter__(self) -> ChildMemory:
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            total = 0
            for listing in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
                try:
                    pids = Path(listing).read_text().split()
                except OSError:
                    continue
                for pid in pids:
                    status = Path(f"/proc/{pid}/status")
                    self.peak_kib = max(self.peak_kib, kib_field(status, "VmHWM"))
                    total += kib_field(status, "VmRSS")
            self.concurrent_kib = max(self.concurrent_kib, total)


def cpu_seconds() -> float:
    """User + system CPU time so far of this process and its reaped children (the ffmpegs)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(case: str, clip: Path) -> dict[str, Any]:
    import numpy as np

    from media import probe
    from media.reader import decode_all
    from models.device import usable_cpus
    from tasks import EngineCache, Resources, TaskContext, UpscaleTask

    store = weight_store()
    engines = EngineCache(store)
    resources = Resources(store=store, engines=engines)
    task = UpscaleTask()
    params = task.parse(PARAMS)
    config = UpscaleTask.engine_config(params)  # checked below to be the engine the task used
    info = probe(clip, resources.tools, resources.limits)
    engine = engines.get(config)
    frames = decode_all(info, resources.tools) if case == "inference" else None
    engine(
        np.zeros(
            (engine.frames_per_call(info.height, info.width), info.height, info.width, 3), dtype=np.uint8
        )
    )  # warm-up
    rss_ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = ChildMemory(enabled=case == "memory")
    if frames is not None:
        step = engine.frames_per_call(info.height, info.width)
        cpu, start = cpu_seconds(), time.perf_counter()
        for index in range(0, len(frames), step):
            engine(frames[index : index + step])
        seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        count = len(frames)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as work, children:
            cpu, start = cpu_seconds(), time.perf_counter()
            result = task.run(clip, params, TaskContext(Path(work), resources))
            seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        count = result.frame_count
        if engines.get(config) is not engine:
            raise RuntimeError("UpscaleTask loaded its own engine: the warm-up did not cover it")
    return {
        "case": case,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "frames": count,
        "batch_size": engine.frames_per_call(info.height, info.width),
        "tile": engine.tile,
        "threads": usable_cpus(),
        "rss_ready_kib": rss_ready,
        "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "children_peak_kib": children.peak_kib,
        "children_concurrent_kib": children.concurrent_kib,
    }


def serve(case: str, clip: Path) -> int:
    """Child process: one measurement; its JSON is the last line on stdout."""
    protocol = sys.stdout
    sys.stdout = sys.stderr  # anything else that prints stays off the protocol
    print(json.dumps(measure(case, clip)), file=protocol, flush=True)
    return 0


def run_child(case: str, clip: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.pipeline", "--case", case, "--clip", str(clip)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-20:])
        raise RuntimeError(f"bench child {case} {clip.name} failed (exit {done.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# ---------------------------------------------------------------- parent: clips, rounds, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="rounds of the timed pair (default 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="a 1 s ratio clip and 5 fps memory clips")
    parser.add_argument("--case", choices=(*CASES, "memory"), help=argparse.SUPPRESS)
    parser.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return serve(args.case, args.clip)
    rounds = max(1, args.rounds or (1 if args.quick else 3))
    ratio_clip = QUICK_RATIO_CLIP if args.quick else RATIO_CLIP
    rss_clips = QUICK_RSS_CLIPS if args.quick else RSS_CLIPS

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-clips-") as tmp:
        directory = Path(tmp)
        ratio_path = ratio_clip.make(directory)
        rss_paths = {name: clip.make(directory) for name, clip in rss_clips.items()}
        times: dict[str, list[float]] = {case: [] for case in CASES}
        cpu: dict[str, list[float]] = {case: [] for case in CASES}
        last: dict[str, dict[str, Any]] = {}
        for index in range(rounds):
            order = CASES if index % 2 == 0 else CASES[::-1]  # A B, B A: linear drift cancels
            for case in order:
                last[case] = run_child(case, ratio_path)
                times[case].append(last[case]["seconds"])
                cpu[case].append(last[case]["cpu_seconds"])
        memory = {name: run_child("memory", path) for name, path in rss_paths.items()}
    parent = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    elapsed = time.perf_counter() - started
    note = f"whole benchmark {elapsed:.0f} s; this parent process peaked at {mib(parent):.0f} MiB"
    report(ratio_clip, times, cpu, last, rss_clips, memory, note)
    return 0


def mib(kib: int) -> float:
    return kib / 1024.0


def report(
    ratio_clip: Clip,
    times: dict[str, list[float]],
    cpu: dict[str, list[float]],
    last: dict[str, dict[str, Any]],
    rss_clips: dict[str, Clip],
    memory: dict[str, dict[str, Any]],
    note: str,
) -> None:
    medians = {case: statistics.median(values) for case, values in times.items()}
    e2e = last["e2e"]
    if last["inference"]["frames"] != e2e["frames"]:
        print(f"warning: inference ran {last['inference']['frames']} frames, e2e {e2e['frames']}")
    rounds = len(times["e2e"])
    print(f"{MODEL} x4, CPU fp32, {e2e['threads']} threads, tile {e2e['tile']}, batch {e2e['batch_size']}")
    print(f"overhead clip: {ratio_clip.describe()}; each run in a fresh process,")
    print(f"{rounds} rounds alternating e2e/inference (A B, B A ...), medians; model load + warm-up untimed")
    cpu_medians = {case: statistics.median(values) for case, values in cpu.items()}
    print(f"{'case':10} {'median s':>9} {'s/frame':>8} {'min s':>8} {'max s':>8} {'CPU s':>7}  runs (wall s)")
    for case in CASES:
        values = times[case]
        frames = last[case]["frames"]
        runs = " ".join(f"{value:.2f}" for value in values)
        print(
            f"{case:10} {medians[case]:9.2f} {medians[case] / frames:8.3f} "
            f"{min(values):8.2f} {max(values):8.2f} {cpu_medians[case]:7.2f}  {runs}"
        )
    ratio = medians["e2e"] / medians["inference"]
    paired = [a / b for a, b in zip(times["e2e"], times["inference"], strict=True)]
    print(f"e2e / inference: {ratio:.3f} (target <= 1.10)")
    rounds_text = " ".join(f"{value:.2f}" for value in paired)
    print(f"per round (adjacent runs): {rounds_text}; median {statistics.median(paired):.3f}")
    cpu_ratio = cpu_medians["e2e"] / cpu_medians["inference"]
    print(
        f"CPU time (process + ffmpeg children), e2e / inference: {cpu_ratio:.3f}; less hurt by a busy machine"
    )
    print()
    print("memory: the full UpscaleTask once per clip, fresh process each; peak RSS in MiB")
    header = f"{'wall s':>7} {'python':>7} {'at start':>9} {'ffmpeg':>7} {'ffmpeg sum':>11}"
    print(f"{'clip':5} {'description':37} {header}")
    for name, clip in rss_clips.items():
        row = memory[name]
        print(
            f"{name:5} {clip.describe():37} {row['seconds']:7.1f} {mib(row['rss_kib']):7.1f} "
            f"{mib(row['rss_ready_kib']):9.1f} {mib(row['children_peak_kib']):7.1f} "
            f"{mib(row['children_concurrent_kib']):11.1f}"
        )
    print("(python: ru_maxrss; at start: after model load and warm-up; ffmpeg: the largest child's VmHWM;")
    print(" ffmpeg sum: the most RSS the children held at once)")
    short, long = memory["10s"], memory["60s"]
    rss_ratio = long["rss_kib"] / short["rss_kib"]
    children_ratio = long["children_peak_kib"] / max(1, short["children_peak_kib"])
    print(f"60 s / 10 s peak RSS: python {rss_ratio:.3f}, ffmpeg {children_ratio:.3f} (target <= 1.05)")
    print(f"({note})")
    print()
    print(f"frames: {e2e['frames']}")
    print(f"e2e_seconds: {medians['e2e']:.3f}")
    print(f"inference_seconds: {medians['inference']:.3f}")
    for name in ("10s", "60s"):
        print(f"rss_{name}_kib: {memory[name]['rss_kib']}")
        print(f"rss_growth_{name}_kib: {memory[name]['rss_kib'] - memory[name]['rss_ready_kib']}")
        print(f"ffmpeg_rss_{name}_kib: {memory[name]['children_peak_kib']}")
    print(f"ffmpeg_rss_60s_over_10s: {children_ratio:.3f}")
    print(f"e2e_over_inference_paired_median: {statistics.median(paired):.2f}")
    print(f"e2e_cpu_over_inference_cpu: {cpu_ratio:.2f}")
    print(f"rss_60s_over_10s: {rss_ratio:.3f}")
    print(f"e2e_over_inference: {ratio:.2f}")


if __name__ == "__main__":
    sys.exit(main())
