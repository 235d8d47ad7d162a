"""The README's opening picture: bicubic x4 beside vidworker's Real-ESRGAN x4.

    WEIGHTS_MIRROR=/work/shared/weights python scripts/before_after.py [--output docs/before-after.png]

A 160x120 crop of a real photograph (scikit-image's ``chelsea``: fur, whiskers,
an eye) is shrunk to half size (80x60, INTER_AREA) so the upscale has detail to
recover, then enlarged x4 twice: ``cv2.INTER_CUBIC`` on the left, vidworker's
engine (realesr-animevideov3, x4, CPU) on the right, each panel under a labelled
header strip. Weights come from the local store or ``WEIGHTS_MIRROR``; never the
network. The engine runs once, on one 80x60 frame (a few seconds on a CPU).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = "realesr-animevideov3"
SCALE = 4
# (top, left, height, width) of the crop in skimage.data.chelsea() (300x451): left eye, forehead stripes
CROP = (50, 120, 120, 160)
SHRINK = 2
HEADER = 28  # px of label strip above each panel
GAP = 4  # px between the two panels
BACKGROUND = (32, 32, 32)
TEXT = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX
LABELS = ("bicubic x4", f"vidworker {MODEL} x{SCALE}")


def source_frame() -> np.ndarray:
    """The small RGB input: the crop of the photograph at 1/SHRINK size."""
    from skimage import data as samples

    top, left, height, width = CROP
    photo: Callable[[], np.ndarray] = samples.chelsea  # skimage is untyped
    crop = photo()[top : top + height, left : left + width]
    small: np.ndarray = cv2.resize(crop, (width // SHRINK, height // SHRINK), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small)


def bicubic(small: np.ndarray, height: int, width: int) -> np.ndarray:
    enlarged: np.ndarray = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return enlarged


def _header(width: int, label: str) -> np.ndarray:
    """A BACKGROUND strip HEADER px high with ``label`` centred vertically, shrunk to fit ``width``."""
    strip = np.empty((HEADER, width, 3), dtype=np.uint8)
    strip[:] = BACKGROUND
    scale = 0.5
    (text_w, text_h), _ = cv2.getTextSize(label, FONT, scale, 1)
    if text_w > width - 12:
        scale *= (width - 12) / text_w
        (text_w, text_h), _ = cv2.getTextSize(label, FONT, scale, 1)
    baseline_y = (HEADER + text_h) // 2
    cv2.putText(strip, label, (6, baseline_y), FONT, scale, TEXT, 1, cv2.LINE_AA)
    return strip


def side_by_side(small: np.ndarray, upscaled: np.ndarray, labels: tuple[str, str] = LABELS) -> np.ndarray:
    """Bicubic enlargement of ``small`` (left) beside ``upscaled`` (right), each under its label.

    Both panels have ``upscaled``'s size; the result is ``HEADER + H`` by ``2 W + GAP``,
    with the panels at rows ``HEADER:``, columns ``:W`` and ``W + GAP:``.
    """
    if small.ndim != 3 or upscaled.ndim != 3 or small.shape[2] != 3 or upscaled.shape[2] != 3:
        raise ValueError(f"expected two (H,W,3) images, got {small.shape} and {upscaled.shape}")
    if small.dtype != np.uint8 or upscaled.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got {small.dtype} and {upscaled.dtype}")
    height, width = upscaled.shape[:2]
    factor = height // small.shape[0]
    if factor < 1 or (height, width) != (small.shape[0] * factor, small.shape[1] * factor):
        raise ValueError(f"{upscaled.shape[:2]} is not a whole-number enlargement of {small.shape[:2]}")
    canvas = np.empty((HEADER + height, 2 * width + GAP, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    panels = (bicubic(small, height, width), upscaled)
    for column, panel, label in zip((0, width + GAP), panels, labels, strict=True):
        canvas[:HEADER, column : column + width] = _header(width, label)
        canvas[HEADER:, column : column + width] = panel
    return canvas


def engine_upscale() -> Callable[[np.ndarray], np.ndarray]:
    """vidworker's engine (realesr-animevideov3, x4, CPU) on real weights, RGB uint8 in and out."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # run as `python scripts/before_after.py`: make the project importable
    from models import Upscaler, UpscalerConfig
    from models.__main__ import store_from_env

    upscaler = Upscaler.create(UpscalerConfig(MODEL, SCALE, "cpu"), store_from_env(allow_download=False))

    def run(frame: np.ndarray) -> np.ndarray:
        result: np.ndarray = upscaler(frame)
        return result

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "before-after.png")
    args = parser.parse_args(argv)
    small = source_frame()
    picture = side_by_side(small, engine_upscale()(small))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    bgr = cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(args.output), bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        print(f"could not write {args.output}", file=sys.stderr)
        return 1
    print(
        f"{args.output}: {picture.shape[1]}x{picture.shape[0]}, {args.output.stat().st_size / 1024:.0f} KiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
