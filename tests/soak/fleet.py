"""Workers as real subprocesses, restarted as by systemd's ``Restart=always``, and a killer."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import ROOT
from tests.soak.instances import Instances

READY = "consuming "
"""Logged by the worker once its start-up is over (after it removed dead workers' scratch dirs)."""


@dataclass
class Life:
    """One run of one worker slot: ``python -m worker run`` with its output in ``log``."""

    slot: int
    number: int
    proc: subprocess.Popen[bytes]
    log: Path
    started: float
    signals: list[str] = field(default_factory=list)
    rc: int | None = None
    started_up: bool = False

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def ready(self) -> bool:
        """Alive and past its start-up."""
        if not self.alive:
            return False
        if not self.started_up:
            with self.log.open("rb") as source:
                self.started_up = READY.encode() in source.read(64 * 1024)
        return self.started_up

    @property
    def crashed(self) -> bool:
        """Ended by itself: not by our SIGKILL, nor with 0 (or -15 before its handler) after our SIGTERM,
        nor with 0 after a notice that its instance is going (SPOT, SCALE-IN)."""
        if self.rc is None or (self.rc == -signal.SIGKILL and "SIGKILL" in self.signals):
            return False
        if self.rc == 0 and {"SPOT", "SCALE-IN"} & set(self.signals):
            return False
        return not ("SIGTERM" in self.signals and self.rc in (0, -signal.SIGTERM))


class Fleet:
    """``size`` worker slots; a slot whose worker exits gets a new one after ``restart_delay`` seconds."""

    def __init__(
        self, size: int, env: dict[str, str], logs: Path, *, restart_delay: float = 1.0,
        instances: Instances | None = None,
    ) -> None:  # fmt: skip
        self.size = size
        self.env = env
        self.instances = instances
        self.logs = logs
        self.restart_delay = restart_delay
        self.lives: list[Life] = []
        self.current: list[Life | None] = [None] * size
        self.stuck: list[Life] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._supervise, args=(slot,), name=f"slot-{slot}", daemon=True)
            for slot in range(size)
        ]

    def start(self) -> Fleet:
        self.logs.mkdir(parents=True, exist_ok=True)
        for thread in self._threads:
            thread.start()
        return self

    def _spawn(self, slot: int) -> Life | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            number = sum(1 for life in self.lives if life.slot == slot)
            log = self.logs / f"worker{slot}-{number:03d}.log"
            env = self.env if self.instances is None else {**self.env, **self.instances.env(slot)}
            with log.open("wb") as sink:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "worker", "run"],
                    cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
                )  # fmt: skip
            life = Life(slot, number, proc, log, time.monotonic())
            self.lives.append(life)
            self.current[slot] = life
            return life

    def _supervise(self, slot: int) -> None:
        while not self._stopping.is_set():
            life = self._spawn(slot)
            if life is None:
                return
            life.rc = life.proc.wait()
            if self.instances is not None:
                with self._lock:  # no notice can land between its exit and the clean slate
                    self.instances.replaced(slot)
            self._stopping.wait(self.restart_delay)

    def notify(self, life: Life, kind: str) -> bool:
        """Tell ``life``'s instance it is going (``SPOT`` or ``SCALE-IN``), if it runs; True when told."""
        with self._lock:
            if not life.alive or self.instances is None:
                return False
            (self.instances.spot if kind == "SPOT" else self.instances.scale_in)(life.slot)
            life.signals.append(kind)
            return True

    def send(self, life: Life, number: signal.Signals) -> bool:
        """Signal ``life`` if it still runs; True when sent."""
        with self._lock:
            if not life.alive:
                return False
            life.proc.send_signal(number)
            life.signals.append(number.name)
            return True

    def wait_ready(self, timeout: float) -> bool:
        """Wait until every slot runs a worker past its start-up (it has cleaned up after dead ones)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(life is not None and life.ready() for life in self.current):
                return True
            time.sleep(0.5)
        return False

    def stop(self, timeout: float) -> None:
        """No more restarts; SIGTERM every worker; SIGKILL (and remember) any running after ``timeout``."""
        with self._lock:
            self._stopping.set()
            running = [life for life in self.current if life is not None and life.alive]
        for life in running:
            self.send(life, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for life in running:
            try:
                life.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stuck.append(life)
                self.send(life, signal.SIGKILL)
                life.proc.wait()
        for thread in self._threads:
            thread.join(timeout=10)
        for life in self.lives:
            life.rc = life.proc.poll() if life.rc is None else life.rc

    def kill_all(self) -> None:
        """Last resort (the runner itself failed): nothing of ours may outlive it."""
        with self._lock:
            self._stopping.set()
        for life in self.lives:
            if life.alive:
                life.proc.kill()
                life.proc.wait()

    def exits(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for life in self.lives:
            if life.rc is None:
                counts["running"] += 1
            elif life.crashed:
                counts["crashed"] += 1
            elif life.rc == -signal.SIGKILL:
                counts["sigkilled"] += 1
            elif life.rc == 0:
                counts["clean"] += 1
            else:
                counts["sigterm-at-start"] += 1
        return counts


ACTIONS = ("SIGKILL", "SIGTERM", "SIGTERM+SIGTERM", "SPOT", "SCALE-IN")
WEIGHTS = (5, 3, 2, 1, 1)


class Killer(threading.Thread):
    """Every ``uniform(*every)`` seconds, signal a random slot's worker: SIGKILL, SIGTERM, SIGTERM twice,
    or (when the fleet's workers are instances of a group) a spot notice or a scale-in of its instance.

    A worker still starting (loading torch takes seconds, more on a busy machine) is
    skipped: killed there, no worker would ever take a job. All draws are made
    whatever happens, so the rhythm and choices are the seed's alone.
    """

    def __init__(self, fleet: Fleet, rng: random.Random, every: tuple[float, float]) -> None:
        super().__init__(name="killer", daemon=True)
        self.fleet = fleet
        self.rng = rng
        self.every = every
        self.done: Counter[str] = Counter()
        self._halt = threading.Event()

    @property
    def actions(self) -> tuple[tuple[str, ...], tuple[int, ...]]:
        """What may be done and how often: notices only to a fleet whose workers are instances."""
        count = len(ACTIONS) if self.fleet.instances is not None else 3
        return ACTIONS[:count], WEIGHTS[:count]

    def rhythm(self) -> str:
        actions, weights = self.actions
        total = sum(weights)
        mix = ", ".join(f"{name} {weight / total:.0%}" for name, weight in zip(actions, weights, strict=True))
        low, high = self.every
        return f"every uniform({low:g}, {high:g}) s a random worker of {self.fleet.size} (if up): {mix}"

    def run(self) -> None:
        while not self._halt.wait(self.rng.uniform(*self.every)):
            slot = self.rng.randrange(self.fleet.size)
            action = self.rng.choices(*self.actions)[0]
            gap = self.rng.uniform(0.3, 1.5)  # two SIGTERMs at once would coalesce
            life = self.fleet.current[slot]
            if life is None or not life.ready():  # down, or still loading torch: let it start first
                self.done["skipped (not up)"] += 1
                continue
            if action in ("SPOT", "SCALE-IN"):
                self.done[action if self.fleet.notify(life, action) else "skipped (not up)"] += 1
                continue
            first = signal.SIGKILL if action == "SIGKILL" else signal.SIGTERM
            if not self.fleet.send(life, first):
                self.done["skipped (not up)"] += 1
                continue
            self.done[action] += 1
            if action == "SIGTERM+SIGTERM" and not self._halt.wait(gap):
                self.fleet.send(life, signal.SIGTERM)

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(timeout=10)
