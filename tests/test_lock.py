"""The environment is the lock: drift is named in one line, pip check shows only accepted conflicts, and
the lmms-eval code paths vtc uses work with lmms-eval installed without its own dependencies."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "check_lock.py"


def _check_lock():
    spec = importlib.util.spec_from_file_location("check_lock", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_check(*args, env=None):
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_installed_environment_is_the_lock():
    """What CI's fresh `make setup` installed equals requirements/lock.txt, package by package."""
    cl = _check_lock()
    lock = cl.read_lock(ROOT / "requirements" / "lock.txt")
    assert {"torch", "transformers", "lmms-eval", "filelock", "zarr", "typer"} <= set(lock)
    assert cl.drift(lock, cl.skipped()) == []


def test_drift_is_one_line_naming_the_package(tmp_path):
    lock = (ROOT / "requirements" / "lock.txt").read_text()
    numpy_line = next(x for x in lock.splitlines() if x.lower().startswith("numpy=="))
    (tmp_path / "lock.txt").write_text(lock.replace(numpy_line, "numpy==0.0.1"))
    r = run_check("--lock", tmp_path / "lock.txt", "--no-pip-check")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        f"drift: numpy is installed {numpy_line.split('==')[1]}, the lock says 0.0.1 (run make setup)"
    ]
    (tmp_path / "lock.txt").write_text(lock + "not-a-package-vtc-uses==1.0\n")
    r = run_check("--lock", tmp_path / "lock.txt", "--no-pip-check")
    assert r.returncode == 1 and "not-a-package-vtc-uses is not installed" in r.stderr
    r = run_check(
        "--lock", tmp_path / "lock.txt", "--no-pip-check", env={"VTC_LOCK_SKIP": "not-a-package-vtc-uses"}
    )
    assert r.returncode == 0, r.stderr


def test_pip_check_allows_only_the_accepted_conflicts(tmp_path):
    out = tmp_path / "check.txt"
    out.write_text(
        "lmms-eval 0.7.3 requires torchvision, which is not installed.\n"
        "lmms-eval 0.7.3 has requirement av<16.0.0, but you have av 18.1.0.\n"
    )
    r = run_check("--no-drift", "--pip-check", out)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "pip check: lmms-eval 0.7.3 has requirement av<16.0.0, but you have av 18.1.0. "
        "(not in requirements/accepted-conflicts.txt)"
    ]
    r = run_check("--no-drift")  # the real pip check of this environment
    assert r.returncode == 0, r.stderr


def test_every_accepted_conflict_has_a_reason():
    for line in (ROOT / "requirements" / "accepted-conflicts.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            assert len(line.split()) >= 3, f"no reason given: {line!r}"


def test_lmms_eval_paths_vtc_uses_import():
    """lmms-eval is installed without its dependencies: the modules vtc runs must import (filelock 4
    removed filelock._api, which lmms-eval's evaluator imports: the lock keeps filelock 3)."""
    import av
    import filelock
    from lmms_eval.api.instance import Instance  # noqa: F401
    from lmms_eval.api.model import lmms  # noqa: F401
    from lmms_eval.evaluator import simple_evaluate  # noqa: F401
    from lmms_eval.tasks import TaskManager  # noqa: F401

    assert int(filelock.__version__.split(".")[0]) < 4
    assert int(av.__version__.split(".")[0]) < 16  # lmms-eval 0.7.3 declares av<16
