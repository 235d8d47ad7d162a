"""Fixtures shared by the task tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tasks.base
from media import Tools
from tasks import Cancelled
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


@pytest.fixture
def render_commands(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The ffmpeg commands of the one-pass renders a task starts, recorded and not run.

    The render raises :class:`Cancelled` in place of running, so the task stops there.
    """
    commands: list[list[str]] = []

    def capture(args: list[str], **kwargs: Any) -> None:
        commands.append(list(args))
        raise Cancelled("not run")

    monkeypatch.setattr(tasks.base, "run_render", capture)
    return commands


@pytest.fixture
def nvenc_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    """NVENC's test encode succeeds, as on a GPU host (its commands are only built here, never run)."""
    monkeypatch.setattr(Tools, "encoder_works", lambda self, name: name.endswith("_nvenc"))
