"""Scale-out benchmark (issue 12): one long clip split over 1 and 2 pinned workers; what splitting costs.

Three variants of the same UPSCALE job (realesr-animevideov3 x4, CPU fp32) on
one generated clip (lavfi testsrc2 + a sine as AAC, a 2 s GOP), each a real
``python -m worker run`` daemon against the embedded AWS (moto's server, in
this process) and a local callback receiver:

* ``split_1``: ``WORKER_SEGMENT_SECONDS`` = clip length / ``--segments``, one
  worker pinned to the first core of ``--cores`` (``taskset -c``);
* ``split_2``: the same split job, two workers, one pinned to each core;
* ``unsplit``: ``WORKER_SEGMENT_SECONDS=0``, one worker on the first core.

Each worker sees one core, so torch (``usable_cpus()`` is the affinity mask),
ffmpeg and x264 (their automatic thread counts follow it too) run one thread
each; ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` are 1 as well. Where the box
has more cores than the workers use, this process (moto, the receiver) is
pinned to the others. The variants run interleaved, A B C A B C, over
``--rounds`` (the machine drifts), every run with fresh queues, bucket, job id
and worker processes; medians are reported.

Per run: ``wall`` from the enqueue to the COMPLETED callback (the workers
are started first and have logged ``consuming``, so interpreter start-up is
outside it; model loading, on each worker's first message, is inside it), and
``cpu``: user + system seconds of the worker processes and all their reaped
children (ffmpeg, ffprobe), from ``wait4`` after a SIGTERM once COMPLETED was
seen: everything each worker did from exec to exit, start-up included (its
share is printed as ``startup``, read from /proc when the worker was ready).
moto and the receiver (this process) are not counted.

``speedup`` = wall_1 / wall_2 (goal >= 1.8 on 2 independent cores: with 2
segments per worker the plan and the merge are all that runs alone);
``overhead`` = cpu_split / cpu_unsplit - 1, both one worker (goal <= 5 %).

    python -m bench.scaleout [--rounds 2] [--seconds 20] [--size 160x90] [--fps 12] [--segments 4]

Key line: ``scaleout: box=... speedup=X.XX ... overhead=+Y.Y%``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from worker.embedded import CallbackReceiver, EmbeddedAWS

ROOT = Path(__file__).resolve().parent.parent
MODEL = "realesr-animevideov3"
PARAMS = {"device": "cpu", "model": MODEL, "scaleFactor": 4}
FFMPEG = ["ffmpeg", "-v", "error", "-y", "-nostdin"]
READY = "consuming "
"""The daemon's log line once it polls its queues (``Worker._loop``)."""
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Variant:
    name: str
    split: bool
    workers: int


VARIANTS = (Variant("split_1", True, 1), Variant("split_2", True, 2), Variant("unsplit", False, 1))


@dataclass
class Run:
    """One variant's measurement."""

    variant: str
    wall: float
    cpu: float
    startup: float
    worker_cpu: list[float]
    frames: int
    segments: int


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path
    startup: float = 0.0
    cpu: float | None = None
    status: int | None = None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Bench:
    aws: EmbeddedAWS
    receiver: CallbackReceiver
    root: Path
    clip: Path
    cores: tuple[int, int]
    segment_seconds: float
    timeout: float
    mirror: Path
    runs: int = 0

    def run(self, variant: Variant) -> Run:
        self.runs += 1
        tag = f"scaleout{self.runs}"
        self.aws.provision(prefix=tag, visibility=300)
        key = f"uploads/{tag}/{self.clip.name}"
        self.aws.client("s3").upload_file(str(self.clip), self.aws.bucket, key)
        seconds = f"{self.segment_seconds:g}" if variant.split else "0"
        workers = [self.start(tag, index, self.cores[index], seconds) for index in range(variant.workers)]
        try:
            for worker in workers:
                self.wait_ready(worker)
            job_id = f"{tag}-{uuid.uuid4().hex[:8]}"
            message = {
                "jobId": job_id, "userId": 1, "taskType": "UPSCALE", "sourceS3Key": key,
                "parameters": PARAMS, "status": "QUEUED",
            }  # fmt: skip
            started = time.monotonic()
            self.aws.client("sqs").send_message(
                QueueUrl=self.aws.queues["cpu"], MessageBody=json.dumps(message)
            )
            done = self.receiver.wait_for(
                lambda item: (
                    item.body.get("jobId") == job_id and item.body.get("status") in ("COMPLETED", "FAILED")
                ),
                timeout=self.timeout,
            )
            wall = time.monotonic() - started
            if done is None or done.body["status"] != "COMPLETED":
                got = "nothing" if done is None else json.dumps(done.body)
                raise RuntimeError(f"{variant.name}: no COMPLETED for {job_id} ({got})\n{logs(workers)}")
        finally:
            for worker in workers:
                stop(worker)
        bad = [worker.status for worker in workers if worker.status != 0]
        if bad:
            raise RuntimeError(f"{variant.name}: a worker exited with {bad}\n{logs(workers)}")
        metadata = done.body.get("metadata") or {}
        spent = [worker.cpu or 0.0 for worker in workers]
        return Run(
            variant.name, wall, sum(spent), sum(worker.startup for worker in workers), spent,
            int(metadata.get("frameCount", 0)), int(metadata.get("segments", 1)),
        )  # fmt: skip

    def start(self, tag: str, index: int, core: int, segment_seconds: str) -> Worker:
        tmp = self.root / tag / f"worker{index}"
        tmp.mkdir(parents=True)
        env = {
            **os.environ,
            **self.aws.environment(
                BACKEND_CALLBACK_URL=self.receiver.url, CALLBACK_ALLOW_PRIVATE_NETWORKS="true",
                WEIGHTS_MIRROR=str(self.mirror), WEIGHTS_OFFLINE="true", WORKER_TMP_DIR=str(tmp),
                WORKER_HEALTH_PORT="0", WORKER_WAIT_SECONDS="1", WORKER_QUEUES="cpu",
                WORKER_SEGMENT_SECONDS=segment_seconds, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
            ),
        }  # fmt: skip
        env.pop("CALLBACK_SECRET", None)
        log = self.root / tag / f"worker{index}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                ["taskset", "-c", str(core), sys.executable, "-m", "worker", "run"],
                cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        return Worker(proc, log)

    def wait_ready(self, worker: Worker) -> None:
        deadline = time.monotonic() + 300
        while READY not in worker.text():
            if worker.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"a worker did not start (exit {worker.proc.poll()}):\n{worker.text()[-3000:]}"
                )
            time.sleep(0.1)
        worker.startup = proc_cpu(worker.proc.pid)


def mirror_dir() -> Path:
    """The weights mirror, as the tests find it (``WEIGHTS_MIRROR`` or ../shared/weights)."""
    configured = os.environ.get("WEIGHTS_MIRROR")
    mirror = Path(configured) if configured else ROOT.parent / "shared" / "weights"
    if not (mirror / "SHA256SUMS").is_file():
        raise SystemExit(f"no weights mirror at {mirror}: run `make setup` (or set WEIGHTS_MIRROR)")
    return mirror


def proc_cpu(pid: int) -> float:
    """User + system seconds of ``pid`` and its reaped children so far (/proc/PID/stat fields 14-17)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11:15]) / TICKS


def stop(worker: Worker, timeout: float = 120) -> None:
    """SIGTERM (a warm stop), then reap with ``wait4``: its rusage covers the worker and reaped children."""
    proc = worker.proc
    if proc.returncode is not None:  # reaped by a poll() while starting: its rusage is lost
        worker.status, worker.cpu = proc.returncode, None
        return
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = worker.status = os.waitstatus_to_exitcode(status)
    worker.cpu = usage.ru_utime + usage.ru_stime


def logs(workers: list[Worker]) -> str:
    return "\n".join(f"--- {worker.log.name}\n{worker.text()[-3000:]}" for worker in workers)


def make_clip(path: Path, width: int, height: int, fps: int, seconds: int) -> None:
    video = f"testsrc2=s={width}x{height}:r={fps}:d={seconds}"
    audio = f"sine=f=440:r=48000:d={seconds}"
    subprocess.run(
        [*FFMPEG, "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio, "-c:v", "libx264",
         "-g", str(2 * fps), "-bf", "2", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )  # fmt: skip


def box() -> str:
    """The CPU's model name from /proc/cpuinfo."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=20, help="clip length (default 20)")
    parser.add_argument("--size", default="160x90", help="clip frame size WxH (default 160x90)")
    parser.add_argument("--fps", type=int, default=12)
    parser.add_argument("--segments", type=int, default=4, help="segments of the split job (default 4)")
    parser.add_argument("--cores", default="0,1", help="the two cores the workers are pinned to")
    parser.add_argument("--timeout", type=float, default=1800, help="per job, seconds")
    args = parser.parse_args()
    width, height = (int(part) for part in args.size.split("x"))
    first, second = (int(part) for part in args.cores.split(","))
    usable = os.sched_getaffinity(0)
    if not {first, second} <= usable or first == second:
        raise SystemExit(f"--cores {args.cores}: need two distinct cores of {sorted(usable)}")
    if args.segments < 2:
        raise SystemExit("--segments: at least 2")
    segment_seconds = args.seconds / args.segments
    mirror = mirror_dir()

    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        root = Path(tmp)
        clip = root / f"{width}x{height}_{args.fps}fps_{args.seconds}s.mp4"
        make_clip(clip, width, height, args.fps, args.seconds)
        rest = usable - {first, second}
        if rest:  # moto and the receiver off the workers' cores
            os.sched_setaffinity(0, rest)
        aws = EmbeddedAWS()
        receiver = CallbackReceiver()
        bench = Bench(aws, receiver, root, clip, (first, second), segment_seconds, args.timeout, mirror)
        results: dict[str, list[Run]] = {variant.name: [] for variant in VARIANTS}
        try:
            print(
                f"clip {width}x{height} {args.fps} fps {args.seconds} s + AAC, {MODEL} x4 CPU fp32; "
                f"split: WORKER_SEGMENT_SECONDS={segment_seconds:g}; workers on cores {first},{second}"
                f"{'' if rest else ' (this process shares them: no other core)'}",
                flush=True,
            )
            for index in range(args.rounds):
                for variant in VARIANTS:
                    run = bench.run(variant)
                    results[variant.name].append(run)
                    per_worker = "+".join(f"{value:.1f}" for value in run.worker_cpu)
                    print(
                        f"  round {index + 1} {run.variant:8} wall={run.wall:.1f}s cpu={run.cpu:.1f}s "
                        f"({per_worker}; startup {run.startup:.1f}) "
                        f"frames={run.frames} segments={run.segments}",
                        flush=True,
                    )
                report_round(index, results)
        finally:
            receiver.stop()
            aws.stop()
    report(results)
    return 0


def report_round(index: int, results: dict[str, list[Run]]) -> None:
    one, two, whole = (results[variant.name][index] for variant in VARIANTS)
    print(
        f"round {index + 1}: wall_1={one.wall:.1f} wall_2={two.wall:.1f} speedup={one.wall / two.wall:.2f} "
        f"cpu_split={one.cpu:.1f} cpu_unsplit={whole.cpu:.1f} overhead={one.cpu / whole.cpu - 1:+.1%}",
        flush=True,
    )


def report(results: dict[str, list[Run]]) -> None:
    def median(name: str, what: str) -> float:
        return statistics.median(float(getattr(run, what)) for run in results[name])

    one, two, whole = (results[variant.name] for variant in VARIANTS)
    wall_1, wall_2 = median("split_1", "wall"), median("split_2", "wall")
    cpu_split, cpu_unsplit = median("split_1", "cpu"), median("unsplit", "cpu")
    paired = statistics.median(a.wall / b.wall for a, b in zip(one, two, strict=True))
    paired_overhead = statistics.median(a.cpu / b.cpu - 1 for a, b in zip(one, whole, strict=True))
    print(
        f"medians of {len(one)} rounds: wall_unsplit={median('unsplit', 'wall'):.1f} "
        f"cpu_split_2={median('split_2', 'cpu'):.1f} (two start-ups); "
        f"startup cpu per worker ~{median('unsplit', 'startup'):.1f} s (inside every cpu figure); "
        f"per-round speedup median {paired:.2f}, overhead median {paired_overhead:+.1%}"
    )
    print(
        f"scaleout: box={box()!r} cores={os.cpu_count()} "
        f"frames={whole[-1].frames} segments={one[-1].segments} "
        f"wall_1={wall_1:.1f} wall_2={wall_2:.1f} speedup={wall_1 / wall_2:.2f} "
        f"cpu_split={cpu_split:.1f} cpu_unsplit={cpu_unsplit:.1f} overhead={cpu_split / cpu_unsplit - 1:+.1%}"
    )
    print("goals: speedup >= 1.8 on 2 independent cores, overhead <= +5.0%")


if __name__ == "__main__":
    sys.exit(main())
