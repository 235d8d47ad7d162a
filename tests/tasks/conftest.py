"""Fixtures shared by the task tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import children


def assert_clean(work_dir: Path) -> None:
    """No ffmpeg child outlived the job and no partial output is left in its directory."""
    assert children() == [], "an ffmpeg child outlived its job"
    assert not list(work_dir.glob("*.partial*"))


@pytest.fixture
def work_dir(tmp_path: Path) -> Iterator[Path]:
    """The job's directory; checked with :func:`assert_clean` after the test."""
    directory = tmp_path / "job"
    directory.mkdir()
    yield directory
    assert_clean(directory)
