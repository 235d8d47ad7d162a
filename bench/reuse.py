"""Reuse benchmark: lossless temporal reuse on and off, on held frames and on frames that never repeat.

Three generated clips, 320x180 at 24 fps, realesr-animevideov3 x4 on the CPU:

* ``threes``: limited animation drawn on threes (8 drawings a second, common in
  TV anime): ffmpeg's testsrc2 at 8 fps resampled to 24 fps, so every picture
  shows for three frames; encoded losslessly, as the repeated frames of a real
  source are only reusable when they decode bit-identical;
* ``twos``: the same drawn on twos (testsrc2 at 12 fps): half the frames are
  computed, so no more than 2x is possible there;
* ``moving``: testsrc2 at 24 fps, no two frames alike: what reuse costs when it
  never hits (the comparison of each frame with the previous one).

Each case is ``python test_upscale_local.py`` in a fresh process, with and
without ``--no-reuse``, interleaved (on, off, off, on, ...) over ``--rounds``;
the time compared is the task's own ``processingSeconds`` (probe, model load,
decode, inference, encode), not the interpreter's start-up. Every output is
decoded and compared frame by frame (``ffmpeg -f framemd5``) with the same
clip's output without reuse: ``reuse_identical`` is true only when every pair
is identical.

    python -m bench.reuse [--rounds 2] [--quick]

Key lines: ``reuse_speedup: X.XX`` (threes, off / on), ``reuse_speedup_twos``, ``reuse_skip_rate``,
``reuse_cost_no_repeats: X.XXX`` (moving clip, on / off; 1.0 = free) and
``reuse_identical: true|false``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FFMPEG = ["ffmpeg", "-v", "error", "-y", "-nostdin"]
SIZE = "320x180"
CLIPS = {  # lavfi graphs; {d}: seconds
    "threes": "testsrc2=s=320x180:r=8:d={d},fps=24",
    "twos": "testsrc2=s=320x180:r=12:d={d},fps=24",
    "moving": "testsrc2=s=320x180:r=24:d={d}",
}


def make_clip(directory: Path, name: str, seconds: float) -> Path:
    path = directory / f"{name}.mkv"
    source = CLIPS[name].format(d=seconds)
    lossless = ["-c:v", "libx264", "-qp", "0", "-pix_fmt", "yuv444p"]
    subprocess.run([*FFMPEG, "-f", "lavfi", "-i", source, *lossless, str(path)], check=True)
    return path


def upscale(clip: Path, out: Path, reuse: bool) -> dict[str, Any]:
    """One fresh ``test_upscale_local.py`` process; its completion metadata."""
    argv = [sys.executable, str(ROOT / "test_upscale_local.py"), "--input", str(clip), "--output", str(out),
            "--scale", "4", "--device", "cpu", "--model", "realesr-animevideov3",
            "--no-validation"]  # fmt: skip
    if not reuse:
        argv.append("--no-reuse")
    done = subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, text=True)
    metadata: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{") :])
    metadata["path"] = str(out / f"{clip.stem}_upscaled.mp4")
    return metadata


def frame_hashes(path: str) -> list[str]:
    """The MD5 of every decoded frame, in order."""
    done = subprocess.run([*FFMPEG, "-i", path, "-map", "0:v", "-f", "framemd5", "-"],
                          check=True, capture_output=True, text=True)  # fmt: skip
    return [line.rsplit(",", 1)[1].strip() for line in done.stdout.splitlines() if not line.startswith("#")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="0.5 s clips, one round")
    args = parser.parse_args()
    rounds, seconds = (1, 0.5) if args.quick else (args.rounds, 2.0)
    times: dict[tuple[str, bool], list[float]] = {}
    skip: dict[str, float] = {}
    identical = True
    with tempfile.TemporaryDirectory(prefix="bench-reuse-") as tmp:
        work = Path(tmp)
        for name in CLIPS:
            clip = make_clip(work, name, seconds)
            reference: list[str] | None = None
            for round_ in range(rounds):
                for reuse in (True, False) if round_ % 2 == 0 else (False, True):
                    metadata = upscale(clip, work / f"{name}-{round_}-{reuse}", reuse)
                    times.setdefault((name, reuse), []).append(float(metadata["processingSeconds"]))
                    hashes = frame_hashes(metadata["path"])
                    reference = reference if reference is not None else hashes
                    identical &= hashes == reference and len(hashes) == metadata["frameCount"]
                    if reuse:
                        skip[name] = float(metadata["skipRate"])
    medians = {key: statistics.median(values) for key, values in times.items()}
    print(f"{SIZE}, realesr-animevideov3 x4, CPU fp32, {rounds} interleaved rounds, task seconds (median)")
    print(f"{'clip':8} {'reuse on':>9} {'reuse off':>10} {'skip rate':>10}")
    for name in CLIPS:
        print(f"{name:8} {medians[name, True]:9.2f} {medians[name, False]:10.2f} {skip[name]:10.3f}")
    print(f"reuse_skip_rate: {skip['threes']:.3f}")
    print(f"reuse_speedup_twos: {medians['twos', False] / medians['twos', True]:.2f}")
    print(f"reuse_cost_no_repeats: {medians['moving', True] / medians['moving', False]:.3f}")
    print(f"reuse_speedup: {medians['threes', False] / medians['threes', True]:.2f}")
    print(f"reuse_identical: {'true' if identical else 'false'}")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
