"""The official Real-ESRGAN video pipeline, single process, re-created for the whole-process benchmark.

What xinntao/Real-ESRGAN's ``inference_realesrgan_video.py`` does with one
process (``--num_process_per_gpu 1``, no GPU, ``--fp32``, no face
enhancement, default ``--tile 0 --tile_pad 10 --pre_pad 0``), in the same
order and with the same ffmpeg command lines its ffmpeg-python calls build:

1. build ``SRVGGNetCompact`` (the animevideov3 net, x4) and ``RealESRGANer``
   around it (fp32, CPU; torch's own default thread count, as the script
   leaves it);
2. start ``ffmpeg -i IN -f rawvideo -loglevel error -pix_fmt bgr24 pipe:``,
   then ffprobe the input (size, ``avg_frame_rate`` as a float, audio or not);
3. start ``ffmpeg -f rawvideo -framerate FPS -pix_fmt bgr24 -s WxH -i pipe:
   [-i IN -map 0 -map 1:a -acodec copy] -loglevel error -pix_fmt yuv420p
   -vcodec libx264 OUT -y`` at the output size (x264's default crf and preset);
4. per frame: read one bgr24 frame from the pipe, ``RealESRGANer.enhance(img,
   outscale=S)`` (the x4 net, then a Lanczos resize to xS when S != 4), write
   ``output.astype(uint8).tobytes()`` to the encoder; a tqdm bar on stderr;
5. close the decoder's stdin and wait for it, then the encoder's.

Not copied: the script's ``torch.cuda.synchronize(device)`` after every frame
(it fails on a host without CUDA; on one with CUDA and a CPU run it only syncs
an idle device), its ``mimetypes`` input sniffing and its ``.flv`` remux.

    python -m bench.official_video --input IN --output OUT.mp4 [--outscale 2]

Weights: ``realesr-animevideov3.pth`` from ``WEIGHTS_DIR`` (default ``weights/``)
or ``WEIGHTS_MIRROR``, as a plain file the way the script opens ``weights/NAME.pth``;
never the network. This module does not import vidworker's ``models`` (spandrel
and the rest: seconds of start-up the script does not pay).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import types
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
MODEL = "realesr-animevideov3"
NET_SCALE = 4
FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"


@dataclass(frozen=True)
class VideoMeta:
    """What the script's ``get_video_meta_info`` reads from ffprobe."""

    width: int
    height: int
    fps: float
    audio: bool
    frames: int


def weights_path() -> Path:
    """``MODEL``'s .pth in ``WEIGHTS_DIR`` (default ``weights/``), else in ``WEIGHTS_MIRROR``."""
    places = [os.environ.get("WEIGHTS_DIR") or str(ROOT / "weights"), os.environ.get("WEIGHTS_MIRROR")]
    for place in places:
        if place and (Path(place) / f"{MODEL}.pth").is_file():
            return Path(place) / f"{MODEL}.pth"
    raise SystemExit(f"{MODEL}.pth in neither WEIGHTS_DIR nor WEIGHTS_MIRROR: run `make setup`")


def probe_video(path: Path) -> VideoMeta:
    report = json.loads(
        subprocess.run(
            [FFPROBE, "-show_format", "-show_streams", "-of", "json", str(path)],
            check=True,
            capture_output=True,
        ).stdout
    )
    streams: list[dict[str, Any]] = report["streams"]
    video = next(stream for stream in streams if stream["codec_type"] == "video")
    return VideoMeta(
        width=int(video["width"]),
        height=int(video["height"]),
        fps=float(Fraction(video["avg_frame_rate"])),
        audio=any(stream["codec_type"] == "audio" for stream in streams),
        frames=int(video["nb_frames"]),
    )


def official_enhancer(weights: Path) -> Any:
    """``RealESRGANer`` as the video script builds it for realesr-animevideov3, fp32 on the CPU."""
    import torchvision.transforms.functional as tvf

    # basicsr 1.4.2 imports a torchvision module removed in 0.17; give it the one function it uses
    # (as bench/engine.py does; not imported from there: that module loads skimage and the
    # vidworker engine, start-up this process would otherwise pay for and the script does not).
    shim = types.ModuleType("torchvision.transforms.functional_tensor")
    shim.rgb_to_grayscale = tvf.rgb_to_grayscale  # type: ignore[attr-defined]
    sys.modules.setdefault("torchvision.transforms.functional_tensor", shim)
    from realesrgan import RealESRGANer
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    net = SRVGGNetCompact(
        num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=NET_SCALE, act_type="prelu"
    )
    return RealESRGANer(
        scale=NET_SCALE,
        model_path=str(weights),
        dni_weight=None,
        model=net,
        tile=0,
        tile_pad=10,
        pre_pad=0,
        half=False,
        device=torch.device("cpu"),
    )


def decoder(source: Path) -> subprocess.Popen[bytes]:
    output = ["-f", "rawvideo", "-loglevel", "error", "-pix_fmt", "bgr24", "pipe:"]
    return subprocess.Popen(
        [FFMPEG, "-i", str(source), *output], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )


def encoder(source: Path, meta: VideoMeta, target: Path, outscale: float) -> subprocess.Popen[bytes]:
    width, height = int(meta.width * outscale), int(meta.height * outscale)
    raw = ["-f", "rawvideo", "-framerate", str(meta.fps), "-pix_fmt", "bgr24", "-s", f"{width}x{height}"]
    audio = ["-i", str(source), "-map", "0", "-map", "1:a", "-acodec", "copy"] if meta.audio else []
    video = ["-loglevel", "error", "-pix_fmt", "yuv420p", "-vcodec", "libx264"]
    command = [FFMPEG, *raw, "-i", "pipe:", *audio, *video, str(target), "-y"]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def read_frame(stream: IO[bytes], meta: VideoMeta) -> np.ndarray | None:
    data = stream.read(meta.width * meta.height * 3)
    if not data:
        return None
    return np.frombuffer(data, np.uint8).reshape([meta.height, meta.width, 3])


def upscale_video(source: Path, target: Path, outscale: float) -> int:
    """The script's ``inference_video`` for one process; returns the frames written."""
    upsampler = official_enhancer(weights_path())
    reading = decoder(source)
    meta = probe_video(source)
    writing = encoder(source, meta, target, outscale)
    assert reading.stdin is not None and reading.stdout is not None and writing.stdin is not None
    written = 0
    bar = tqdm(total=meta.frames, unit="frame", desc="inference")
    while True:
        image = read_frame(reading.stdout, meta)
        if image is None:
            break
        output, _ = upsampler.enhance(image, outscale=outscale)
        writing.stdin.write(output.astype(np.uint8).tobytes())
        written += 1
        bar.update(1)
    bar.close()
    reading.stdin.close()
    reading.wait()
    writing.stdin.close()
    if writing.wait() != 0:
        raise SystemExit(f"ffmpeg encode failed (exit status {writing.returncode})")
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, type=Path, help="source video file")
    parser.add_argument("--output", required=True, type=Path, help="output .mp4 file")
    parser.add_argument("--outscale", type=float, default=2.0, help="final scale (default 2)")
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    frames = upscale_video(args.input, args.output, args.outscale)
    print(f"{frames} frames, {torch.get_num_threads()} torch threads -> {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
