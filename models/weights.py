"""Find, download and verify model weights.

Lookup order for a model's file: the weights directory, then the mirror folder
(a local directory with the files and a ``SHA256SUMS`` list), then the official
release URL. A file is accepted when its sha256 equals the official release
hash or the hash the mirror lists for that file name; any other file is refused,
never silently replaced.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from models.errors import ModelError, WeightsInvalid, WeightsUnavailable
from models.registry import ModelSpec

_CHUNK = 1 << 20
Opener = Callable[[str, float], BinaryIO]
"""Opens a URL with a timeout in seconds; returns a readable, closable response."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def read_sha256sums(path: Path) -> dict[str, str]:
    """Parse a ``sha256sum``-style file into {file name: hex digest}."""
    sums: dict[str, str] = {}
    if not path.is_file():
        return sums
    for line in path.read_text().splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].lstrip("*").strip()] = parts[0].lower()
    return sums


@dataclass(frozen=True)
class VerifiedWeights:
    """A weights file whose sha256 was checked; ``source`` says which rule accepted it."""

    path: Path
    sha256: str
    source: str  # "weights-dir", "mirror" or "download"


def _open_url(url: str, timeout: float) -> BinaryIO:
    # Only https release URLs from the registry reach here; no user-supplied URL.
    response: BinaryIO = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310
    return response


class WeightStore:
    """Weights on disk for the models in the registry.

    ``weights_dir`` is where downloads land (created on demand); ``mirror`` is an
    optional read-only folder with a ``SHA256SUMS`` file, used in place.
    """

    def __init__(
        self,
        weights_dir: Path,
        mirror: Path | None = None,
        *,
        allow_download: bool = True,
        timeout: float = 60.0,
        opener: Opener = _open_url,
    ) -> None:
        self.weights_dir = Path(weights_dir)
        self.mirror = Path(mirror) if mirror else None
        self.allow_download = allow_download
        self.timeout = timeout
        self._opener = opener
        self._mirror_sums = read_sha256sums(self.mirror / "SHA256SUMS") if self.mirror else {}

    def accepted_hashes(self, spec: ModelSpec) -> dict[str, str]:
        """{label: sha256} a file for ``spec`` may have."""
        hashes = {"official": spec.sha256}
        if spec.filename in self._mirror_sums:
            hashes["mirror SHA256SUMS"] = self._mirror_sums[spec.filename]
        return hashes

    def candidates(self, spec: ModelSpec) -> list[tuple[str, Path]]:
        places = [("weights-dir", self.weights_dir / spec.filename)]
        if self.mirror is not None:
            places.append(("mirror", self.mirror / spec.filename))
        return places

    def verify_file(self, spec: ModelSpec, path: Path, source: str) -> VerifiedWeights:
        """Hash ``path``; raise :class:`WeightsInvalid` unless the hash is accepted."""
        actual = sha256_of(path)
        accepted = self.accepted_hashes(spec)
        if actual not in accepted.values():
            wanted = ", ".join(f"{label} {digest}" for label, digest in accepted.items())
            raise WeightsInvalid(
                f"weights file {path} for {spec.name} has sha256 {actual}; expected {wanted}"
            )
        return VerifiedWeights(path=path, sha256=actual, source=source)

    def find(self, spec: ModelSpec) -> VerifiedWeights | None:
        """The first present file for ``spec``, verified; ``None`` when there is none."""
        for source, path in self.candidates(spec):
            if path.is_file():
                return self.verify_file(spec, path, source)
        return None

    def status(self, spec: ModelSpec) -> tuple[bool, str]:
        """Whether usable weights are present (no download), and a line saying which or why not."""
        try:
            found = self.find(spec)
        except ModelError as exc:
            return False, f"REFUSED  {exc}"
        if found is None:
            return False, "missing"
        return True, f"verified ({found.source}: {found.path})"

    def resolve(self, spec: ModelSpec) -> VerifiedWeights:
        """A verified file for ``spec``, downloading it when allowed and missing."""
        found = self.find(spec)
        if found is not None:
            return found
        if not self.allow_download:
            places = ", ".join(str(path) for _, path in self.candidates(spec))
            raise WeightsUnavailable(
                f"weights for {spec.name} not found (looked in {places}) and downloads are disabled"
            )
        return self.download(spec)

    def download(self, spec: ModelSpec) -> VerifiedWeights:
        """Fetch ``spec.url`` into the weights directory: size and sha256 checked, atomic rename."""
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        target = self.weights_dir / spec.filename
        fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", dir=self.weights_dir)
        tmp = Path(tmp_name)
        try:
            digest, size = self._fetch(spec, fd)
            if size != spec.size or digest != spec.sha256:
                raise WeightsInvalid(
                    f"download of {spec.url} gave {size} bytes with sha256 {digest}; "
                    f"expected {spec.size} bytes with official sha256 {spec.sha256}"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return VerifiedWeights(path=target, sha256=spec.sha256, source="download")

    def _fetch(self, spec: ModelSpec, fd: int) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out, self._opener(spec.url, self.timeout) as response:
                while chunk := response.read(_CHUNK):
                    size += len(chunk)
                    if size > spec.size:
                        break  # larger than the release file: stop, the check below refuses it
                    digest.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise WeightsUnavailable(
                f"weights for {spec.name} are not in {self.weights_dir}"
                f"{' or ' + str(self.mirror) if self.mirror else ''} and download of "
                f"{spec.url} failed: {exc}"
            ) from exc
        return digest.hexdigest(), size
