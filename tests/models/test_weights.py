from __future__ import annotations

import dataclasses
import hashlib
import http.server
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from models import MODELS, WeightsInvalid, WeightStore, WeightsUnavailable
from models.weights import read_sha256sums, sha256_of
from tests.conftest import ROOT, mirror_dir

ANIME = MODELS.get("realesr-animevideov3")


def test_mirror_file_is_verified_against_its_sha256sums() -> None:
    store = WeightStore(Path("/nonexistent"), mirror_dir(), allow_download=False)
    found = store.find(ANIME)
    assert found is not None and found.source == "mirror"
    assert found.sha256 == read_sha256sums(mirror_dir() / "SHA256SUMS")[ANIME.filename]
    assert found.sha256 != ANIME.sha256  # the mirror holds a re-packed file, accepted by its own list


def test_altered_weights_are_refused_naming_file_and_both_hashes(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(mirror_dir() / "SHA256SUMS", mirror / "SHA256SUMS")
    data = bytearray((mirror_dir() / ANIME.filename).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (mirror / ANIME.filename).write_bytes(bytes(data))
    store = WeightStore(tmp_path / "weights", mirror, allow_download=False)
    with pytest.raises(WeightsInvalid) as info:
        store.resolve(ANIME)
    message = str(info.value)
    assert str(mirror / ANIME.filename) in message
    assert hashlib.sha256(data).hexdigest() in message
    assert ANIME.sha256 in message
    assert read_sha256sums(mirror / "SHA256SUMS")[ANIME.filename] in message
    assert info.value.code == "WEIGHTS_INVALID"


def test_missing_weights_without_mirror_or_network_is_a_named_error(tmp_path: Path) -> None:
    offline = dataclasses.replace(ANIME, url="http://127.0.0.1:9/realesr-animevideov3.pth")
    with pytest.raises(WeightsUnavailable, match="download of http://127.0.0.1:9/.* failed") as info:
        WeightStore(tmp_path, None, timeout=5).resolve(offline)
    assert info.value.code == "MODEL_UNAVAILABLE" and info.value.retryable
    assert list(tmp_path.iterdir()) == []  # no partial file left behind
    with pytest.raises(WeightsUnavailable, match="downloads are disabled"):
        WeightStore(tmp_path, None, allow_download=False).resolve(ANIME)


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTP server on loopback serving ``tmp_path / 'srv'``."""
    root = tmp_path / "srv"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()
    thread.join()


def test_download_checks_size_and_hash_then_renames_atomically(
    tmp_path: Path, file_server: tuple[str, Path]
) -> None:
    base, root = file_server
    source = mirror_dir() / ANIME.filename
    shutil.copy(source, root / ANIME.filename)
    spec = dataclasses.replace(
        ANIME, url=f"{base}/{ANIME.filename}", sha256=sha256_of(source), size=source.stat().st_size
    )
    weights_dir = tmp_path / "weights"
    got = WeightStore(weights_dir, None).resolve(spec)
    assert got.source == "download" and got.path == weights_dir / ANIME.filename
    assert sha256_of(got.path) == spec.sha256
    assert sorted(p.name for p in weights_dir.iterdir()) == [ANIME.filename]

    tampered = dataclasses.replace(
        spec, filename="other.pth", url=f"{base}/{ANIME.filename}", sha256="0" * 64
    )
    with pytest.raises(WeightsInvalid, match="expected .* official sha256 0000"):
        WeightStore(weights_dir, None).download(tampered)
    assert sorted(p.name for p in weights_dir.iterdir()) == [ANIME.filename]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "models", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
def test_cli_list_download_verify(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "WEIGHTS_DIR": str(tmp_path), "WEIGHTS_MIRROR": str(mirror_dir())}
    listing = _cli("list", env=env)
    assert listing.returncode == 0
    assert "realesr-animevideov3" in listing.stdout and "verified (mirror" in listing.stdout
    assert _cli("download", "realesr-animevideov3", env=env).returncode == 0
    assert _cli("verify", "realesr-animevideov3", env=env).returncode == 0
    unknown = _cli("download", "nope", env=env)
    assert unknown.returncode == 1 and "unknown model 'nope'" in unknown.stderr
    missing = _cli("verify", "realesrgan-x4plus", env=env)
    assert missing.returncode == 1 and "missing" in missing.stdout
