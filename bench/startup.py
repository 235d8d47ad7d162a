"""Start-up benchmark: spawn to an engine ready to take frames, with and without the torch module.

On a CPU an engine runs on OpenVINO, read from the IR cached by weights sha256; the
torch module is only built when something needs it (a torch runtime, a conversion).
Building it means importing spandrel, whose architectures pull torchvision and, through
it, ``torch._dynamo``. This measures what that costs each process (each worker start,
each local run), realesr-animevideov3 x2 on the CPU:

* ``served``: ``Upscaler.create`` alone, what a worker or the local script does;
* ``built``: the same, then ``engine.network`` (the module built, spandrel imported),
  what every start paid before the module was made lazy.

Each run is a fresh interpreter (``python -c``), timed by the parent from spawn
until the child prints that its engine is ready; the child exits at once. The IR
cache is warmed first (one untimed run). The two cases alternate over ``--rounds``;
medians are compared.

    python -m bench.startup [--rounds 5]

Key lines: ``engine_ready_s: X.XX`` (served), ``engine_ready_with_module_s: X.XX``
(built) and ``startup_saving_s: X.XX``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.e2e import box_line

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import sys
from models import Upscaler, UpscalerConfig
from models.__main__ import store_from_env
engine = Upscaler.create(UpscalerConfig("realesr-animevideov3", scale=2, device="cpu"), store_from_env())
if sys.argv[1] == "built":
    engine.network
print(engine.info.runtime, "spandrel" in sys.modules, flush=True)
"""


def ready_after(case: str) -> tuple[float, str]:
    """Seconds from spawn to the child's ready line, and that line."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, case], cwd=ROOT, stdout=subprocess.PIPE, text=True, env=os.environ
    )
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    ready = time.perf_counter() - started
    if child.wait() != 0 or not line:
        raise SystemExit(f"the {case} child failed")
    return ready, line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print(box_line())
    ready_after("served")  # the IR cache warm, the page cache too
    times: dict[str, list[float]] = {"served": [], "built": []}
    lines: dict[str, str] = {}
    for round_ in range(args.rounds):
        for case in ("served", "built") if round_ % 2 == 0 else ("built", "served"):
            seconds, lines[case] = ready_after(case)
            times[case].append(seconds)
    for case, runs in times.items():
        print(f"{case:7} median {statistics.median(runs):.2f} s  runs {' '.join(f'{t:.2f}' for t in runs)}"
              f"  (runtime, spandrel imported: {lines[case]})")  # fmt: skip
    served, built = statistics.median(times["served"]), statistics.median(times["built"])
    print()
    print(f"engine_ready_s: {served:.2f}")
    print(f"engine_ready_with_module_s: {built:.2f}")
    print(f"startup_saving_s: {built - served:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
