"""``make demo``: the whole daemon on an embedded AWS, one generated clip, end to end.

Starts moto's server (SQS + S3) with GPU and CPU queues, their dead-letter
queues and a bucket; a local callback receiver; the daemon as a real
subprocess (``python -m worker run``). Then enqueues a generated clip the way
the Spring backend does, waits for COMPLETED, downloads the result into
``--output`` and prints the callbacks and the output's metadata. Everything is
stopped before it exits (0 on success).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from worker.embedded import CallbackReceiver, EmbeddedAWS

ROOT = Path(__file__).resolve().parent.parent


def make_clip(path: Path) -> None:
    """3 s of 160x90 test pattern at 10 fps with a 440 Hz tone."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-nostdin", "-f", "lavfi", "-i", "testsrc2=s=160x90:r=10:d=3",
         "-f", "lavfi", "-i", "sine=f=440:d=3", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
         "-shortest", str(path)],
        check=True,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "demo-output")
    parser.add_argument("--model", default="realesr-animevideov3")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()

    aws = EmbeddedAWS()
    secret = secrets.token_hex(16)
    receiver = CallbackReceiver(secret=secret)
    work = Path(tempfile.mkdtemp(prefix="vidworker-demo-"))
    daemon: subprocess.Popen[bytes] | None = None
    try:
        aws.provision()
        print(f"embedded AWS at {aws.endpoint}: bucket {aws.bucket}, queues {', '.join(aws.queues)}")
        env = {
            **os.environ,
            **aws.environment(
                BACKEND_CALLBACK_URL=receiver.url, CALLBACK_SECRET=secret,
                CALLBACK_ALLOW_PRIVATE_NETWORKS="true", WORKER_TMP_DIR=str(work / "tmp"),
                WORKER_HEALTH_PORT="0", WORKER_WAIT_SECONDS="1", WORKER_QUEUES="cpu",
            ),
        }  # fmt: skip
        daemon = subprocess.Popen([sys.executable, "-m", "worker", "run"], cwd=ROOT, env=env)
        clip = work / "sample.mp4"
        make_clip(clip)
        job_id = f"demo-{uuid.uuid4().hex[:8]}"
        aws.client("s3").upload_file(str(clip), aws.bucket, "uploads/demo/sample.mp4")
        message = {
            "jobId": job_id, "userId": 1, "taskType": "UPSCALE", "sourceS3Key": "uploads/demo/sample.mp4",
            "parameters": {"scaleFactor": args.scale, "model": args.model}, "status": "QUEUED",
        }  # fmt: skip
        aws.client("sqs").send_message(QueueUrl=aws.queues["cpu"], MessageBody=json.dumps(message))
        print(f"enqueued {job_id}: {json.dumps(message)}")
        done = receiver.wait_for(
            lambda item: item.body.get("jobId") == job_id and item.body["status"] in ("COMPLETED", "FAILED"),
            timeout=args.timeout,
        )
        for item in receiver.of(job_id):
            shown = {k: v for k, v in item.body.items() if k != "downloadUrl"}
            print(f"callback (signature {'ok' if item.signature_ok else 'BAD'}): {json.dumps(shown)}")
        if done is None or done.body["status"] != "COMPLETED":
            print("the job did not complete", file=sys.stderr)
            return 1
        args.output.mkdir(parents=True, exist_ok=True)
        target = args.output / Path(done.body["outputS3Key"]).name
        aws.client("s3").download_file(aws.bucket, done.body["outputS3Key"], str(target))
        print(f"output: {target} ({target.stat().st_size} bytes)")
        print(json.dumps(done.body["metadata"], indent=2))
        return 0
    finally:
        if daemon is not None:
            daemon.terminate()
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
        receiver.stop()
        aws.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
