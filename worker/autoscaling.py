"""This instance in its Auto Scaling group: scale-in protection while it holds work, and the
termination lifecycle action completed once it has let its work go.

Protection is set only when it changes (a job after a job keeps it on; an
empty receive turns it off), so a busy worker makes no Auto Scaling call per
job. Every call here is best effort: a failure is logged and counted
(``vidworker_autoscaling_errors``), retried at the next change, and never
fails a job.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from worker import metrics

log = logging.getLogger(__name__)


class GroupMember:
    """``instance_id`` in ``group``; ``hook``: the termination lifecycle hook to complete, if any."""

    def __init__(self, client: Any, group: str, instance_id: str, hook: str | None = None) -> None:
        self.client = client
        self.group = group
        self.instance_id = instance_id
        self.hook = hook
        self.protected: bool | None = None  # as last set in the group; None: not known
        self._lock = threading.Lock()

    def protect(self, on: bool) -> None:
        """Protect this instance from scale-in (``on``) or let the group choose it again."""
        with self._lock:
            if self.protected is on:
                return
            try:
                self.client.set_instance_protection(
                    AutoScalingGroupName=self.group, InstanceIds=[self.instance_id],
                    ProtectedFromScaleIn=on,
                )  # fmt: skip
            except Exception as error:
                self.protected = None  # set it again at the next change
                log.warning("could not turn scale-in protection %s: %s", "on" if on else "off", error)
                metrics.AUTOSCALING_ERRORS.labels("SetInstanceProtection").inc()
                return
            self.protected = on
            metrics.PROTECTED.set(int(on))
            log.info("scale-in protection %s", "on" if on else "off")

    def complete_termination(self) -> None:
        """Tell the group this instance has finished or released its work: it may terminate now."""
        if self.hook is None:
            return
        try:
            self.client.complete_lifecycle_action(
                LifecycleHookName=self.hook, AutoScalingGroupName=self.group, InstanceId=self.instance_id,
                LifecycleActionResult="CONTINUE",
            )  # fmt: skip
        except Exception as error:  # no action pending (already completed, timed out): the group goes on
            log.warning("could not complete lifecycle hook %s: %s", self.hook, error)
            metrics.AUTOSCALING_ERRORS.labels("CompleteLifecycleAction").inc()
            return
        log.info("lifecycle hook %s completed: the group may terminate this instance", self.hook)
