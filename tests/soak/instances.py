"""The soak's workers as instances of an Auto Scaling group: one fake metadata service per slot.

Each worker slot is an instance of a moto Auto Scaling group with its own fake
IMDSv2 (tests/worker/fake_imds.py). The killer gives an instance a spot
interruption notice or has the group terminate it; when the worker has gone,
its slot starts as a fresh instance (the notice cleared), as a replacement would.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from tests.worker.fake_imds import FakeMetadata
from tests.worker.harness import auto_scaling_group
from worker.embedded import EmbeddedAWS

GROUP = "soak-workers"
HOOK = "vidworker-drain"


class Instances:
    def __init__(self, aws: EmbeddedAWS, size: int, rng: random.Random) -> None:
        self.aws = aws
        self.rng = rng
        self.ids = auto_scaling_group(aws, GROUP, size)
        self.metadata = [
            FakeMetadata(**{"instance-id": instance, "tags/instance/aws:autoscaling:groupName": GROUP})
            for instance in self.ids
        ]

    def env(self, slot: int) -> dict[str, str]:
        return {"WORKER_FLEET": "true", "WORKER_LIFECYCLE_HOOK": HOOK,
                "AWS_EC2_METADATA_SERVICE_ENDPOINT": self.metadata[slot].endpoint}  # fmt: skip

    def spot(self, slot: int) -> None:
        """A spot notice: the instance goes in 20-120 s, so the job in hand finishes or is released."""
        when = datetime.now(UTC) + timedelta(seconds=self.rng.uniform(20, 120))
        notice = f'{{"action": "terminate", "time": "{when:%Y-%m-%dT%H:%M:%SZ}"}}'
        self.metadata[slot].items["spot/instance-action"] = notice

    def scale_in(self, slot: int) -> None:
        self.metadata[slot].items["autoscaling/target-lifecycle-state"] = "Terminated"

    def replaced(self, slot: int) -> None:
        """The slot's worker has gone: its next one runs on a fresh instance, without a notice."""
        items = self.metadata[slot].items
        items.pop("spot/instance-action", None)
        items.pop("autoscaling/target-lifecycle-state", None)

    def protected(self) -> list[str]:
        found = self.aws.client("autoscaling").describe_auto_scaling_instances(InstanceIds=self.ids)
        return [item["InstanceId"] for item in found["AutoScalingInstances"] if item["ProtectedFromScaleIn"]]

    def stop(self) -> None:
        for metadata in self.metadata:
            metadata.stop()
