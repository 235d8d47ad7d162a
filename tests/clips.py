"""Test clips generated with ffmpeg's lavfi sources: tiny, a second or two, one per case."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path
from typing import Any

FFMPEG = ["ffmpeg", "-v", "error", "-y", "-nostdin"]
TESTSRC = "testsrc2=s=64x36:r=10:d=1"
SINE = "sine=f=440:r=48000:d=1"
GOP25_INPUTS = ["-f", "lavfi", "-i", "testsrc2=s=64x48:r=10:d=6",
                "-f", "lavfi", "-i", "sine=f=440:r=48000:d=6"]  # fmt: skip
VFR_SELECT = "select='not(between(n\\,3\\,6)+between(n\\,30\\,44))'"
GOP25_CODECS = ["-c:v", "libx264", "-g", "25", "-bf", "3", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"]

# name → ffmpeg arguments between the program name and the output file
RECIPES: dict[str, list[str]] = {
    "audio": ["-f", "lavfi", "-i", TESTSRC, "-f", "lavfi", "-i", SINE,
              "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"],
    "silent": ["-f", "lavfi", "-i", TESTSRC, "-c:v", "libx264", "-pix_fmt", "yuv420p"],
    "odd": ["-f", "lavfi", "-i", "testsrc2=s=64x36:r=10:d=1", "-vf", "scale=33:19", "-c:v", "libx264",
            "-pix_fmt", "yuv444p"],
    "vfr": ["-f", "lavfi", "-i", "testsrc2=s=64x36:r=10:d=2",
            "-vf", "select='not(between(n,3,6)+between(n,12,13))'", "-fps_mode", "vfr",
            "-c:v", "libx264", "-pix_fmt", "yuv420p"],
    "10bit": ["-f", "lavfi", "-i", TESTSRC, "-c:v", "libx264", "-pix_fmt", "yuv420p10le"],
    # Left half red, right half blue (rotated.mp4 adds the display rotation, see make_clip).
    "upright": ["-f", "lavfi", "-i", "color=c=red:s=32x36:r=10:d=1", "-f", "lavfi", "-i",
                "color=c=blue:s=32x36:r=10:d=1", "-filter_complex", "[0][1]hstack",
                "-c:v", "libx264", "-pix_fmt", "yuv420p"],
    # Saturated colour bars tagged BT.601 (SMPTE 170M) limited range.
    "bt601": ["-f", "lavfi", "-i", "smptebars=s=64x36:r=10:d=1", "-vf", "scale=out_color_matrix=bt601",
              "-c:v", "libx264", "-pix_fmt", "yuv420p", "-color_primaries", "smpte170m",
              "-color_trc", "smpte170m", "-colorspace", "smpte170m", "-color_range", "tv"],
    "webm": ["-f", "lavfi", "-i", TESTSRC, "-f", "lavfi", "-i", SINE, "-c:v", "libvpx-vp9",
             "-deadline", "realtime", "-c:a", "libopus", "-shortest", "-f", "webm"],
    "pcm": ["-f", "lavfi", "-i", TESTSRC, "-f", "lavfi", "-i", SINE, "-c:v", "libx264", "-pix_fmt", "yuv420p",
            "-c:a", "pcm_s16le", "-shortest", "-f", "matroska"],
    "wide": ["-f", "lavfi", "-i", "testsrc2=s=1040x16:r=10:d=0.3", "-c:v", "libx264", "-pix_fmt", "yuv420p"],
    "long": ["-f", "lavfi", "-i", "color=c=black:s=16x16:r=1:d=3", "-vf", "settb=1/1000,setpts=N*18000000",
             "-fps_mode", "passthrough", "-video_track_timescale", "1000", "-c:v", "libx264"],
    "huge": ["-f", "lavfi", "-i", "color=c=black:s=8000x8000:r=1:d=1",
             "-c:v", "libx264", "-preset", "ultrafast"],
    "audio_only": ["-f", "lavfi", "-i", SINE, "-c:a", "aac", "-f", "mp4"],
    "faststart": ["-f", "lavfi", "-i", "testsrc2=s=64x36:r=10:d=3", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                  "-movflags", "+faststart"],
    "clip20": ["-f", "lavfi", "-i", "testsrc2=s=64x36:r=10:d=20", "-c:v", "libx264", "-pix_fmt", "yuv420p"],
    # 60 frames: a few seconds of work, long enough for heartbeats and kills mid-job
    "clip6": ["-f", "lavfi", "-i", "testsrc2=s=64x36:r=10:d=6", "-c:v", "libx264", "-pix_fmt", "yuv420p"],
    # split jobs: 3 s with audio, a 12-frame GOP with B-frames, so 1 s segments are cut mid-GOP
    "split3": ["-f", "lavfi", "-i", "testsrc2=s=64x36:r=10:d=3", "-f", "lavfi", "-i",
               "sine=frequency=440:duration=3", "-c:v", "libx264", "-g", "12", "-bf", "2",
               "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest"],
    # the split acceptance test: 60 s with audio at 6/s; the scroll moves every frame 4 px across and 2 down,
    # so neighbouring frames are 10-12 dB of PSNR apart (a frame shifted at a cut cannot pass for its own)
    "split60": ["-f", "lavfi", "-i", "testsrc2=s=64x36:r=6:d=60,scroll=h=0.07:v=0.05", "-f", "lavfi", "-i",
                "sine=frequency=440:duration=60", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
                "-shortest"],
    "clip60": ["-f", "lavfi", "-i", "testsrc2=s=64x36:r=10:d=60", "-c:v", "libx264", "-pix_fmt", "yuv420p"],
    # 28 of 40 frames kept at irregular times; Matroska claims 10/s (DefaultDuration) and counts nothing.
    # The noise makes the frames, not the header, the bulk of the file (vfr_mkv_cut cuts it in half).
    "vfr_mkv": ["-f", "lavfi", "-i", "testsrc2=s=64x36:r=10:d=4",
                "-vf", "select='not(mod(n\\,3))+gt(random(0)\\,0.5)',noise=alls=60:allf=t",
                "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "matroska"],
    "mkv10": ["-f", "lavfi", "-i", "testsrc2=s=64x36:r=10:d=10", "-c:v", "libx264", "-pix_fmt", "yuv420p",
              "-f", "matroska"],
    "ts2": ["-f", "lavfi", "-i", "testsrc2=s=64x36:r=10:d=2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
            "-f", "mpegts"],
    # Segment cases (tests/media/test_segments.py): 6 s at 10/s with audio, B-frames, a keyframe every 25
    # frames so ranges start mid-GOP. gop25_ts: MPEG-TS, first pts 1.6 s, video 21 ms after the audio; its
    # demuxer seeks to any packet. late_*: the video starts 0.5 s after the audio (late_mp4, remuxed from
    # late_ts, keeps it in an edit list). vfr_*: frames 3-6 and 30-44 dropped, the rest keep their times.
    "gop25": [*GOP25_INPUTS, *GOP25_CODECS],
    "gop25_ts": [*GOP25_INPUTS, *GOP25_CODECS, "-f", "mpegts"],
    "late_ts": ["-itsoffset", "0.5", *GOP25_INPUTS, *GOP25_CODECS, "-f", "mpegts"],
    "vfr_ts": ["-itsoffset", "0.5", *GOP25_INPUTS, "-vf", VFR_SELECT, "-fps_mode", "vfr", *GOP25_CODECS,
               "-f", "mpegts"],
    "vfr_late_mkv": ["-itsoffset", "0.5", *GOP25_INPUTS, "-vf", VFR_SELECT, "-fps_mode", "vfr", *GOP25_CODECS,
                     "-f", "matroska"],
}  # fmt: skip

TEXT_FILES = {
    "hls": "#EXTM3U\n#EXT-X-VERSION:3\n#EXTINF:1.0,\nhttp://169.254.169.254/latest/meta-data\n#EXT-X-ENDLIST\n",
    "ffconcat": "ffconcat version 1.0\nfile /etc/passwd\n",
}


def make_clip(name: str, directory: Path) -> Path:
    """Generate clip ``name`` into ``directory`` (``.mp4`` whatever it really is)."""
    path = directory / f"{name}.mp4"
    if name in TEXT_FILES:
        path.write_text(TEXT_FILES[name])
    elif name == "empty":
        path.write_bytes(b"")
    elif name == "truncated":
        whole = make_clip("audio", directory).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])  # moov is at the end: cut off
    elif name.startswith("rotated"):  # ffmpeg 5.1 writes a rotate tag only when remuxing
        upright = make_clip("upright", directory)
        tag = f"rotate={name.removeprefix('rotated') or 90}"
        subprocess.run(
            [*FFMPEG, "-i", str(upright), "-c", "copy", "-metadata:s:v:0", tag, str(path)], check=True
        )
    elif name == "late_mp4":  # the MP4 muxer keeps a late video start only when remuxing
        late = make_clip("late_ts", directory)
        subprocess.run([*FFMPEG, "-i", str(late), "-c", "copy", "-f", "mp4", str(path)], check=True)
    elif name == "cut":
        whole = make_clip("faststart", directory).read_bytes()
        path.write_bytes(whole[: len(whole) * 6 // 10])  # moov first: probes fine, frames missing
    elif name == "vfr_mkv_cut":
        whole = make_clip("vfr_mkv", directory).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])  # header and durations intact, half the clusters gone
    elif name == "liar_mkv":  # 10 s of frames behind a header that says 1 s
        path.write_bytes(_mkv_claiming_one_second(make_clip("mkv10", directory).read_bytes()))
    elif name == "liar_ts":  # four 2 s streams back to back: the timestamps restart, ffprobe sees 2 s
        path.write_bytes(make_clip("ts2", directory).read_bytes() * 4)
    else:
        subprocess.run([*FFMPEG, *RECIPES[name], str(path)], check=True)
    return path


def _mkv_claiming_one_second(data: bytes) -> bytes:
    """A 10 s Matroska file whose Segment ``Duration`` and video ``DURATION`` tag both say 1 s."""
    patched = bytearray(data)
    duration = patched.index(b"\x44\x89\x88")  # Duration element, an 8-byte float of milliseconds
    assert struct.unpack(">d", patched[duration + 3 : duration + 11]) == (10000.0,)
    patched[duration + 3 : duration + 11] = struct.pack(">d", 1000.0)
    tag = patched.index(b"00:00:10.000000000")
    patched[tag : tag + 18] = b"00:00:01.000000000"
    return bytes(patched)


def ffprobe(path: Path, *, count: bool = False) -> dict[str, Any]:
    """ffprobe's JSON for ``path`` (streams and format); ``count`` decodes to count frames."""
    args = ["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json"]
    args += ["-count_frames"] if count else []
    result = subprocess.run([*args, str(path)], check=True, capture_output=True, text=True)
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def stream(report: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next((s for s in report["streams"] if s["codec_type"] == kind), None)


def audio_md5(path: Path) -> str:
    """MD5 of the first audio stream's packets, as stored (no decode)."""
    args = [*FFMPEG, "-i", str(path), "-map", "0:a:0", "-c", "copy", "-f", "md5", "-"]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()
