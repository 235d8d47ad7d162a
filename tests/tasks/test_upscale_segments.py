"""A split UPSCALE equals the unsplit one: ranges upscaled alone, joined by stream copy (issue 12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from media import Tools, concat, probe, split
from media.reader import decode_all
from models import WeightStore
from tasks import EngineCache, Resources, TaskContext, UpscaleTask
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


def test_captions_burned_per_segment_equal_the_unsplit_run(
    clips: Clips, real_store: WeightStore, tmp_path: Path
) -> None:
    """Cues that start before a cut and end after it are neither doubled nor lost at the cut."""
    source = clips("split3")  # 30 frames at 10/s, cut at frames 10 and 20
    cues = [{"start": 0.55, "end": 1.45, "text": "WXYZ"}, {"start": 1.9, "end": 2.15, "text": "MMMM"}]
    task = UpscaleTask()
    params = task.parse({"model": MODEL, "device": "cpu", "captions": {"cues": cues}})
    plain = task.parse({"model": MODEL, "device": "cpu"})
    resources = Resources(store=real_store, engines=EngineCache(real_store))
    runs = {}
    for name, chosen in (("whole", params), ("plain", plain)):
        (tmp_path / name).mkdir()
        runs[name] = task.run(source, chosen, TaskContext(tmp_path / name, resources)).output
    info = probe(source, Tools())
    parts = []
    for index, frames in enumerate(split(info.frames, info.fps, 1.0)):
        work = tmp_path / f"part{index}"
        work.mkdir()
        part = task.run_segment(source, params, TaskContext(work, resources), frames, last=index == 2)
        parts.append(part.output)
    joined = concat(parts, tmp_path / "joined.mp4", fps=info.fps, audio_from=info, tools=Tools())
    ours, whole, bare = (decode_all(probe(path, Tools()), Tools()) for path in (joined.path, *runs.values()))
    values = psnr(ours, whole)
    print(f"per-frame PSNR captioned joined vs unsplit: min {values.min():.1f} dB")
    assert values.min() >= 35, np.round(values, 1).tolist()
    drawn = psnr(whole, bare) < 30  # where a cue is on screen, the captions change the frame
    shown = [index for index in range(len(drawn)) if drawn[index]]
    assert shown == [*range(6, 15), *range(19, 22)], shown  # cue times x 10/s, across both cuts
