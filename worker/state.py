"""Job state under ``jobs/{jobId}/``: the completion record, the terminal marker, the callback outbox.

* ``result.json`` — the completion record and idempotency marker: the output
  key, the stored output's size and SHA-256, the COMPLETED body. Written once.
* ``terminal.json`` — decides the job's one terminal outcome (COMPLETED,
  FAILED or CANCELLED), written with ``If-None-Match: *``: only the run that
  wrote it sends the terminal callback first; any later run re-sends the same
  event (same event id). An operator's redrive starts a new lifetime, whose
  marker is ``terminal.{n}.json``; COMPLETED is final across lifetimes.
* ``cancel`` — written by a backend's cancel answer or ``python -m worker
  cancel``: every worker on the job stops at its next batch, CANCELLED once.
* ``{jobs_prefix}.outbox/`` — terminal callbacks the backend did not take
  within the retry budget, re-sent by any worker until delivered or too old.
  One flat folder (no job id starts with ``.``), so re-senders list only what
  is pending, not every job ever run.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from worker.keys import KeyPolicy
from worker.message import Status
from worker.storage import Storage

EVENTS = uuid.UUID("5c1b2d54-8a43-4c1e-9a55-2f7e1d0c9b11")


def event_id(job_id: str, status: Status, lifetime: int = 0) -> str:
    """Stable per job, outcome and lifetime, so a re-sent event carries the same id (the backend dedupes).

    COMPLETED is final: its id does not depend on the lifetime.
    """
    life = 0 if status is Status.COMPLETED else lifetime
    return str(uuid.uuid5(EVENTS, f"{job_id}/{status}/{life}"))


@dataclass(frozen=True)
class Terminal:
    """A job's decided outcome: the callback body to send and its event id."""

    status: Status
    event_id: str
    body: dict[str, Any]
    ours: bool  # this run wrote the marker

    @classmethod
    def of(cls, marker: dict[str, Any], ours: bool) -> Terminal:
        return cls(Status(marker["status"]), str(marker["eventId"]), dict(marker["body"]), ours)


class JobState:
    """Reads and writes one bucket's job state (see the module docstring)."""

    def __init__(self, storage: Storage, keys: KeyPolicy) -> None:
        self.storage = storage
        self.keys = keys

    def cancel_key(self, job_id: str) -> str:
        return f"{self.keys.state_prefix(job_id)}cancel"

    def request_cancel(self, job_id: str, why: str) -> None:
        """Ask every worker on the job (each segment, the merge) to stop; idempotent."""
        self.storage.put_json(self.cancel_key(job_id), {"jobId": job_id, "why": why, "at": time.time()})

    def cancel_requested(self, job_id: str) -> bool:
        return self.storage.get_json(self.cancel_key(job_id)) is not None

    def result_key(self, job_id: str) -> str:
        return f"{self.keys.state_prefix(job_id)}result.json"

    def terminal_key(self, job_id: str, lifetime: int = 0) -> str:
        name = "terminal.json" if lifetime == 0 else f"terminal.{lifetime}.json"
        return f"{self.keys.state_prefix(job_id)}{name}"

    @property
    def outbox_prefix(self) -> str:
        return f"{self.keys.jobs_prefix}.outbox/"

    def result(self, job_id: str) -> dict[str, Any] | None:
        return self.storage.get_json(self.result_key(job_id))

    def record_result(self, job_id: str, record: dict[str, Any]) -> dict[str, Any]:
        """Write the completion record once; returns the record that holds (ours or an earlier one)."""
        if self.storage.put_json_once(self.result_key(job_id), record):
            return record
        return self.result(job_id) or record

    def terminal(self, job_id: str, lifetime: int) -> Terminal | None:
        """This lifetime's decided outcome; a first lifetime's COMPLETED holds for every later one."""
        first = self.storage.get_json(self.terminal_key(job_id))
        if lifetime == 0 or (first is not None and first.get("status") == Status.COMPLETED):
            return None if first is None else Terminal.of(first, ours=False)
        marker = self.storage.get_json(self.terminal_key(job_id, lifetime))
        return None if marker is None else Terminal.of(marker, ours=False)

    def decide(self, job_id: str, lifetime: int, status: Status, body: dict[str, Any]) -> Terminal:
        """Claim the outcome ``status`` for this lifetime; returns what holds (``ours`` if we wrote it)."""
        earlier = self.terminal(job_id, lifetime)
        if earlier is not None:
            return earlier
        ids = event_id(job_id, status, lifetime)
        marker = {"jobId": job_id, "status": str(status), "lifetime": lifetime, "eventId": ids, "body": body}
        if self.storage.put_json_once(self.terminal_key(job_id, lifetime), marker):
            return Terminal.of(marker, ours=True)
        return self.terminal(job_id, lifetime) or Terminal.of(marker, ours=False)

    # ------------------------------------------------------------------ outbox

    def keep(self, url: str, terminal: Terminal) -> None:
        """Keep an undelivered terminal callback for re-sending."""
        entry = {"url": url, "eventId": terminal.event_id, "body": terminal.body, "keptAt": time.time()}
        self.storage.put_json(f"{self.outbox_prefix}{terminal.event_id}.json", entry)

    def kept(self, limit: int = 100) -> list[tuple[str, dict[str, Any]]]:
        """Up to ``limit`` kept callbacks, as (key, entry)."""
        found = []
        for key in self.storage.keys(self.outbox_prefix, limit):
            entry = self.storage.get_json(key)
            if entry is not None:
                found.append((key, entry))
        return found

    def forget(self, key: str) -> None:
        self.storage.delete(key)
