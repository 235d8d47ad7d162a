"""What the soak sends: valid jobs of every task, hostile bodies, key hijacks and duplicates.

Everything here is derived from the seed alone, so a run can be replayed:
the same seed gives the same messages in the same order (the timing of the
workers, the kills and the faults is the only thing a replay cannot repeat).
"""

from __future__ import annotations

import json
import posixpath
import random
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FFMPEG = ["ffmpeg", "-v", "error", "-y", "-nostdin"]
FOLDERS = {"UPSCALE": "upscaled", "CAPTION_RENDER": "captioned", "VISUALIZE": "visualized"}
"""Task type → the folder of its default output key (spec §5)."""

TASK_TYPES = ("UPSCALE", "CAPTION_RENDER", "VISUALIZE")
COVER_KEY = "covers/soak-cover.png"
SCENARIO_KEY = "scenarios/soak-scenario.json"
MAX_BODY = 256 * 1024
"""SQS's classic message size limit; the 'big' hostile bodies are exactly this long."""

ANIMATIONS = ("none", "fade", "pop", "slide-up", "typewriter", "karaoke")
TEXTS = ("hello soak", "안녕하세요 soak", "{\\pos(0,0)} drawn literally", "카오스 테스트")


def readable_id(body: str) -> str | None:
    """The job id a backend can read from ``body``: JSON (as Python reads it), an object, a safe id.

    Ids of 1–128 letters, digits, ``-``, ``_`` and ``.`` (not first), as a string or an
    integer. A body nested past the parser's depth, an id of 401 digits, ``true``,
    ``NaN`` or one with a lone surrogate has no readable id: the soak does not require
    a terminal callback for it (it only requires the daemon to live).
    """
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    value = raw.get("jobId", raw.get("job_id"))
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    safe = all(char.isascii() and (char.isalnum() or char in "-_.") for char in text)
    return text if 1 <= len(text) <= 128 and safe and not text.startswith(".") else None


def default_output(task: str, job_id: str, stem: str) -> str:
    folder = FOLDERS[task]
    return f"processed/{folder}/{job_id}/{stem}_{folder}.mp4"


def legacy_record(output_key: str, job_id: str) -> str:
    """Where today's worker writes ``result.json``: beside the output (see worker/storage.py)."""
    folder = posixpath.dirname(output_key)
    if posixpath.basename(folder) == job_id:
        return posixpath.join(folder, "result.json")
    return f"{output_key}.result.json"


@dataclass
class Message:
    """One SQS send. ``delay``: DelaySeconds; ``after``: sent once that job has a terminal callback."""

    label: str
    body: str
    queue: str = "cpu"
    delay: int = 0
    after: str | None = None


@dataclass
class Expected:
    """A job the soak follows to its end: its id, what it is and how it should end."""

    job_id: str
    label: str  # UPSCALE, CAPTION_RENDER, VISUALIZE, hostile:<name> or hijack:<kind>
    expect: str  # COMPLETED (a valid job) or INPUT_INVALID
    output: str | None = None  # a valid job's default output key
    source: str | None = None
    copies: int = 1


@dataclass
class Plan:
    seed: int
    groups: list[list[Message]] = field(default_factory=list)
    """Sent in this order; the messages of a group back to back (duplicates 'at once')."""
    tracked: dict[str, Expected] = field(default_factory=dict)
    untracked: list[str] = field(default_factory=list)
    """Labels of the messages without a readable job id."""
    uploads: dict[str, str] = field(default_factory=dict)
    """S3 key → input name (clip, silent, song, cover, scenario)."""

    @property
    def messages(self) -> list[Message]:
        return [message for group in self.groups for message in group]

    def count(self, prefix: str) -> int:
        return sum(1 for item in self.tracked.values() if item.label.startswith(prefix))

    def describe(self) -> str:
        dups = sum(item.copies - 1 for item in self.tracked.values())
        types = " ".join(f"{task}={self.count(task)}" for task in TASK_TYPES)
        return (
            f"{len(self.messages)} messages: {types} hostile={self.count('hostile:')}"
            f"+{len(self.untracked)} without a readable id, hijacks={self.count('hijack:')}, "
            f"duplicate copies={dups}"
        )


def make_inputs(directory: Path) -> dict[str, Path]:
    """The tiny inputs, made once per run with ffmpeg's lavfi sources."""
    directory.mkdir(parents=True, exist_ok=True)
    video = "testsrc2=s=64x48:r=5:d=1"
    recipes = {
        "clip": ["-f", "lavfi", "-i", video, "-f", "lavfi", "-i", "sine=f=440:r=48000:d=1",
                 "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-f", "mp4"],
        "silent": ["-f", "lavfi", "-i", video, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-f", "mp4"],
        # longer than 1.5 x the soak's WORKER_SEGMENT_SECONDS: an UPSCALE of it is split
        "long": ["-f", "lavfi", "-i", "testsrc2=s=64x48:r=5:d=2.4", "-f", "lavfi", "-i",
                 "sine=f=440:r=48000:d=2.4", "-c:v", "libx264", "-g", "4", "-pix_fmt", "yuv420p",
                 "-c:a", "aac", "-shortest", "-f", "mp4"],
        "song": ["-f", "lavfi", "-i", "sine=f=330:r=44100:d=1", "-c:a", "libmp3lame", "-b:a", "64k",
                 "-f", "mp3"],
        "cover": ["-f", "lavfi", "-i", "testsrc2=s=64x48:d=1", "-frames:v", "1", "-c:v", "png",
                  "-f", "image2pipe"],
    }  # fmt: skip
    made = {}
    for name, args in recipes.items():
        path = directory / name
        subprocess.run([*FFMPEG, *args, str(path)], check=True)
        made[name] = path
    scenario = directory / "scenario"
    scenario.write_text(json.dumps(_scenario(random.Random(0)), ensure_ascii=False))
    made["scenario"] = scenario
    return made


def _scenario(rng: random.Random) -> dict[str, Any]:
    animation = rng.choice(ANIMATIONS)
    text = rng.choice(TEXTS)
    cue: dict[str, Any] = {"start": 0.0, "end": 0.8, "text": text, "animation": animation}
    if animation == "karaoke":
        words = text.split()
        step = 0.8 / len(words)
        cue["words"] = [
            {"start": round(i * step, 3), "end": round((i + 1) * step, 3), "text": word}
            for i, word in enumerate(words)
        ]
    style = {"size": rng.choice((10, 14, 18)), "position": rng.choice(("top", "middle", "bottom"))}
    return {"version": "1.3", "style": style, "cues": [cue]}


def _job(
    rng: random.Random, job_id: str | int, task: str, source: str, parameters: dict[str, Any], url: str
) -> dict[str, Any]:
    """A job message as Spring writes it: camelCase (or, now and then, snake_case)."""
    snake = rng.random() < 0.1
    task_text = task.lower() if rng.random() < 0.1 else task
    names = ("job_id", "task_type", "source_s3_key", "callback_url") if snake else (
        "jobId", "taskType", "sourceS3Key", "callbackUrl")  # fmt: skip
    body: dict[str, Any] = {names[0]: job_id, "userId": rng.randint(1, 999), names[1]: task_text,
                            names[2]: source, "parameters": parameters, "status": "QUEUED"}  # fmt: skip
    if rng.random() < 0.25:
        body[names[3]] = url  # the default target, named explicitly
    return body


def _parameters(rng: random.Random, task: str) -> dict[str, Any]:
    if task == "UPSCALE":
        return {"scaleFactor": rng.choice((2, 2, 2, 4)), "model": "realesr-animevideov3"}
    if task == "CAPTION_RENDER":
        options = rng.choice(({}, {"width": 64}, {"width": 96, "quality": 30}))
        if rng.random() < 0.3:
            return {"scenarioS3Key": SCENARIO_KEY, "options": options}
        return {"scenario": _scenario(rng), "options": options}
    return {"coverS3Key": COVER_KEY, "resolution": rng.choice(("64x48", "96x64")), "fps": 5}


def build(jobs: int, seed: int, url: str) -> Plan:
    """``jobs`` valid jobs plus the hostile bodies, hijacks and duplicates, all from ``seed``."""
    rng = random.Random(seed)
    plan = Plan(seed)
    plan.uploads[COVER_KEY] = "cover"
    plan.uploads[SCENARIO_KEY] = "scenario"
    share = [rng.uniform(0.3, 0.45), rng.uniform(0.25, 0.35)]
    counts = [max(1, round(jobs * share[0])), max(1, round(jobs * share[1]))]
    counts.append(max(1, jobs - sum(counts)))
    kinds = [task for task, count in zip(TASK_TYPES, counts, strict=True) for _ in range(count)][:jobs]
    rng.shuffle(kinds)
    valid: list[tuple[Expected, dict[str, Any], str]] = []
    for index, task in enumerate(kinds):
        prefix = {"UPSCALE": "up", "CAPTION_RENDER": "cap", "VISUALIZE": "vis"}[task]
        raw_id: str | int = 100_000 + index if rng.random() < 0.1 else f"{prefix}-{index:03d}"
        job_id = str(raw_id)
        videos = ("clip", "silent", "long") if task == "UPSCALE" else ("clip", "silent")
        name, stem = ("song", "song") if task == "VISUALIZE" else (rng.choice(videos), "clip")
        source = f"uploads/{job_id}/{stem}{'.mp3' if task == 'VISUALIZE' else '.mp4'}"
        plan.uploads[source] = name
        body = _job(rng, raw_id, task, source, _parameters(rng, task), url)
        expected = Expected(job_id, task, "COMPLETED", default_output(task, job_id, stem), source)
        queue = "gpu" if rng.random() < 0.2 else "cpu"
        valid.append((expected, body, queue))
        plan.tracked[job_id] = expected
    groups: list[list[Message]] = []
    late: list[Message] = []
    duplicated = set(rng.sample(range(len(valid)), k=min(len(valid), max(2, round(jobs * 0.15)))))
    for index, (expected, body, queue) in enumerate(valid):
        text = json.dumps(body, ensure_ascii=False)
        group = [Message(expected.label, text, queue)]
        if index in duplicated:
            mode = rng.choice(("together", "together", "delayed", "late"))
            extra = rng.choice((1, 1, 2))
            expected.copies += extra
            for _ in range(extra):
                if mode == "together":
                    group.append(Message(f"{expected.label}:dup-together", text, queue))
                elif mode == "delayed":
                    delay = rng.randint(3, 30)
                    groups.append([Message(f"{expected.label}:dup-delayed", text, queue, delay=delay)])
                else:
                    late.append(Message(f"{expected.label}:dup-late", text, queue, after=expected.job_id))
        groups.append(group)
    for label, text, expect in _hostile(rng, plan):
        readable = readable_id(text)
        if readable is None:
            plan.untracked.append(label)
        else:
            plan.tracked[readable] = Expected(readable, label, expect)
        groups.append([Message(label, text, rng.choice(("cpu", "cpu", "gpu")))])
    victims = [item[0] for item in valid]
    for label, text in _hijacks(rng, plan, victims, max(5, jobs // 20), url):
        readable = readable_id(text)
        assert readable is not None
        copies = 2 if rng.random() < 0.2 else 1  # a refused job delivered twice at once
        plan.tracked[readable] = Expected(readable, label, "INPUT_INVALID", copies=copies)
        groups.append([Message(label, text) for _ in range(copies)])
    rng.shuffle(groups)
    plan.groups = groups + [[message] for message in late]
    return plan


def _hostile(rng: random.Random, plan: Plan) -> list[tuple[str, str, str]]:
    """(label, body, expected error code) of every hostile message (reliability.md case 18)."""
    source = "uploads/hostile/clip.mp4"
    plan.uploads[source] = "clip"

    def job(job_id: str, task: str = "UPSCALE", **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"jobId": job_id, "taskType": task, "sourceS3Key": source, "status": "QUEUED"}
        body["parameters"] = {"scaleFactor": 2, "model": "realesr-animevideov3"} if task == "UPSCALE" else {}
        body.update(fields)
        return body

    def dumps(body: Any) -> str:
        return json.dumps(body)  # ASCII, NaN written as NaN, lone surrogates as \udXXX escapes

    nested = '{"a":' * 2000 + "1" + "}" * 2000
    big = dumps(job("hx-big", sourceS3Key="uploads/"))
    big = big.replace('"uploads/"', '"uploads/' + "a" * (MAX_BODY - len(big)) + '"')
    cue = {"start": 0.0, "end": 0.8, "text": "x"}
    items = [
        ("hostile:deep-array", "[" * 2000 + "]" * 2000, ""),
        ("hostile:deep-with-id", dumps(job("hx-deep"))[:-1] + ',"extra":' + nested + "}", "INPUT_INVALID"),
        ("hostile:big-key", big, "INPUT_INVALID"),
        ("hostile:big-noid", '["' + "x" * (MAX_BODY - 4) + '"]', ""),
        ("hostile:surrogate-key", dumps(job("hx-surrogate-key", sourceS3Key="uploads/\udc80.mp4")),
         "INPUT_INVALID"),
        ("hostile:surrogate-text", dumps(job("hx-surrogate-text", "CAPTION_RENDER", parameters={
            "scenario": {"cues": [{**cue, "text": "bad \ud83d text"}]}})), "INPUT_INVALID"),
        ("hostile:surrogate-id", dumps(job("hx-\ud800")), ""),
        ("hostile:nan-scale", dumps(job("hx-nan-scale", parameters={"scaleFactor": float("nan")})),
         "INPUT_INVALID"),
        ("hostile:nan-cue", dumps(job("hx-nan-cue", "CAPTION_RENDER", parameters={
            "scenario": {"cues": [{**cue, "start": float("nan"), "end": float("inf")}]}})), "INPUT_INVALID"),
        ("hostile:nan-id", dumps(job("x", jobId=float("nan"))), ""),
        ("hostile:huge-id", dumps(job("x", jobId=10**400)), ""),
        ("hostile:huge-scale", dumps(job("hx-huge-scale", parameters={"scaleFactor": 10**400})),
         "INPUT_INVALID"),
        ("hostile:huge-width", dumps(job("hx-huge-width", "CAPTION_RENDER", parameters={
            "scenario": {"cues": [cue]}, "options": {"width": 10**400}})), "INPUT_INVALID"),
        ("hostile:huge-unparsable", dumps(job("hx-5000-digits")).replace('"QUEUED"', "1" + "0" * 5000), ""),
        ("hostile:wrong-types", dumps(job("hx-types", taskType=7, sourceS3Key=["a"], parameters="yes",
                                          callbackUrl=42, outputS3Key={})), "INPUT_INVALID"),
        ("hostile:wrong-param-types", dumps(job("hx-param-types", "VISUALIZE", parameters={
            "coverS3Key": 5, "resolution": [64, 48], "fps": "fast"})), "INPUT_INVALID"),
        ("hostile:unknown-task", dumps(job("hx-unknown-task", "TRANSCODE")), "INPUT_INVALID"),
        ("hostile:bool-id", dumps(job("x", jobId=True)), ""),
        ("hostile:object-id", dumps(job("x", jobId={"$gt": ""})), ""),
        ("hostile:path-id", dumps(job("../../etc/passwd")), ""),
        ("hostile:not-json", "{not json", ""),
        ("hostile:blank", " ", ""),
        ("hostile:array", "[1, 2, 3]", ""),
        ("hostile:null", "null", ""),
    ]  # fmt: skip
    rng.shuffle(items)
    return items


def _hijacks(
    rng: random.Random, plan: Plan, victims: list[Expected], count: int, url: str
) -> list[tuple[str, str]]:
    """Jobs whose ``outputS3Key`` names a key that is not theirs to write (reliability.md case 19)."""
    kinds = ("output", "record", "legacy-record", "source", "outside")
    found = []
    for index in range(count):
        kind = kinds[index % len(kinds)]
        victim = rng.choice(victims)
        assert victim.output is not None and victim.source is not None
        job_id = f"hj-{kind}-{index}"
        target = {
            "output": victim.output,
            "record": f"jobs/{victim.job_id}/result.json",
            "legacy-record": legacy_record(victim.output, victim.job_id),
            "source": victim.source,
            "outside": f"exports/{job_id}.mp4",
        }[kind]
        source = f"uploads/{job_id}/clip.mp4"
        plan.uploads[source] = "clip"
        parameters = _parameters(rng, "UPSCALE")
        body = _job(rng, job_id, "UPSCALE", source, parameters, url) | {"outputS3Key": target}
        found.append((f"hijack:{kind}", json.dumps(body, ensure_ascii=False)))
    return found
