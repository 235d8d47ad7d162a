"""test_upscale_local.py run as a user runs it: a subprocess, real weights, real ffmpeg."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.clips import ffprobe, stream
from tests.conftest import ROOT, Clips, mirror_dir


def run_script(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WEIGHTS_MIRROR": str(mirror_dir()), "WEIGHTS_DIR": str(tmp_path / "weights")}
    return subprocess.run(
        [sys.executable, str(ROOT / "test_upscale_local.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


def test_local_upscale_reports_environment_and_metadata(clips: Clips, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_script(
        "--input", str(clips("audio")), "--output", str(out), "--scale", "2", "--device", "cpu",
        "--model", "realesr-animevideov3", tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for line in ("torch", "GPU", "ffmpeg", "NVENC", "weights      realesr-animevideov3: verified"):
        assert line in done.stdout
    target = out / "audio_upscaled.mp4"
    assert f"output       {target}" in done.stdout
    metadata = json.loads(done.stdout[done.stdout.index("{") :])
    assert metadata["width"] == 128 and metadata["frameCount"] == 10 and metadata["audio"] is True
    video = stream(ffprobe(target), "video")
    assert video is not None and (video["width"], video["height"]) == (128, 72)
    assert sorted(path.name for path in out.iterdir()) == ["audio_upscaled.mp4"]  # no temp dir left
    assert "10/10" in done.stderr  # the progress bar reached the end


def test_local_upscale_fails_clearly_on_a_playlist(clips: Clips, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_script(
        "--input", str(clips("hls")), "--output", str(out), "--model", "realesr-animevideov3",
        "--no-validation", tmp_path=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    assert "error [UNSUPPORTED_MEDIA]: the file is an HLS playlist" in done.stderr
    assert "Environment" not in done.stdout
    assert list(out.iterdir()) == []


def test_local_upscale_without_weights_names_the_problem(clips: Clips, tmp_path: Path) -> None:
    env_mirror = tmp_path / "empty-mirror"
    env_mirror.mkdir()
    (env_mirror / "SHA256SUMS").write_text("")
    done = subprocess.run(
        [sys.executable, str(ROOT / "test_upscale_local.py"), "--input", str(clips("audio")),
         "--output", str(tmp_path / "out"), "--model", "realesr-animevideov3"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "WEIGHTS_MIRROR": str(env_mirror), "WEIGHTS_DIR": str(tmp_path / "w"),
             "WEIGHTS_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 1
    assert "weights      realesr-animevideov3: missing" in done.stdout
    assert "error [MODEL_UNAVAILABLE]" in done.stderr
