"""``python -m models list | download NAME... | verify [NAME...]``.

Reads ``WEIGHTS_DIR`` (default: ``weights/`` beside this package) and
``WEIGHTS_MIRROR`` (optional local folder with a ``SHA256SUMS`` file);
``WEIGHTS_OFFLINE=1`` forbids downloads (air-gapped hosts).
Exit status: 0 on success, 1 when a model is missing or refused, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from models.errors import ModelError
from models.registry import MODELS
from models.weights import WeightStore

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def store_from_env(allow_download: bool = True) -> WeightStore:
    """The weight store the CLI and local tools use, configured from the environment."""
    weights_dir = Path(os.environ.get("WEIGHTS_DIR") or DEFAULT_WEIGHTS_DIR)
    mirror = os.environ.get("WEIGHTS_MIRROR") or None
    offline = os.environ.get("WEIGHTS_OFFLINE", "").strip().lower() in {"1", "true", "yes"}
    return WeightStore(
        weights_dir, Path(mirror) if mirror else None, allow_download=allow_download and not offline
    )


def cmd_list(store: WeightStore, _names: list[str]) -> int:
    for spec in MODELS:
        _, status = store.status(spec)
        print(f"{spec.name:24} {spec.arch:8} x{spec.scale}  {spec.size / 1e6:6.1f} MB  {status}")
        print(f"{'':24} {spec.description}")
    return 0


def cmd_download(store: WeightStore, names: list[str]) -> int:
    failed = 0
    for name in names:
        try:
            spec = MODELS.get(name)
            weights = store.resolve(spec)
        except ModelError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{spec.name}: {weights.source} {weights.path} sha256 {weights.sha256}")
    return 1 if failed else 0


def cmd_verify(store: WeightStore, names: list[str]) -> int:
    specs = [MODELS.get(name) for name in names] if names else list(MODELS)
    bad = 0
    for spec in specs:
        ok, status = store.status(spec)
        refused = status.startswith("REFUSED")
        if refused or (names and not ok):
            bad += 1
        print(f"{spec.name:24} {status}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="registry and local status")
    download = sub.add_parser("download", help="fetch (or take from the mirror) and verify")
    download.add_argument("names", nargs="+", metavar="NAME")
    verify = sub.add_parser("verify", help="hash-check present files (named ones must exist)")
    verify.add_argument("names", nargs="*", metavar="NAME")
    args = parser.parse_args(argv)
    commands = {"list": cmd_list, "download": cmd_download, "verify": cmd_verify}
    try:
        return commands[args.command](store_from_env(), getattr(args, "names", []))
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
