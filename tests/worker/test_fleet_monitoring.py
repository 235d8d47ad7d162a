"""The dashboard and the alert rules name only metrics the worker exports, and what they need is there."""

from __future__ import annotations

import json
import re

import pytest
import yaml  # type: ignore[import-untyped]

from scripts.check_dashboard import problems, promtool_check, queries
from tests.conftest import ROOT
from worker import metrics

DASHBOARD = ROOT / "deploy" / "grafana" / "vidworker.json"
RULES = ROOT / "deploy" / "prometheus" / "vidworker-rules.yml"
NAME = re.compile(r"\bvidworker_[a-z0-9_]+\b")
WATCHED = (
    "vidworker_jobs_total", "vidworker_queue_messages", 'dead_letter="true"', "vidworker_job_seconds",
    "vidworker_frames_total", 'stage="segment"', 'how="reused"', "vidworker_heartbeat_failures_total",
    "vidworker_callbacks_total", 'up{job="vidworker"', "vidworker_draining",
)  # fmt: skip
"""What the issue asks the dashboard to show: outcomes, queues and DLQs, seconds, fps, segments, skip rate,
heartbeat and callback failures, workers up and draining."""
ALERTED = (
    'dead_letter="true"', 'up{job="vidworker"} == 0', "vidworker_progress_timestamp_seconds",
    "vidworker_callbacks_total", "vidworker_heartbeat_failures_total", "vidworker_tmp_free_bytes",
)  # fmt: skip
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
            "gauge": ("",)}  # fmt: skip


def exported() -> set[str]:
    """Every sample name the worker's /metrics can carry, labelled families before their first sample too."""
    names: set[str] = set()
    for family in metrics.REGISTRY.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    collector = metrics.HostCollector(lambda: {("cpu", False): (1, 0)}, lambda: 1)
    names.update(family.name for family in collector.collect())
    return names


def rule_expressions() -> list[str]:
    document = yaml.safe_load(RULES.read_text())
    return [str(rule["expr"]) for group in document["groups"] for rule in group["rules"]]


def test_every_metric_the_dashboard_and_rules_name_is_exported() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    named = {name for _, expr in queries(dashboard) for name in NAME.findall(expr)}
    named |= {name for expr in rule_expressions() for name in NAME.findall(expr)}
    assert named, "no vidworker_* metric found: the pattern is wrong"
    assert named <= exported(), sorted(named - exported())


def test_the_dashboard_covers_what_an_operator_watches() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert problems(dashboard) == []
    text = " ".join(expr for _, expr in queries(dashboard))
    for needed in WATCHED:
        assert needed in text, needed


def test_alerts_cover_dead_letters_down_stalls_callbacks_heartbeats_and_disk() -> None:
    text = " ".join(rule_expressions())
    for needed in ALERTED:
        assert needed in text, needed


def test_a_broken_dashboard_is_caught() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    dashboard["panels"][1]["targets"][0]["expr"] = 'sum(vidworker_running{tier=~"$nosuch"})'
    dashboard["panels"][2]["id"] = dashboard["panels"][1]["id"]
    found = problems(dashboard)
    assert any("$nosuch" in problem for problem in found) and any(
        "used twice" in problem for problem in found
    )


def test_the_host_collector_reports_depth_and_free_space_and_survives_sqs_failures() -> None:
    calls = []

    def depth() -> dict[tuple[str, bool], tuple[int, int]]:
        calls.append(1)
        if len(calls) > 1:
            raise OSError("SQS unreachable")
        return {("gpu", False): (7, 1), ("gpu", True): (2, 0)}

    collector = metrics.HostCollector(depth, lambda: 12345, every=0)
    for _ in range(2):  # the second read fails: the last depth stands
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value for f in collector.collect() for s in f.samples
        }
        assert (
            samples[
                (
                    "vidworker_queue_messages",
                    (("dead_letter", "false"), ("queue", "gpu"), ("state", "visible")),
                )
            ]
            == 7
        )
        assert (
            samples[
                (
                    "vidworker_queue_messages",
                    (("dead_letter", "true"), ("queue", "gpu"), ("state", "visible")),
                )
            ]
            == 2
        )
        assert samples[("vidworker_tmp_free_bytes", ())] == 12345
    assert len(calls) == 2


def test_promtool_rejects_a_dashboard_query_prometheus_would_not_parse() -> None:
    promtool = ROOT / ".venv" / "bin" / "promtool"  # make lint installs it before the tests run
    if not promtool.exists():
        pytest.skip("no promtool: `make lint` installs it")
    dashboard = json.loads(DASHBOARD.read_text())
    assert promtool_check(dashboard, str(promtool)) == []
    dashboard["panels"][1]["targets"][0]["expr"] = "sum(rate(vidworker_jobs_total[5m])"
    assert any("promtool" in problem for problem in promtool_check(dashboard, str(promtool)))
