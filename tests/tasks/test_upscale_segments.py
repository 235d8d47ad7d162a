"""A split UPSCALE equals the unsplit one: ranges upscaled alone, joined by stream copy (issue 12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from media import Tools, concat, probe, split
from media.reader import FrameRange, decode_all
from models import WeightStore
from tasks import EngineCache, InvalidParameters, Resources, TaskContext, UpscaleTask
from tests.clips import ffprobe, stream
from tests.conftest import Clips

MODEL = "realesr-animevideov3"


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    error = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    values: np.ndarray = 10 * np.log10(255.0**2 / np.maximum(error, 1e-10))
    return values


def test_segments_joined_equal_the_unsplit_run(clips: Clips, real_store: WeightStore, tmp_path: Path) -> None:
    source = clips("split3")
    resources = Resources(store=real_store, engines=EngineCache(real_store))
    task = UpscaleTask()
    params = task.parse({"model": MODEL, "device": "cpu", "scaleFactor": 2})
    (tmp_path / "whole").mkdir()
    whole = task.run(source, params, TaskContext(tmp_path / "whole", resources))
    info = probe(source, Tools())
    ranges = split(info.frames, info.fps, 1.0)
    assert len(ranges) == 3 and ranges[1].start % 12 != 0  # a cut inside a GOP
    parts = []
    for index, frames in enumerate(ranges):
        work = tmp_path / f"part{index}"
        work.mkdir()
        part = task.run_segment(source, params, TaskContext(work, resources), frames, last=index == 2)
        assert part.frame_count == len(frames) and not part.audio
        parts.append(part.output)
    joined = concat(parts, tmp_path / "joined.mp4", fps=info.fps, audio_from=info, tools=Tools())
    assert joined.frames == whole.frame_count == 30
    ours, reference = probe(joined.path, Tools()), probe(whole.output, Tools())
    assert abs(ours.duration - reference.duration) < 0.05
    audio = [stream(ffprobe(path), "audio") for path in (joined.path, whole.output)]
    assert all(item is not None for item in audio)
    assert abs(float(audio[0]["duration"]) - float(audio[1]["duration"])) < 0.03  # type: ignore[index]
    values = psnr(decode_all(ours, Tools()), decode_all(reference, Tools()))
    print(f"per-frame PSNR joined vs unsplit: min {values.min():.1f} dB, mean {values.mean():.1f} dB")
    assert values.min() >= 35, np.round(values, 1).tolist()


def test_captions_are_not_cut_into_segments_yet(
    clips: Clips, real_store: WeightStore, tmp_path: Path
) -> None:
    source = clips("split3")
    task = UpscaleTask()
    params = task.parse({"model": MODEL, "captions": {"cues": [{"start": 0, "end": 1, "text": "hi"}]}})
    resources = Resources(store=real_store, engines=EngineCache(real_store))
    with pytest.raises(InvalidParameters, match="captions"):
        task.run_segment(source, params, TaskContext(tmp_path, resources), FrameRange(0, 10), last=False)
