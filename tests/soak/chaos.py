"""The chaos soak: ``python -m tests.soak.chaos --jobs 120 [--seed N] [--deadline S]`` (``make soak``).

One moto server (bucket versioning on; GPU and CPU queues, each with a dead-letter
queue after 3 receives), a fault proxy in front of it that answers a random
fraction of S3 requests with 500/503 SlowDown, a callback receiver that answers a
random fraction of callbacks with 500/503, slowly or past the worker's timeout, and three ``python -m worker
run`` processes restarted like systemd's ``Restart=always`` while a killer sends
one of them SIGKILL, SIGTERM or two SIGTERMs every few seconds. It sends ``--jobs``
valid jobs of every task, hostile bodies, key hijacks and duplicates (see
``tests/soak/plan.py``), runs until every followed job has its terminal callback
and the queues are empty (or the deadline), stops everything and checks:

* ``lost``: a job with a readable id whose terminal callback the backend never
  accepted (2xx), and whose message is no longer queued;
* ``replaced_outputs``: a key under ``processed/`` with more than one version;
* ``conflicting_terminal``: a job given two terminal statuses, or one under two
  ``X-Event-Id`` values;
* ``leaked_tmp``: entries left in the shared ``WORKER_TMP_DIR`` once all workers stopped;
* ``orphan_processes``: live ffmpeg/ffprobe processes naming that directory;
* ``record_mismatch``: a COMPLETED job whose record (``jobs/{jobId}/result.json``,
  else the one beside the output) disagrees with the stored output (size, SHA-256);
* ``replaced_sources``: a source, cover or scenario with more than one version;
* ``leftover_segments``: a segment object (``jobs/{jobId}/segments/*.ts``) of a split job
  whose outcome is decided (every segment goes with the outcome, whatever it is);
* ``undrained_scale_ins``: a worker that saw its group terminate its instance and exited
  cleanly without completing the lifecycle hook (or whose completion the group never got);
* ``protected_at_end``: an instance still protected from scale-in once every worker
  stopped cleanly (protection is on only while a job is in hand).

The workers are instances of a moto Auto Scaling group (``WORKER_FLEET=true``), each with
its own fake instance metadata service (tests/soak/instances.py): the killer also gives
instances spot notices and scale-ins, after which the slot restarts as a fresh instance.

It prints the seed and the kill rhythm first, details, then one ``soak:`` summary
line, and exits 1 when an invariant above is broken or jobs were still queued at
the deadline (the run dir with every worker's log is kept then and named).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import mirror_dir
from tests.soak.faults import ChaosProxy, FlakyBackend, quiet
from tests.soak.fleet import Fleet, Killer
from tests.soak.instances import Instances
from tests.soak.plan import Expected, Message, Plan, build, legacy_record, make_inputs, readable_id
from tests.worker.harness import wait_until
from worker.embedded import CallbackReceiver, EmbeddedAWS

SECRET = "soak-secret"
CALLBACK_TIMEOUT = 1.0
"""Seconds the workers wait for a callback reply; the flaky backend sometimes answers later."""
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED")
OUTPUT_PREFIX = "processed/"
SOURCE_PREFIXES = ("uploads/", "covers/", "scenarios/")
MAX_RECEIVES = 3
ZEROS = (
    "lost", "replaced_outputs", "conflicting_terminal", "leaked_tmp", "orphan_processes",
    "record_mismatch", "replaced_sources", "leftover_segments", "undrained_scale_ins", "protected_at_end",
)  # fmt: skip


@dataclass(frozen=True)
class Options:
    """How big and how rough a soak is. Seconds for every duration."""

    jobs: int = 120
    seed: int | None = None  # None: a random one (printed)
    workers: int = 3
    deadline: float = 540.0  # the work phase; shutdown and checks come on top (~30 s)
    calm: float = 60.0  # the deadline's last stretch: no kills, no faults, so running work can end
    settle: float = 15.0  # queues empty this long with jobs still open: nothing more will come
    kill_every: tuple[float, float] = (2.0, 6.0)
    restart_delay: float = 1.0
    visibility: int = 5
    drain_seconds: float = 3.0
    s3_fault_rate: float = 0.03
    callback_fault_rate: float = 0.15
    root: Path | None = None  # the run dir (default: a fresh temp dir)
    keep: bool = False  # keep the run dir even when the soak passes


@dataclass
class Report:
    seed: int
    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)

    @property
    def zeros(self) -> dict[str, int]:
        return {name: self.counts.get(name, 0) for name in ZEROS}

    @property
    def ok(self) -> bool:
        return not any(self.zeros.values()) and self.counts.get("unfinished", 0) == 0

    @property
    def summary(self) -> str:
        names = ("jobs", "completed", "failed", "dead_lettered", *ZEROS, "unfinished", "unexpected")
        return "soak: " + " ".join(f"{name}={self.counts.get(name, 0)}" for name in names)


def worker_env(aws: EmbeddedAWS, proxy: ChaosProxy, receiver: CallbackReceiver, root: Path,
               options: Options) -> dict[str, str]:  # fmt: skip
    """As tests.worker.harness.Stack.env: S3 and SQS through the proxy, one shared WORKER_TMP_DIR."""
    base = aws.environment(
        AWS_ENDPOINT_URL=proxy.endpoint,
        BACKEND_CALLBACK_URL=receiver.url,
        CALLBACK_SECRET=SECRET,
        CALLBACK_ALLOW_PRIVATE_NETWORKS="true",
        CALLBACK_TIMEOUT_SECONDS=str(CALLBACK_TIMEOUT),
        WEIGHTS_MIRROR=str(mirror_dir()),
        WEIGHTS_DIR=str(root / "weights"),
        WEIGHTS_OFFLINE="true",
        WORKER_TMP_DIR=str(root / "tmp"),
        WORKER_HEALTH_PORT="0",
        WORKER_WAIT_SECONDS="1",
        WORKER_QUEUES="gpu,cpu",
        WORKER_HEARTBEAT_SECONDS="1",
        WORKER_VISIBILITY_TIMEOUT=str(options.visibility),
        WORKER_RETRY_BASE_SECONDS="1",
        WORKER_RETRY_MAX_SECONDS="2",
        WORKER_DRAIN_SECONDS=f"{options.drain_seconds:g}",
        WORKER_DLQ_WATCH_SECONDS="5",  # the dead-letter watcher must act within a worker's short life
        WORKER_SEGMENT_SECONDS="0.8",  # the 2.4 s "long" clips split into 3 segments and a merge
        LOG_LEVEL="INFO",
        LOG_FORMAT="text",
    )
    return {**os.environ, **base}


@dataclass
class Terminal:
    status: str
    event: str
    accepted: bool
    body: dict[str, Any]


class Soak:
    """One run: the world, the plan, the fleet; :meth:`run` returns the :class:`Report`."""

    def __init__(self, options: Options, echo: Callable[[str], None] = print) -> None:
        self.options = options
        self.echo = echo
        self.seed = options.seed if options.seed is not None else random.SystemRandom().randrange(10**6)
        self.root = options.root or Path(tempfile.mkdtemp(prefix=f"soak-{self.seed}-"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp = self.root / "tmp"
        self.records: Counter[str] = Counter()
        self.started = time.monotonic()

    def say(self, line: str) -> None:
        self.echo(line)
        with (self.root / "soak.txt").open("a") as sink:
            sink.write(line + "\n")

    # ------------------------------------------------------------------ the run

    def run(self) -> Report:
        options = self.options
        aws = EmbeddedAWS()
        receiver: CallbackReceiver | None = None
        proxy: ChaosProxy | None = None
        fleet: Fleet | None = None
        killer: Killer | None = None
        instances: Instances | None = None
        try:
            aws.provision("soak", visibility=options.visibility, max_receives=MAX_RECEIVES)
            self.s3, self.sqs = aws.client("s3"), aws.client("sqs")
            self.aws = aws
            self.s3.put_bucket_versioning(Bucket=aws.bucket, VersioningConfiguration={"Status": "Enabled"})
            self.backend = FlakyBackend(
                rate=options.callback_fault_rate, rng=random.Random(self.seed + 3), timeout=CALLBACK_TIMEOUT
            )
            receiver = CallbackReceiver(secret=SECRET, answer=self.backend.answer)
            quiet(receiver.server)
            self.receiver = receiver
            proxy = ChaosProxy(aws.endpoint, rate=options.s3_fault_rate, rng=random.Random(self.seed + 2))
            plan = build(options.jobs, self.seed, receiver.url)
            instances = Instances(aws, options.workers, random.Random(self.seed + 4))
            self.instances = instances
            env = worker_env(aws, proxy, receiver, self.root, options)
            fleet = Fleet(options.workers, env, self.root / "logs", restart_delay=options.restart_delay,
                          instances=instances)  # fmt: skip
            killer = Killer(fleet, random.Random(self.seed + 1), options.kill_every)
            self.say(f"soak: seed={self.seed} jobs={options.jobs} workers={options.workers} "
                     f"deadline={options.deadline:g}s run dir {self.root}")  # fmt: skip
            self.say(
                f"soak: replay with: python -m tests.soak.chaos --jobs {options.jobs} --seed {self.seed}"
            )
            self.say(f"soak: kill rhythm: {killer.rhythm()}; restart after {options.restart_delay:g} s")
            self.say(f"soak: faults: {options.s3_fault_rate:.0%} of S3 requests 500/503, "
                     f"{options.callback_fault_rate:.0%} of callbacks 500/503/slow/past the worker's "
                     f"{CALLBACK_TIMEOUT:g} s timeout")  # fmt: skip
            self.say(f"soak: plan: {plan.describe()}")
            inputs = make_inputs(self.root / "inputs")
            for key, name in plan.uploads.items():
                self.s3.upload_file(str(inputs[name]), aws.bucket, key)
            late = self._send(plan)
            fleet.start()
            killer.start()
            outcome = self._wait(plan, late, fleet, killer, proxy)
            killer.stop()
            proxy.rate = self.backend.rate = 0.0
            self.say(f"soak: {outcome} after {time.monotonic() - self.started:.0f} s; stopping the workers")
            if not fleet.wait_ready(60):
                self.say("soak: not every worker came back up within 60 s before the stop")
            fleet.stop(timeout=options.drain_seconds + 40)
            report = self._check(plan, fleet, killer, proxy)
        except BaseException:
            if fleet is not None:
                fleet.kill_all()
            self.say(f"soak: the runner failed; run dir kept: {self.root}")
            raise
        finally:
            if killer is not None and killer.is_alive():
                killer.stop()
            if receiver is not None:
                receiver.stop()
            if proxy is not None:
                proxy.stop()
            if instances is not None:
                instances.stop()
            aws.stop()
        for line in report.details:
            self.say(line)
        if not report.ok:
            self.say(f"soak: FAILED; worker logs in {self.root / 'logs'} (run dir {self.root})")
        self.say(report.summary)
        if report.ok and not options.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        return report

    def _send(self, plan: Plan) -> list[Message]:
        """Send every message now, except those due after a job's end (returned)."""
        late = []
        for message in plan.messages:
            if message.after is not None:
                late.append(message)
                continue
            self._send_one(message)
        return late

    def _send_one(self, message: Message) -> None:
        self.sqs.send_message(
            QueueUrl=self.aws.queues[message.queue], MessageBody=message.body, DelaySeconds=message.delay
        )

    def _queued(self, dead: bool = False) -> int:
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
                 "ApproximateNumberOfMessagesDelayed"]  # fmt: skip
        total = 0
        for url in (self.aws.dead_letters if dead else self.aws.queues).values():
            found = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
            total += sum(int(found.get(name, 0)) for name in names)
        return total

    def _accepted(self) -> set[str]:
        """Job ids with a terminal callback the backend answered 2xx."""
        found = set()
        for item in list(self.receiver.received):
            if item.body.get("status") in TERMINAL:
                status = self.backend.status_of(item.body)
                if status is not None and 200 <= status < 300:
                    found.add(str(item.body.get("jobId")))
        return found

    def _wait(self, plan: Plan, late: list[Message], fleet: Fleet, killer: Killer, proxy: ChaosProxy) -> str:
        options = self.options
        start = time.monotonic()
        calm_at, deadline = start + max(0.0, options.deadline - options.calm), start + options.deadline
        empty_since: float | None = None
        next_report = start + 30
        calm = False
        while True:
            now = time.monotonic()
            done = self._accepted()
            for message in [message for message in late if message.after in done]:
                self._send_one(message)
                late.remove(message)
            queued = self._queued()
            open_jobs = [job for job in plan.tracked if job not in done]
            if queued == 0 and not late:
                empty_since = empty_since or now
                if not open_jobs:
                    return "every followed job ended and the queues are empty"
                if now - empty_since >= options.settle:
                    return f"queues empty for {options.settle:g} s with {len(open_jobs)} jobs still open"
            else:
                empty_since = None
            if now >= deadline:
                return f"deadline of {options.deadline:g} s reached with {len(open_jobs)} jobs open"
            if not calm and now >= calm_at:
                calm = True
                killer.stop()
                proxy.rate = self.backend.rate = 0.0
                self.say(f"soak: {options.calm:g} s before the deadline: no more kills or faults")
            if now >= next_report:
                next_report += 30
                ended = len(plan.tracked) - len(open_jobs)
                self.say(
                    f"soak: t={now - start:.0f}s ended={ended}/{len(plan.tracked)}"
                    f" queued={queued} dead={self._queued(dead=True)} kills={sum(killer.done.values())}"
                    f" starts={len(fleet.lives)}"
                )
            time.sleep(1)

    # ------------------------------------------------------------------ the verdict

    def _drain(self, urls: dict[str, str]) -> list[str]:
        """Receive every message of ``urls`` (kept invisible); their bodies."""
        bodies = []
        for url in urls.values():
            while True:
                reply = self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=600)
                messages = reply.get("Messages", [])
                if not messages:
                    break
                bodies += [message.get("Body", "") for message in messages]
        return bodies

    def _terminals(self) -> dict[str, list[Terminal]]:
        found: dict[str, list[Terminal]] = defaultdict(list)
        for item in list(self.receiver.received):
            status = item.body.get("status")
            if status not in TERMINAL:
                continue
            headers = {key.lower(): value for key, value in item.headers.items()}
            answer = self.backend.status_of(item.body)
            accepted = answer is not None and 200 <= answer < 300
            found[str(item.body.get("jobId"))].append(
                Terminal(str(status), headers.get("x-event-id", ""), accepted, item.body)
            )
        return found

    def _versions(self, prefix: str) -> Counter[str]:
        counts: Counter[str] = Counter()
        pages = self.s3.get_paginator("list_object_versions").paginate(Bucket=self.aws.bucket, Prefix=prefix)
        for page in pages:
            for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
                counts[item["Key"]] += 1
        return counts

    def _get(self, key: str) -> bytes | None:
        try:
            body: bytes = self.s3.get_object(Bucket=self.aws.bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return body

    def _record_problem(self, job_id: str, completed: dict[str, Any]) -> str | None:
        """What is wrong with a COMPLETED job's record and output, or None."""
        key = completed.get("outputS3Key")
        if not isinstance(key, str):
            return "COMPLETED without an outputS3Key"
        where, raw = "", None
        for candidate in (f"jobs/{job_id}/result.json", legacy_record(key, job_id)):
            raw = self._get(candidate)
            if raw is not None:
                where = candidate
                break
        if raw is None:
            return f"no record at jobs/{job_id}/result.json nor at {legacy_record(key, job_id)}"
        self.records["at jobs/" if where.startswith("jobs/") else "beside the output"] += 1
        try:
            record = json.loads(raw)
        except ValueError:
            return f"{where} is not JSON ({len(raw)} bytes starting {raw[:12]!r})"
        if not isinstance(record, dict):
            return f"{where} is not a JSON object"
        problems = []
        if str(record.get("jobId", job_id)) != job_id:
            problems.append(f"{where} names job {record.get('jobId')!r}")
        if record.get("outputS3Key") != key:
            problems.append(f"{where} names output {record.get('outputS3Key')!r}, the callback {key!r}")
        data = self._get(key)
        if data is None:
            return "; ".join([*problems, f"output {key} is missing"])
        if record.get("fileSize") != len(data):
            problems.append(f"{where} fileSize {record.get('fileSize')} != stored {len(data)} bytes")
        if completed.get("fileSize") != len(data):
            problems.append(f"callback fileSize {completed.get('fileSize')} != stored {len(data)} bytes")
        digest = hashlib.sha256(data)
        self.records["with sha256" if _sha256_fields(record) else "without sha256"] += 1
        for name, value in _sha256_fields(record):
            if value not in (digest.hexdigest(), base64.b64encode(digest.digest()).decode()):
                problems.append(f"{where} {name} {value!r} is not the stored output's SHA-256")
        if data[4:8] != b"ftyp":
            problems.append(f"{key} is not an MP4 (starts {data[:12]!r})")
        return "; ".join(problems) or None

    def _check(self, plan: Plan, fleet: Fleet, killer: Killer, proxy: ChaosProxy) -> Report:
        report = Report(self.seed, self.root)
        details = report.details
        counts = report.counts
        # Messages still in the queues once the workers are gone: in-flight ones come back first.
        wait_until(lambda: self._queued() == self._visible(), self.options.visibility + 5, step=0.5)
        leftover = self._drain(self.aws.queues)
        left_ids = {job for job in (_id_of(body) for body in leftover) if job is not None}
        dead = self._drain(self.aws.dead_letters)
        dead_ids = Counter(_id_of(body) or "(no readable id)" for body in dead)
        counts["dead_lettered"] = len(dead)
        terminals = self._terminals()

        final: dict[str, Terminal] = {}
        for job_id, events in terminals.items():
            accepted = [event for event in events if event.accepted]
            if accepted:
                final[job_id] = accepted[-1]
        counts["jobs"] = len(plan.tracked)
        counts["completed"] = sum(
            1 for job in plan.tracked if job in final and final[job].status == "COMPLETED"
        )
        counts["failed"] = sum(1 for job in plan.tracked if job in final and final[job].status == "FAILED")
        cancelled = sum(1 for job in plan.tracked if job in final and final[job].status == "CANCELLED")

        open_jobs = [job for job in plan.tracked if job not in final]
        unfinished = [job for job in open_jobs if job in left_ids]
        lost = [job for job in open_jobs if job not in left_ids]
        counts["lost"], counts["unfinished"] = len(lost), len(unfinished)
        for job in lost:
            where = "dead-lettered" if job in dead_ids else "no message left"
            tried = len(terminals.get(job, []))
            details.append(
                f"  lost {job} ({plan.tracked[job].label}): {where}, {tried} terminal POSTs, none accepted"
            )
        for job in unfinished:
            details.append(f"  unfinished {job} ({plan.tracked[job].label}): still queued at the end")

        conflicting = []
        for job_id, events in sorted(terminals.items()):
            statuses = sorted({event.status for event in events})
            ids = sorted({event.event for event in events})
            if len(statuses) > 1 or len(ids) > 1:
                conflicting.append(job_id)
                seen = ", ".join(f"{event.status}/{event.event[:8]}/attempt {event.body.get('attempt')}"
                                 f"{'' if event.accepted else ' (refused)'}" for event in events)  # fmt: skip
                details.append(f"  conflicting terminal {job_id}: {seen}")
        counts["conflicting_terminal"] = len(conflicting)

        outputs = self._versions(OUTPUT_PREFIX)
        replaced = sorted(key for key, number in outputs.items() if number > 1)
        counts["replaced_outputs"] = len(replaced)
        details += [f"  replaced output {key}: {outputs[key]} versions" for key in replaced]
        sources: Counter[str] = Counter()
        for prefix in SOURCE_PREFIXES:
            sources.update(self._versions(prefix))
        touched = sorted(key for key, number in sources.items() if number > 1)
        counts["replaced_sources"] = len(touched)
        details += [f"  replaced source {key}: {sources[key]} versions" for key in touched]

        mismatches = 0
        for job_id in plan.tracked:
            completed = [event for event in terminals.get(job_id, []) if event.status == "COMPLETED"]
            if completed:
                problem = self._record_problem(job_id, completed[-1].body)
                if problem is not None:
                    mismatches += 1
                    details.append(f"  record mismatch {job_id}: {problem}")
        counts["record_mismatch"] = mismatches

        unexpected = []
        for job_id, expected in plan.tracked.items():
            if job_id in final and not as_expected(expected, final[job_id]):
                body = final[job_id].body
                unexpected.append(job_id)
                details.append(
                    f"  unexpected {job_id} ({expected.label}, expected {expected.expect}): "
                    f"{body.get('status')} {body.get('errorCode', '')} retryable={body.get('retryable')} "
                    f"{str(body.get('errorMessage', ''))[:160]}"
                )
        counts["unexpected"] = len(unexpected)
        self._untracked(plan, terminals, details)

        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.aws.bucket, Prefix="jobs/")
        segments = [item["Key"] for page in pages for item in page.get("Contents", [])
                    if item["Key"].endswith(".ts") and item["Key"].split("/")[1] in final]  # fmt: skip
        counts["leftover_segments"] = len(segments)
        details += [f"  leftover segment {key}" for key in segments[:20]]

        leaked = (
            sorted(str(path.relative_to(self.tmp)) for path in self.tmp.rglob("*"))
            if self.tmp.exists()
            else []
        )
        top = [path for path in leaked if "/" not in path]
        counts["leaked_tmp"] = len(top)
        details += [f"  leaked tmp {path}" for path in leaked[:20]]

        def orphans() -> list[str]:
            return media_processes(self.tmp)

        wait_until(lambda: orphans() == [], 10, step=0.5)
        counts["orphan_processes"] = len(orphans())
        details += [f"  orphan process {line[:200]}" for line in orphans()]

        self._fleet_checks(fleet, proxy, report)
        details.insert(0, self._overview(plan, fleet, killer, proxy, cancelled, dead_ids, len(leftover)))
        details[1:1] = self._digest(fleet)
        return report

    def _fleet_checks(self, fleet: Fleet, proxy: ChaosProxy, report: Report) -> None:
        """Scale-ins drained then completed; no protection left once the workers stopped cleanly."""
        undrained = []
        completed = Counter(proxy.completed)
        needed: Counter[str] = Counter()
        for life in fleet.lives:
            text = life.text()
            if "terminating this instance" not in text or life.rc != 0 or "SIGKILL" in life.signals:
                continue
            instance = self.instances.ids[life.slot]
            needed[instance] += 1
            if "lifecycle hook vidworker-drain completed" not in text:
                undrained.append(f"  undrained scale-in: {life.log.name} exited without completing the hook")
        undrained += [f"  undrained scale-in: the group got {completed[key]} of {n} completions for {key}"
                      for key, n in needed.items() if completed[key] < n]  # fmt: skip
        report.counts["undrained_scale_ins"] = len(undrained)
        report.details.extend(undrained)
        stuck = {self.instances.ids[life.slot] for life in fleet.stuck}
        left = [instance for instance in self.instances.protected() if instance not in stuck]
        report.counts["protected_at_end"] = len(left)
        report.details.extend(f"  still protected from scale-in: {instance}" for instance in left)

    def _visible(self) -> int:
        total = 0
        for url in self.aws.queues.values():
            found = self.sqs.get_queue_attributes(
                QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
            )
            total += int(found["Attributes"]["ApproximateNumberOfMessages"])
        return total

    def _untracked(self, plan: Plan, terminals: dict[str, list[Terminal]], details: list[str]) -> None:
        """Callbacks for ids the soak does not follow (hostile bodies without a readable id)."""
        strays = sorted(job for job in terminals if job not in plan.tracked)
        for job in strays:
            events = terminals[job]
            details.append(
                f"  callback for an unfollowed id {job[:60]!r}: "
                + ", ".join(f"{event.status} {event.body.get('errorCode', '')}" for event in events)
            )

    def _overview(self, plan: Plan, fleet: Fleet, killer: Killer, proxy: ChaosProxy, cancelled: int,
                  dead_ids: Counter[str], leftover: int) -> str:  # fmt: skip
        exits = ", ".join(f"{name}={number}" for name, number in sorted(fleet.exits().items()))
        kills = ", ".join(f"{name}={number}" for name, number in sorted(killer.done.items()))
        s3 = ", ".join(f"{name}: {number}" for name, number in sorted(proxy.injected.items()))
        callbacks = ", ".join(f"{name}={number}" for name, number in sorted(self.backend.injected.items()))
        unsigned = sum(1 for item in self.receiver.received if item.signature_ok is not True)
        dead = ", ".join(f"{job}×{number}" if number > 1 else job for job, number in sorted(dead_ids.items()))
        records = ", ".join(f"{name}={number}" for name, number in sorted(self.records.items()))
        return "\n".join([
            f"soak: seed={self.seed} elapsed={time.monotonic() - self.started:.0f}s {plan.describe()}",
            f"  kills: {kills or 'none'}; worker starts={len(fleet.lives)} exits: {exits}; "
            f"stuck on SIGTERM={len(fleet.stuck)}",
            f"  S3 requests={proxy.requests['s3']} injected: {s3 or 'none'}; "
            f"callbacks={len(self.receiver.received)} injected: {callbacks or 'none'}, "
            f"bad signatures={unsigned}",
            f"  cancelled={cancelled} left in main queues={leftover}; dead letters: {dead or 'none'}",
            f"  records checked: {records or 'none'}",
        ])  # fmt: skip

    def _digest(self, fleet: Fleet) -> list[str]:
        """What the worker logs say: crashes (with their last line) and failure codes."""
        lines = []
        codes: Counter[str] = Counter()
        tracebacks = 0
        for life in fleet.lives:
            text = life.text()
            codes.update(f"{code} ({kind})" for code, kind in _FAILED.findall(text))
            tracebacks += text.count("Traceback (most recent call last)")
            if life.crashed:
                last = [line for line in text.splitlines() if line.strip()][-1:] or ["(empty log)"]
                lines.append(f"  crash: {life.log.name} rc={life.rc} signals={life.signals}: {last[0][:200]}")
        if codes:
            lines.append(
                "  worker failures logged: " + ", ".join(f"{code}×{n}" for code, n in codes.most_common())
            )
        lines.append(f"  tracebacks in worker logs: {tracebacks}")
        return lines


_FAILED = re.compile(r"failed with (\w+) \((retryable|permanent)\)")


def _id_of(body: str) -> str | None:
    return readable_id(body)


def media_processes(path: Path) -> list[str]:
    """Command lines of live ffmpeg/ffprobe processes that name ``path``.

    (tests.worker.harness.processes_using skips any command line that says "pytest",
    which every path under pytest's tmp_path does.)
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        program = argv[0].rsplit(b"/", 1)[-1]
        command = b" ".join(argv).decode(errors="replace")
        if program in (b"ffmpeg", b"ffprobe") and str(path) in command and state != "Z":
            found.append(command)
    return found


def _sha256_fields(record: dict[str, Any]) -> list[tuple[str, str]]:
    """``(name, value)`` of the record's SHA-256 fields (top level or metadata), whatever their spelling."""
    found = []
    metadata = record.get("metadata")
    for scope in (record, metadata if isinstance(metadata, dict) else {}):
        for name, value in scope.items():
            if "sha256" in name.lower().replace("-", "").replace("_", "") and isinstance(value, str):
                found.append((name, value))
    return found


def as_expected(expected: Expected, final: Terminal) -> bool:
    body = final.body
    if expected.expect == "COMPLETED":  # or FAILED retryable: the worker died on every try
        return final.status == "COMPLETED" or (final.status == "FAILED" and body.get("retryable") is True)
    return (
        final.status == "FAILED"
        and body.get("errorCode") == expected.expect
        and body.get("retryable") is False
    )


def run(options: Options, echo: Callable[[str], None] = print) -> Report:
    return Soak(options, echo).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=Options.jobs, help="valid jobs (default %(default)s)")
    parser.add_argument("--seed", type=int, default=None, help="replay a run (default: random, printed)")
    parser.add_argument("--workers", type=int, default=Options.workers)
    parser.add_argument("--deadline", type=float, default=Options.deadline,
                        help="seconds of work before the stop (default %(default)s)")  # fmt: skip
    parser.add_argument("--kill-every", type=float, nargs=2, default=Options.kill_every,
                        metavar=("MIN", "MAX"), help="seconds between signals")  # fmt: skip
    parser.add_argument(
        "--s3-faults", type=float, default=Options.s3_fault_rate, help="fraction of S3 requests"
    )
    parser.add_argument("--callback-faults", type=float, default=Options.callback_fault_rate)
    parser.add_argument("--root", type=Path, default=None, help="run dir (default: a fresh temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the run dir even when the soak passes")
    args = parser.parse_args(argv)
    options = Options(
        jobs=args.jobs, seed=args.seed, workers=args.workers, deadline=args.deadline,
        calm=min(Options.calm, args.deadline / 4), kill_every=(args.kill_every[0], args.kill_every[1]),
        s3_fault_rate=args.s3_faults, callback_fault_rate=args.callback_faults, root=args.root,
        keep=args.keep,
    )  # fmt: skip
    report = run(options, echo=lambda line: print(line, flush=True))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
