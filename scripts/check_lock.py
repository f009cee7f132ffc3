#!/usr/bin/env python3
"""Check the environment against requirements/lock.txt (drift) and `pip check` against the accepted
conflicts in requirements/accepted-conflicts.txt. Exit 1 with one line per problem, naming the package.

    python scripts/check_lock.py                  # both checks, in the running interpreter's environment
    VTC_LOCK_SKIP=torch python scripts/check_lock.py   # torch is not the locked CPU build

scripts/setup.sh with VTC_TORCH set (a CUDA torch) records the skip in the venv (vtc-lock-skip), so the
check and tests/test_lock.py skip torch there without the variable.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            if not sep:
                raise SystemExit(f"{path}: '{line}' is not NAME==VERSION; regenerate it with make lock")
            pins[norm(name)] = version.strip()
    return pins


def drift(lock: dict[str, str], skip: set[str]) -> list[str]:
    """One line per locked package whose installed version differs from the lock (or that is missing)."""
    installed = {norm(d.metadata["Name"]): d.version for d in md.distributions() if d.metadata["Name"]}
    problems = []
    for name, want in sorted(lock.items()):
        if name in skip:
            continue
        have = installed.get(name)
        if have != want:
            state = "not installed" if have is None else f"installed {have}"
            problems.append(f"drift: {name} is {state}, the lock says {want} (run make setup)")
    return problems


def skipped() -> set[str]:
    """Packages the drift check leaves out: VTC_LOCK_SKIP, and what the set-up recorded in the venv."""
    names = os.environ.get("VTC_LOCK_SKIP", "")
    recorded = Path(sys.prefix) / "vtc-lock-skip"
    if recorded.is_file():
        names += "," + recorded.read_text(encoding="utf-8")
    return {norm(s.strip()) for s in names.replace("\n", ",").split(",") if s.strip()}


def read_accepted(path: Path) -> set[tuple[str, str]]:
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            pkg, dep = line.split()[:2]
            out.add((norm(pkg), norm(dep)))
    return out


_PIP_CHECK = re.compile(r"^(\S+) \S+ (?:requires|has requirement) ([A-Za-z0-9_.-]+)")


def conflicts(pip_check_output: str, accepted: set[tuple[str, str]]) -> list[str]:
    """pip check's lines that are not accepted conflicts."""
    out = []
    for line in pip_check_output.splitlines():
        line = line.strip()
        if not line or line.startswith("No broken requirements"):
            continue
        m = _PIP_CHECK.match(line)
        if not m or (norm(m.group(1)), norm(m.group(2))) not in accepted:
            out.append(f"pip check: {line} (not in requirements/accepted-conflicts.txt)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lock", type=Path, default=ROOT / "requirements" / "lock.txt")
    ap.add_argument("--accepted", type=Path, default=ROOT / "requirements" / "accepted-conflicts.txt")
    ap.add_argument(
        "--pip-check", type=Path, help="read pip check's output from this file instead of running it"
    )
    ap.add_argument("--no-drift", action="store_true", help="only the pip check")
    ap.add_argument("--no-pip-check", action="store_true", help="only the drift check")
    args = ap.parse_args(argv)
    skip = skipped()
    problems = []
    if not args.no_drift:
        problems += drift(read_lock(args.lock), skip)
    if not args.no_pip_check:
        if args.pip_check:
            text = args.pip_check.read_text(encoding="utf-8")
        else:
            text = subprocess.run(
                [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, check=False
            ).stdout
        problems += conflicts(text, read_accepted(args.accepted))
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
