"""The systemd unit agrees with the daemon: stop timeout above the drain time, restart after a lost GPU."""

from __future__ import annotations

import re

from tests.conftest import ROOT
from worker.daemon import EXIT_DEVICE_LOST

SYSTEMD = ROOT / "deploy" / "systemd"
STOP_MARGIN = 30
"""Seconds the unit must allow beyond the drain: abort the job, hand its message back, exit."""


def setting(text: str, name: str) -> str:
    found = re.findall(rf"^{name}=(.*)$", text, re.MULTILINE)
    assert len(found) == 1, name
    return str(found[0]).strip()


def test_stop_timeout_covers_the_drain_with_a_margin() -> None:
    unit = (SYSTEMD / "vidworker.service").read_text()
    env = (SYSTEMD / "vidworker.env.example").read_text()
    stop = int(setting(unit, "TimeoutStopSec").removesuffix("s"))
    drain = int(setting(env, "WORKER_DRAIN_SECONDS"))
    assert stop >= drain + STOP_MARGIN


def test_a_lost_gpu_exit_is_restarted_and_bad_configuration_is_not() -> None:
    unit = (SYSTEMD / "vidworker.service").read_text()
    assert setting(unit, "Restart") in ("on-failure", "always")
    prevented = setting(unit, "RestartPreventExitStatus").split()
    assert "2" in prevented and str(EXIT_DEVICE_LOST) not in prevented
