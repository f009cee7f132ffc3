#!/usr/bin/env bash
# Set up vtc in ./.venv on a fresh machine (CPU or GPU), every package at the version in
# requirements/lock.txt, so the same environment comes back whatever the package index holds later.
# Idempotent: re-running brings an existing venv back to the lock.
#   VTC_TORCH   empty (default): the lock's torch (2.13.0, the CPU build). On a CUDA machine set e.g.
#               VTC_TORCH=torch==2.13.0 (or VTC_TORCH=torch) to take the index's CUDA build with its own
#               dependencies; every other package still comes from the lock, and the drift check skips torch.
#   VTC_VENV    where the virtual environment lives (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VTC_VENV:-.venv}
TORCH=${VTC_TORCH:-}
PY=${PYTHON:-python3}
LOCK=requirements/lock.txt

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

if [ -n "$TORCH" ]; then
  pip install "$TORCH"
  grep -viE '^torch==' "$LOCK" > "$VENV/lock-without-torch.txt"
  LOCK="$VENV/lock-without-torch.txt"
  echo torch > "$VENV/vtc-lock-skip"  # the drift check (scripts/check_lock.py) leaves torch out here
else
  rm -f "$VENV/vtc-lock-skip"
fi
# --no-deps: the lock is complete, so nothing is resolved here and nothing newer can slip in
# (lmms-eval's own pins would pull a CUDA torchvision that breaks transformers on CPU torch).
pip install --no-deps -r "$LOCK"
pip install --no-deps --no-build-isolation -e .
# A CUDA torchvision left over from an earlier install breaks transformers on a CPU torch.
if ! "$VENV/bin/python" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  "$VENV/bin/python" -m pip uninstall -y -q torchvision 2>/dev/null || true
fi
# The environment is exactly the lock, and pip check shows only the accepted conflicts.
"$VENV/bin/python" scripts/check_lock.py
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
from transformers import LlavaOnevisionForConditionalGeneration, SiglipVisionModel  # noqa: F401
import decord, zarr, lmms_eval.evaluator, torch, ray.data, s3fs, moto.server  # noqa: F401
eps = [e.name for e in md.entry_points(group="lmms_eval.models")]
assert "vtc" in eps, f"vtc's lmms_eval.models entry point is missing: {eps}"
print(f"vtc set up: torch {torch.__version__}, zarr {zarr.__version__}, lmms-eval {md.version('lmms-eval')}")
PY
# `vtc report`'s test opens report.html in headless Chromium (it skips where there is none). Not fatal:
# vtc itself does not need a browser.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then AS_ROOT=(env); elif sudo -n true 2>/dev/null; then AS_ROOT=(sudo -n env); else AS_ROOT=(); fi
  if [ ${#AS_ROOT[@]} -eq 0 ]; then
    echo "chromium not installed (needs root or passwordless sudo): the browser test of vtc report will skip"
  else
    # A package list older than a day may name .debs the mirror no longer holds.
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mtime -1 2>/dev/null)" ] \
      || ! apt-cache show chromium >/dev/null 2>&1; then
      "${AS_ROOT[@]}" apt-get update -qq >/dev/null 2>&1 || true  # one unreachable extra source is no reason to stop
    fi
    "${AS_ROOT[@]}" DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
      >/dev/null 2>&1 || echo "could not install chromium with apt-get: the browser test of vtc report will skip"
  fi
fi
