"""Check a Grafana dashboard (``make lint``): its structure, and every query through promtool.

Structure: a title and uid, unique panel ids, every panel on the 24-column grid
with a Prometheus datasource, every query with an expression and a refId
unique in its panel, and every ``$variable`` it uses defined (or Grafana's own).
Queries: Grafana's variables are replaced by values Prometheus would accept
(``$__rate_interval`` → ``5m``, ``$tier`` → ``.*``), each expression becomes a
recording rule in a scratch rule file, and ``promtool check rules`` parses
them all, as Prometheus itself would.

    python scripts/check_dashboard.py deploy/grafana/vidworker.json [--promtool PATH]

Exit status 0 when the dashboard is sound; otherwise each problem on its own line and 1.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

GRAFANA_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title / refId, expression)`` of every query, rows' nested panels included."""
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            found.append((f"{panel.get('title')!r} / {target.get('refId')}", str(target.get("expr", ""))))
    return found


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    flat = []
    for panel in dashboard.get("panels", []):
        flat.append(panel)
        flat.extend(panel.get("panels", []))
    return flat


def problems(dashboard: dict[str, Any]) -> list[str]:
    """What is wrong with the dashboard's structure; empty when nothing is."""
    found = [f"missing {key}" for key in ("title", "uid", "schemaVersion") if not dashboard.get(key)]
    defined = {item["name"] for item in dashboard.get("templating", {}).get("list", [])}
    ids: set[int] = set()
    for panel in panels(dashboard):
        name = repr(panel.get("title"))
        if panel.get("id") in ids:
            found.append(f"panel {name}: id {panel.get('id')} used twice")
        ids.add(panel.get("id", -1))
        grid = panel.get("gridPos", {})
        if not all(isinstance(grid.get(key), int) for key in "hwxy") or grid["x"] + grid["w"] > 24:
            found.append(f"panel {name}: gridPos {grid} is not on the 24-column grid")
        if panel.get("type") == "row":
            continue
        if panel.get("datasource", {}).get("type") != "prometheus":
            found.append(f"panel {name}: not a Prometheus datasource")
        refs = [target.get("refId") for target in panel.get("targets", [])]
        if not refs or len(set(refs)) != len(refs):
            found.append(f"panel {name}: no queries, or a refId used twice: {refs}")
    for where, expr in queries(dashboard):
        if not expr.strip():
            found.append(f"{where}: empty expression")
        for variable in VARIABLE.findall(expr):
            if variable not in defined and variable not in GRAFANA_VARIABLES:
                found.append(f"{where}: ${variable} is not a dashboard variable")
    return found


def as_promql(expr: str) -> str:
    """``expr`` as Prometheus would get it: Grafana's variables by example values."""
    return VARIABLE.sub(lambda match: GRAFANA_VARIABLES.get(match.group(1), ".*"), expr)


def promtool_check(dashboard: dict[str, Any], promtool: str) -> list[str]:
    """Every expression parsed by ``promtool check rules`` (as recording rules of a scratch file)."""
    rules = [
        {"record": f"dashboard:query_{index}", "expr": as_promql(expr)}
        for index, (_, expr) in enumerate(queries(dashboard))
    ]
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "dashboard-queries.yml"
        path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
        done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True)
    if done.returncode == 0:
        return []
    return [f"promtool: {line}" for line in (done.stdout + done.stderr).splitlines() if line.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dashboard", type=Path)
    parser.add_argument("--promtool", default="promtool")
    args = parser.parse_args()
    dashboard = json.loads(args.dashboard.read_text())
    found = problems(dashboard) or promtool_check(dashboard, args.promtool)
    for problem in found:
        print(f"{args.dashboard}: {problem}", file=sys.stderr)
    if not found:
        print(f"{args.dashboard}: {len(queries(dashboard))} queries, all valid")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
