"""What processes a test left behind."""

from __future__ import annotations

import os
from pathlib import Path


def children(parent: int | None = None) -> list[tuple[int, str]]:
    """``(pid, command name)`` of the live (not zombie) children of ``parent`` (default: this process)."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == parent and state != "Z":
            found.append((int(entry.name), name))
    return found
