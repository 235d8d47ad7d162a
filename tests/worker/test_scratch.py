"""Scratch folders: unique, locked while their worker lives, swept once it is gone (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from worker.scratch import Scratch, sweep

HOLDER = """
import sys, time
from pathlib import Path
from worker.scratch import Scratch
with Scratch(Path(sys.argv[1])) as folder:
    (folder / "job-x").mkdir()
    print(folder, flush=True)
    time.sleep(60)
"""


def test_two_workers_get_two_folders_and_each_cleans_its_own(tmp_path: Path) -> None:
    with Scratch(tmp_path) as first, Scratch(tmp_path) as second:
        assert first != second and first.is_dir() and second.is_dir()
        assert sweep(tmp_path) == []  # both owners alive: nothing swept
    assert list(tmp_path.iterdir()) == []


def test_a_dead_workers_folder_is_swept_and_a_live_ones_is_not(tmp_path: Path) -> None:
    holders = [
        subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        folders = [Path(holder.stdout.readline().strip()) for holder in holders if holder.stdout]
        os.kill(holders[0].pid, signal.SIGKILL)  # no cleanup runs
        holders[0].wait(10)
        assert folders[0].exists()
        assert sweep(tmp_path) == [folders[0]]
        assert not folders[0].exists() and folders[1].exists()
    finally:
        for holder in holders:
            holder.kill()
            holder.wait(10)
