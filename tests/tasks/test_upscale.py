"""UPSCALE end to end on real ffmpeg and the real animevideov3 weights, checked with ffprobe."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import tasks.engines
from media import Tools, probe
from media.errors import DecodeFailed, DecodeOverrun
from media.reader import decode_all
from models import DeviceError, DeviceLost, WeightStore
from models.runtime import TorchRuntime
from tasks import Cancelled, EngineCache, Progress, Resources, TaskContext, UpscaleTask
from tasks.upscale import OUTPUT_NAME as OUTPUT
from tests.clips import audio_md5, ffprobe, stream
from tests.conftest import Clips
from tests.models.faults import ILLEGAL_ACCESS, FaultAt, OomAbove

MODEL = "realesr-animevideov3"


@pytest.fixture(scope="module")
def resources(real_store: WeightStore) -> Resources:
    return Resources(store=real_store, engines=EngineCache(real_store, size=2))


def upscale(source: Path, work_dir: Path, resources: Resources, **raw: Any) -> tuple[Any, list[Progress]]:
    task = UpscaleTask()
    seen: list[Progress] = []
    params = task.parse({"model": MODEL, "device": "cpu", **raw})
    result = task.run(source, params, TaskContext(work_dir, resources, progress=seen.append))
    return result, seen


def source_frames(path: Path) -> int:
    video = stream(ffprobe(path, count=True), "video")
    assert video is not None
    return int(video["nb_read_frames"])


@pytest.mark.parametrize(
    ("clip", "scale"),
    [("audio", 2), ("audio", 4), ("silent", 4), ("odd", 2), ("10bit", 4), ("webm", 2), ("bt601", 2)],
)
def test_upscale_keeps_frames_duration_and_audio(
    clips: Clips, work_dir: Path, resources: Resources, clip: str, scale: int
) -> None:
    source = clips(clip)
    before = ffprobe(source)
    result, _ = upscale(source, work_dir, resources, scale_factor=scale)
    after = ffprobe(result.output, count=True)
    video_in, video_out = stream(before, "video"), stream(after, "video")
    assert video_in is not None and video_out is not None
    assert (video_out["width"], video_out["height"]) == (
        video_in["width"] * scale,
        video_in["height"] * scale,
    )
    assert (result.width, result.height) == (video_out["width"], video_out["height"])
    assert int(video_out["nb_read_frames"]) == source_frames(source) == result.frame_count
    frame = 1 / float(Fraction(video_in["avg_frame_rate"]))
    assert abs(float(after["format"]["duration"]) - float(before["format"]["duration"])) <= frame + 1e-3
    assert (stream(after, "audio") is not None) == (stream(before, "audio") is not None) == result.audio
    assert video_out["pix_fmt"] == "yuv420p" and video_out["codec_name"] == "h264"
    assert result.encoder == "libx264" and result.device == "cpu" and result.model == MODEL
    assert list(work_dir.iterdir()) == [result.output]


def test_odd_source_gives_exact_multiple(clips: Clips, work_dir: Path, resources: Resources) -> None:
    result, _ = upscale(clips("odd"), work_dir, resources, scale_factor=2)
    assert (result.width, result.height) == (66, 38)


def test_variable_frame_rate_becomes_constant_at_the_average(
    clips: Clips, work_dir: Path, resources: Resources
) -> None:
    source = clips("vfr")
    info = probe(source, Tools())
    result, _ = upscale(source, work_dir, resources, scale_factor=2)
    video = stream(ffprobe(result.output, count=True), "video")
    assert video is not None
    assert Fraction(video["r_frame_rate"]) == Fraction(video["avg_frame_rate"]) == info.fps
    assert abs(int(video["nb_read_frames"]) - info.duration * float(info.fps)) <= 1
    assert abs(result.duration - info.duration) <= 1 / float(info.fps) + 1e-3


@pytest.mark.parametrize("clip", ["rotated", "rotated270"])
def test_rotated_phone_video_is_upright(
    clips: Clips, work_dir: Path, resources: Resources, clip: str
) -> None:
    """The display matrix says how to turn the stored frame; the output is stored already turned."""
    source = clips(clip)
    source_video = stream(ffprobe(source), "video")
    assert source_video is not None
    # ffprobe's rotation is counter-clockwise degrees: +90 brings the left (red) half to the bottom.
    ccw = round(source_video["side_data_list"][0]["rotation"]) % 360
    assert ccw in (90, 270)
    result, _ = upscale(source, work_dir, resources, scale_factor=2)
    video = stream(ffprobe(result.output), "video")
    assert video is not None
    assert (video["width"], video["height"]) == (72, 128)
    assert not video.get("side_data_list") and "rotate" not in video.get("tags", {})
    frames = decode_all(probe(result.output, Tools()), Tools())
    top, bottom = frames[:, :48].mean(axis=(0, 1, 2)), frames[:, -48:].mean(axis=(0, 1, 2))
    red, blue = (bottom, top) if ccw == 90 else (top, bottom)
    assert red[0] > 180 > red[2] and blue[2] > 180 > blue[0], (top, bottom)


def test_colour_tags_are_carried_and_colours_kept(clips: Clips, work_dir: Path, resources: Resources) -> None:
    source = clips("bt601")
    result, _ = upscale(source, work_dir, resources, scale_factor=2)
    video = stream(ffprobe(result.output), "video")
    assert video is not None
    tags = {
        key: video.get(key) for key in ("color_primaries", "color_transfer", "color_space", "color_range")
    }
    assert tags == {
        "color_primaries": "smpte170m",
        "color_transfer": "smpte170m",
        "color_space": "smpte170m",
        "color_range": "tv",
    }
    before = decode_all(probe(source, Tools()), Tools()).astype(np.float64).mean(axis=(0, 1, 2))
    after = decode_all(probe(result.output, Tools()), Tools()).astype(np.float64).mean(axis=(0, 1, 2))
    assert np.abs(before - after).max() < 6, (before, after)


def test_progress_every_batch_up_to_the_total(clips: Clips, work_dir: Path, resources: Resources) -> None:
    result, seen = upscale(clips("audio"), work_dir, resources, scale_factor=2)
    fractions = [update.fraction for update in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert resources.engines is not None
    step = resources.engines.lease(
        UpscaleTask.engine_config(UpscaleTask().parse({"model": MODEL}))
    ).frames_per_call(result.height // 2, result.width // 2)
    steps = [b - a for a, b in zip([0.0, *fractions], fractions, strict=False)]
    assert max(steps) <= 0.05 + step / result.frame_count  # one engine call's frames (of 10)
    assert seen[-1].done == result.frame_count


@pytest.mark.parametrize(
    ("clip", "code"),
    [
        ("hls", "UNSUPPORTED_MEDIA"),
        ("ffconcat", "UNSUPPORTED_MEDIA"),
        ("audio_only", "UNSUPPORTED_MEDIA"),
        ("empty", "MEDIA_CORRUPT"),
        ("truncated", "MEDIA_CORRUPT"),
        ("huge", "MEDIA_LIMIT_EXCEEDED"),
        ("long", "MEDIA_LIMIT_EXCEEDED"),
    ],
)
def test_refused_before_any_decode(
    clips: Clips, work_dir: Path, resources: Resources, clip: str, code: str
) -> None:
    with pytest.raises(Exception) as caught:
        upscale(clips(clip), work_dir, resources, scale_factor=2)
    assert getattr(caught.value, "code", None) == code, caught.value
    assert list(work_dir.iterdir()) == []


def test_file_cut_short_after_a_good_header_fails(clips: Clips, work_dir: Path, resources: Resources) -> None:
    with pytest.raises(Exception) as caught:
        upscale(clips("cut"), work_dir, resources, scale_factor=2)
    assert getattr(caught.value, "code", None) in {"DECODE_FAILED", "MEDIA_CORRUPT"}, caught.value
    assert list(work_dir.iterdir()) == []


def test_variable_rate_matroska_passes_covering_its_duration(
    clips: Clips, work_dir: Path, resources: Resources
) -> None:
    """28 irregular frames in 4 s, which Matroska neither counts nor times (it claims 10/s): resampled."""
    result, _ = upscale(clips("vfr_mkv"), work_dir, resources, scale_factor=2)
    assert result.frame_count == 40
    assert result.duration == pytest.approx(4.0, abs=0.1 + 1e-3)


def test_a_variable_rate_source_cut_short_fails_on_the_time_its_frames_cover(
    clips: Clips, work_dir: Path, resources: Resources
) -> None:
    """Half the clusters gone, the header intact: ffmpeg decodes what is left without an error."""
    with pytest.raises(
        DecodeFailed, match=r"decoded 2\.\d+ s of video .* where the container declares 4\.00 s"
    ):
        upscale(clips("vfr_mkv_cut"), work_dir, resources, scale_factor=2)
    assert list(work_dir.iterdir()) == []


def test_a_container_that_lies_about_its_duration_is_stopped(
    clips: Clips, work_dir: Path, resources: Resources
) -> None:
    """10 s of frames behind a header that says 1 s: decoding stops at the cap, the job fails with a code."""
    with pytest.raises(DecodeOverrun, match=r"declares 10 frames / 1.00 s but decodes past") as caught:
        upscale(clips("liar_mkv"), work_dir, resources, scale_factor=2)
    assert caught.value.code == "DECODE_FAILED" and not caught.value.retryable
    assert list(work_dir.iterdir()) == []


def test_cancel_mid_video_stops_everything(clips: Clips, work_dir: Path, resources: Resources) -> None:
    seen: list[Progress] = []
    task = UpscaleTask()
    params = task.parse({"model": MODEL, "device": "cpu", "scale_factor": 2})
    context = TaskContext(work_dir, resources, progress=seen.append, cancelled=lambda: len(seen) >= 3)
    with pytest.raises(Cancelled) as caught:
        task.run(clips("clip60"), params, context)
    assert caught.value.code == "CANCELLED"
    assert len(seen) == 3
    assert list(work_dir.iterdir()) == []


def test_inference_raising_mid_video_fails_the_task(
    clips: Clips, work_dir: Path, resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resources.engines is not None
    engine = resources.engines.get(
        UpscaleTask.engine_config(UpscaleTask().parse({"model": MODEL, "device": "cpu"}))
    )
    real = engine.network
    calls = 0

    def flaky(x: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise RuntimeError("simulated kernel fault")
        return real(x)

    monkeypatch.setattr(engine, "runtime", TorchRuntime(flaky))
    with pytest.raises(Exception) as caught:
        upscale(clips("clip60"), work_dir, resources, scale_factor=4)
    assert getattr(caught.value, "code", None) == "INFERENCE_FAILED", caught.value
    assert "simulated kernel fault" in str(caught.value)
    assert list(work_dir.iterdir()) == []


def test_audio_mp4_cannot_hold_is_encoded_to_aac(clips: Clips, work_dir: Path, resources: Resources) -> None:
    source = clips("pcm")
    source_audio = stream(ffprobe(source), "audio")
    assert source_audio is not None and source_audio["codec_name"] == "pcm_s16le"
    result, _ = upscale(source, work_dir, resources, scale_factor=2)
    audio = stream(ffprobe(result.output), "audio")
    assert audio is not None and audio["codec_name"] == "aac"


def test_copied_audio_is_bit_identical(clips: Clips, work_dir: Path, resources: Resources) -> None:
    source = clips("audio")
    result, _ = upscale(source, work_dir, resources, scale_factor=2)
    assert audio_md5(result.output) == audio_md5(source)


def test_outputs_wider_than_4096_are_hevc(clips: Clips, work_dir: Path, resources: Resources) -> None:
    result, _ = upscale(clips("wide"), work_dir, resources, scale_factor=4)
    video = stream(ffprobe(result.output, count=True), "video")
    assert video is not None
    assert (video["codec_name"], video["codec_tag_string"], video["width"]) == ("hevc", "hvc1", 4160)
    assert result.encoder == "libx265" and int(video["nb_read_frames"]) == 3


def test_gpu_requested_without_cuda_falls_back_and_says_so(
    clips: Clips, work_dir: Path, resources: Resources
) -> None:
    result, _ = upscale(clips("silent"), work_dir, resources, scale_factor=2, device="gpu")
    assert result.device == "cpu" and result.encoder == "libx264"
    assert any("CUDA is not available" in warning for warning in result.metadata()["warnings"])


def test_captions_are_burned_in_during_the_upscale_encode(
    clips: Clips, work_dir: Path, resources: Resources
) -> None:
    """One output file with the audio and the captions, drawn at the output size only while the cue runs."""
    scenario = {
        "style": {
            "font": "Noto Sans CJK KR",
            "size": 20,
            "color": "#FFFFFF",
            "position": "bottom",
            "marginY": 4,
        },
        "cues": [{"start": 0.3, "end": 0.7, "text": "안녕하세요 hello"}],
    }
    plain, _ = upscale(clips("audio"), work_dir, resources, scale_factor=2)
    plain_frames = decode_all(probe(plain.output, Tools()), Tools()).astype(np.int16)
    captioned_dir = work_dir / "captioned"
    captioned_dir.mkdir()
    result, _ = upscale(clips("audio"), captioned_dir, resources, scale_factor=2, captions=scenario)
    assert result.audio and result.frame_count == 10 and (result.width, result.height) == (128, 72)
    frames = decode_all(probe(result.output, Tools()), Tools()).astype(np.int16)
    bottom = np.abs(frames - plain_frames)[:, 48:].mean(axis=(1, 2, 3))  # per frame, lower third
    active = [index for index in range(10) if 0.3 <= index / 10 < 0.7]
    assert all(bottom[index] > 5 for index in active), bottom
    assert all(bottom[index] < 1 for index in range(10) if index not in active and index not in (2, 7)), (
        bottom
    )


def test_invalid_captions_are_refused_before_any_decode(
    clips: Clips, work_dir: Path, resources: Resources
) -> None:
    bad = {"cues": [{"start": 2.0, "end": 1.0, "text": "x"}]}
    with pytest.raises(Exception) as caught:
        upscale(clips("audio"), work_dir, resources, scale_factor=2, captions=bad)
    assert getattr(caught.value, "code", None) == "INPUT_INVALID" and "cues[0]" in str(caught.value)
    assert not (work_dir / OUTPUT).exists()


CPU_X2 = UpscaleTask.engine_config(UpscaleTask().parse({"model": MODEL, "device": "cpu", "scale_factor": 2}))
"""The engine the jobs below use; each test loads its own into a cache of its own."""


def test_a_device_fault_mid_video_is_retryable_and_the_next_job_gets_a_fresh_engine(
    clips: Clips, work_dir: Path, real_store: WeightStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    engines = EngineCache(real_store)
    resources = Resources(store=real_store, engines=engines)
    engine = engines.get(CPU_X2)
    error = RuntimeError(ILLEGAL_ACCESS)
    monkeypatch.setattr(engine, "runtime", TorchRuntime(FaultAt(engine.network, call=3, error=error)))
    with pytest.raises(DeviceError) as caught:
        upscale(clips("clip20"), work_dir, resources, scale_factor=2)
    assert (caught.value.code, caught.value.retryable) == ("DEVICE_ERROR", True)
    assert caught.value.__cause__ is error and list(work_dir.iterdir()) == []
    assert engines.get(CPU_X2) is not engine
    result, _ = upscale(clips("silent"), work_dir, resources, scale_factor=2)
    assert result.frame_count == 10 and result.warnings == ()


def test_a_device_that_stays_broken_raises_device_lost(
    clips: Clips, work_dir: Path, real_store: WeightStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    engines = EngineCache(real_store)
    resources = Resources(store=real_store, engines=engines)
    engine = engines.get(CPU_X2)
    monkeypatch.setattr(
        engine, "runtime", TorchRuntime(FaultAt(engine.network, call=2, error=RuntimeError(ILLEGAL_ACCESS)))
    )
    monkeypatch.setattr(tasks.engines, "device_works", lambda device: False)
    with pytest.raises(DeviceLost) as caught:
        upscale(clips("clip20"), work_dir, resources, scale_factor=2)
    assert (caught.value.code, caught.value.retryable) == ("DEVICE_LOST", True)
    assert list(work_dir.iterdir()) == []


def test_an_out_of_memory_warning_stays_with_its_job(
    clips: Clips, work_dir: Path, real_store: WeightStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two jobs on one cached engine: the first shrinks the tile after OOM, the second is not told."""
    engines = EngineCache(real_store)
    resources = Resources(store=real_store, engines=engines)
    engine = engines.get(CPU_X2)
    # 1040 px wide frames: 512 px tiles (the CPU default) run out of memory, 256 px ones fit
    monkeypatch.setattr(engine, "runtime", TorchRuntime(OomAbove(engine.network, limit=256 + 2 * engine.pad)))
    first, _ = upscale(clips("wide"), work_dir, resources, scale_factor=2)
    second_dir = work_dir / "second"
    second_dir.mkdir()
    second, _ = upscale(clips("wide"), second_dir, resources, scale_factor=2)
    assert engines.get(CPU_X2) is engine and engine.tile == 256
    assert first.warnings == ("out of memory at tile 512; continued at tile 256",)
    assert second.warnings == () and second.metadata()["warnings"] == []
