"""Caption benchmark: CAPTION_RENDER's burn-in against the same encode without captions.

The question from issue 5: what do burned-in captions cost on top of the encode
they ride in (target <= 1.10)? Three cases, on one generated 1280x720 30 fps
clip with AAC audio (lavfi testsrc2 + sine), all at the same CRF, encoder and
output size:

* ``captions`` (A): ``CaptionRenderTask.run`` with a realistic scenario: one
  cue per 1.3 s covering ~90 % of the clip, one or two lines each, Korean and
  Latin text in the default font (Noto Sans CJK KR, outline and shadow),
  animations fade, pop, karaoke, typewriter and slide-up, every fourth cue
  restyled (top, yellow).
* ``plain`` (C): no ``ass`` filter at all: the task's own steps (probe,
  :func:`media.render.burn_command` with ``overlay=()``, ``run_render``,
  ``finish_output``, which counts the output's frames). A/C is the headline,
  the issue's "the same encode without captions".
* ``empty`` (B): the task with a scenario of zero cues. The ``ass`` filter is
  still in the graph (libass starts, draws nothing), so A/B is the cost of
  drawing the cues alone, and B/C that of the filter being there.

What is timed is the whole ``run`` (scenario parsing, the ``fc-list`` font
check, the ASS file, the ffmpeg render, the output check); the encoder choice
(an NVENC probe, one ffmpeg run cached per process) is made before the clock
starts, in every case. ffmpeg runs at nice 0 here (``TOOLS_NICE``), not the
worker's 10. Every measurement runs in a fresh process. The machine is shared
and drifts, so the cases alternate (A C B, B C A, ...) over ``--rounds`` and
medians are compared. Also printed, for reading through the noise: the median
of each round's own ratio (adjacent runs, so drift between rounds cancels); the
ratio of the fastest runs (noise only ever adds time); and the ratio of CPU
seconds, this process plus its ffmpeg children (user + sys of the reaped
children, ``RUSAGE_CHILDREN``; ffmpeg does all the work), which other jobs
disturb less than wall time. When the wall ratios disagree, runs spread widely:
rerun with more ``--rounds`` or on a quieter machine. A wall ratio well above
the CPU ratio, steadily over rounds, means the captions cost parallelism rather
than work (ffmpeg 5.1 filters, libass included, in the one thread that feeds
x264). Every case must report the same output frame count; the table shows it.

    python -m bench.captions [--rounds 4] [--quick]

Key lines: ``captions_over_plain: X.XX`` (headline) and ``captions_over_empty: X.XX``.
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
from pathlib import Path
from typing import Any

from bench.pipeline import Clip, cpu_seconds

ROOT = Path(__file__).resolve().parent.parent
CASES = ("captions", "plain", "empty")
"""In the order of a round: the headline pair, captions and plain, always run next to each other."""
QUALITY = 23
"""CRF (or NVENC CQ) of every case; the task's default."""

# One 10 s run of x264 ``medium`` at 1280x720 takes ~8 s (quiet) to ~20 s (busy) on 2 cores; each child
# also spends ~5-10 s importing (``tasks`` pulls in torch), untimed. 4 rounds of 3 cases: ~3-4 min in all.
CLIP = Clip(1280, 720, 30, 10)
QUICK_CLIP = Clip(1280, 720, 30, 5)
TOOLS_NICE = 0
"""ffmpeg's niceness here. The worker's default, 10, lets any other job on a shared machine starve the
encoder, so the benchmark would time the neighbours; on a quiet machine the two give the same times."""
CUE_SECONDS = 4 / 3
"""One cue per this many seconds of clip: 8 on the 10 s clip, 4 on the quick one."""

STYLE = {"size": 48, "outline": 3, "shadow": 2}
"""The scenario's style; the font is the default, Noto Sans CJK KR."""

LINES: tuple[tuple[str, str], ...] = (
    ("안녕하세요, 여러분!", "fade"),
    ("오늘은 서울의 숨은 맛집을\n소개해 드릴게요", "typewriter"),
    ("Welcome back to the channel", "pop"),
    ("첫 번째 가게는 망원시장 근처에 있어요", "karaoke"),
    ("The line was already thirty minutes long\n줄이 벌써 30분이나 됐어요", "fade"),
    ("떡볶이 한 접시에 4,000원!", "pop"),
    ("진짜 맛있다 ㅋㅋㅋ", "slide-up"),
    ("Spicy but sweet, 매콤달콤", "karaoke"),
    ("Next stop: Hongdae\n다음은 홍대입니다", "typewriter"),
    ("사장님이 직접 만드신 만두예요", "fade"),
    ("Don't forget to subscribe!", "pop"),
    ("구독과 좋아요 부탁드려요", "karaoke"),
    ("See you next time\n다음에 또 만나요", "fade"),
)
"""Cue texts and animations, used in turn."""

RESTYLE = {"position": "top", "color": "#FFE14D", "size": 40}
"""Every fourth cue's style override."""


def scenario(seconds: float) -> dict[str, Any]:
    """The ``captions`` scenario for a ``seconds`` long clip: one cue per ``CUE_SECONDS``, ~90 % covered."""
    count = max(1, round(seconds / CUE_SECONDS))
    slot = seconds / count
    cues: list[dict[str, Any]] = []
    for index in range(count):
        text, animation = LINES[index % len(LINES)]
        cue: dict[str, Any] = {
            "start": round(index * slot + 0.05, 2),
            "end": round((index + 1) * slot - 0.08, 2),
            "text": text,
            "animation": animation,
        }
        if index % 4 == 3:
            cue["style"] = RESTYLE
        cues.append(cue)
    return {"version": "1.3", "style": STYLE, "cues": cues}


# ---------------------------------------------------------------- child process: one measurement


def run_task(case: str, clip: Path, seconds: float, work_dir: Path) -> tuple[int, str]:
    """``CaptionRenderTask.run`` with the ``captions`` or the ``empty`` scenario: (frames, encoder)."""
    from media import Tools
    from tasks import Resources, TaskContext
    from tasks.captions import CaptionRenderTask

    task = CaptionRenderTask()
    cues = scenario(seconds) if case == "captions" else {"version": "1.3", "style": STYLE, "cues": []}
    params = task.parse({"scenario": cues, "options": {"quality": QUALITY}})
    result = task.run(clip, params, TaskContext(work_dir, Resources(tools=Tools(nice=TOOLS_NICE))))
    return result.frame_count, result.encoder


def run_plain(clip: Path, work_dir: Path) -> tuple[int, str]:
    """The task's steps with no ``ass`` filter: probe, one render, the output check: (frames, encoder)."""
    from media import MediaLimits, Tools, choose_encoder, probe
    from media.render import Frame, burn_command, finish_output, partial_path, run_render

    tools = Tools(nice=TOOLS_NICE)
    info = probe(clip, tools, MediaLimits())
    frame = Frame.fit(info.width, info.height, None, None)
    encoder = choose_encoder(tools, frame.width, frame.height, gpu=True)
    target = work_dir / "output.mp4"
    command = burn_command(
        info, target, frame=frame, fps=None, encoder=encoder, quality=QUALITY, tools=tools, overlay=()
    )
    encoded = 0

    def on_frames(done: int) -> None:
        nonlocal encoded
        encoded = done

    try:
        run_render(command, tools=tools, name="plain render", on_frames=on_frames)
        output = finish_output(target, tools, encoder, written=encoded, expected=info.frames)
    finally:
        partial_path(target).unlink(missing_ok=True)
    return output.frames, output.encoder


def measure(case: str, clip: Path, seconds: float) -> dict[str, Any]:
    from media import MediaLimits, Tools, choose_encoder, probe

    if case != "plain":
        import tasks.captions  # noqa: F401  (the import, torch included, stays off the clock)
    tools = Tools(nice=TOOLS_NICE)
    info = probe(clip, tools, MediaLimits())  # also brings the clip into the page cache
    choose_encoder(tools, info.width, info.height, gpu=True)  # the cached NVENC probe, untimed
    with tempfile.TemporaryDirectory(prefix="bench-captions-") as work:
        cpu, start = cpu_seconds(), time.perf_counter()
        if case == "plain":
            frames, encoder = run_plain(clip, Path(work))
        else:
            frames, encoder = run_task(case, clip, seconds, Path(work))
        elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    return {"case": case, "seconds": elapsed, "cpu_seconds": cpu, "frames": frames, "encoder": encoder}


def serve(case: str, clip: Path, seconds: float) -> int:
    """Child process: one measurement; its JSON is the last line on stdout."""
    protocol = sys.stdout
    sys.stdout = sys.stderr  # anything else that prints stays off the protocol
    print(json.dumps(measure(case, clip, seconds)), file=protocol, flush=True)
    return 0


def run_child(case: str, clip: Path, seconds: float) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.captions", "--case", case, "--clip", str(clip)]
    command += ["--seconds", str(seconds)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-20:])
        raise RuntimeError(f"bench child {case} failed (exit {done.returncode}):\n{tail}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# ---------------------------------------------------------------- parent: clip, rounds, report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="rounds of the three cases (default 4; 2 with --quick)")
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_CLIP.seconds} s clip")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        return serve(args.case, args.clip, args.seconds)
    rounds = max(1, args.rounds or (2 if args.quick else 4))
    clip = QUICK_CLIP if args.quick else CLIP

    started = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
    with tempfile.TemporaryDirectory(prefix="bench-captions-clip-") as tmp:
        path = clip.make(Path(tmp))
        for index in range(rounds):
            order = CASES if index % 2 == 0 else CASES[::-1]  # A C B, B C A: linear drift cancels
            for case in order:
                runs[case].append(run_child(case, path, clip.seconds))
    report(clip, runs, f"whole benchmark {time.perf_counter() - started:.0f} s")
    return 0


def column(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [float(run[key]) for run in runs]


def paired(runs: dict[str, list[dict[str, Any]]], top: str, bottom: str) -> list[float]:
    """Each round's own ``top``/``bottom`` wall-time ratio."""
    return [a / b for a, b in zip(column(runs[top], "seconds"), column(runs[bottom], "seconds"), strict=True)]


def report(clip: Clip, runs: dict[str, list[dict[str, Any]]], note: str) -> None:
    wall = {case: statistics.median(column(runs[case], "seconds")) for case in CASES}
    cpu = {case: statistics.median(column(runs[case], "cpu_seconds")) for case in CASES}
    frames = {case: sorted({int(run["frames"]) for run in runs[case]}) for case in CASES}
    print_table(clip, runs, wall, cpu, frames)
    if len({tuple(counts) for counts in frames.values()}) != 1:
        print(f"warning: the cases encoded different frame counts: {frames}")
    pairs = {bottom: statistics.median(paired(runs, "captions", bottom)) for bottom in ("plain", "empty")}
    ratios = {bottom: wall["captions"] / wall[bottom] for bottom in ("plain", "empty")}
    cpu_ratios = {bottom: cpu["captions"] / cpu[bottom] for bottom in ("plain", "empty")}
    for bottom in ("plain", "empty"):
        fastest = min(column(runs["captions"], "seconds")) / min(column(runs[bottom], "seconds"))
        per_round = " ".join(f"{value:.3f}" for value in paired(runs, "captions", bottom))
        print(f"captions / {bottom}: {ratios[bottom]:.3f} wall medians (target <= 1.10)")
        print(
            f"  per round {per_round}, median {pairs[bottom]:.3f}; "
            f"fastest runs {fastest:.3f}; CPU {cpu_ratios[bottom]:.3f}"
        )
    print("(plain: no ass filter; empty: the ass filter with zero cues; CPU: process + ffmpeg children)")
    print(f"({note})")
    print()
    print(f"frames: {frames['captions'][0]}")
    for case in CASES:
        print(f"{case}_seconds: {wall[case]:.3f}")
    for bottom in ("empty", "plain"):
        print(f"captions_over_{bottom}_paired_median: {pairs[bottom]:.3f}")
        print(f"captions_cpu_over_{bottom}_cpu: {cpu_ratios[bottom]:.3f}")
    print(f"captions_over_empty: {ratios['empty']:.2f}")
    print(f"captions_over_plain: {ratios['plain']:.2f}")


def print_table(
    clip: Clip,
    runs: dict[str, list[dict[str, Any]]],
    wall: dict[str, float],
    cpu: dict[str, float],
    frames: dict[str, list[int]],
) -> None:
    """What was run, then one row per case: wall-time median and spread, CPU median, frame counts."""
    encoder = runs["captions"][-1]["encoder"]
    animations = ", ".join(sorted({animation for _, animation in LINES}))
    cpus = len(os.sched_getaffinity(0))
    print(f"CAPTION_RENDER burn-in vs the same encode without captions: {encoder} CRF {QUALITY}, {cpus} CPUs")
    print(f"clip: {clip.describe()}")
    cues = len(scenario(clip.seconds)["cues"])
    print(f"captions: {cues} cues, Korean + Latin in Noto Sans CJK KR; {animations}")
    print(
        f"each run in a fresh process, {len(runs['captions'])} rounds alternating (A C B, B C A ...), medians"
    )
    header = f"{'median s':>9} {'min s':>7} {'max s':>7} {'CPU s':>7} {'frames':>7}"
    print(f"{'case':9} {header} {'encoder':9} runs (wall s)")
    for case in CASES:
        values = column(runs[case], "seconds")
        counts = ",".join(str(count) for count in frames[case])
        encoders = ",".join(sorted({str(run["encoder"]) for run in runs[case]}))
        print(
            f"{case:9} {wall[case]:9.2f} {min(values):7.2f} {max(values):7.2f} {cpu[case]:7.2f} "
            f"{counts:>7} {encoders:9} {' '.join(f'{value:.2f}' for value in values)}"
        )


if __name__ == "__main__":
    sys.exit(main())
