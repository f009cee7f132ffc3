#!/usr/bin/env bash
# Set up vtc in ./.venv on a fresh machine (CPU or GPU). Idempotent: re-running only fills gaps.
#   VTC_TORCH   torch requirement to install first (default torch==2.13.0, the CPU wheel on this
#               project's machines; on a CUDA machine set e.g. VTC_TORCH="torch" to take the index's build)
#   VTC_VENV    where the virtual environment lives (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VTC_VENV:-.venv}
TORCH=${VTC_TORCH:-torch==2.13.0}
PY=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }

# torch first and pinned: anything that later asks for "torch" is then satisfied and no CUDA stack is pulled.
pip install "$TORCH"
pip install -e ".[dev]"
# lmms-eval without its own pins (see requirements/lmms-eval.txt for why).
pip install -r requirements/lmms-eval.txt
pip install --no-deps "lmms-eval==0.7.3"
# A CUDA torchvision left over from an earlier install breaks transformers on a CPU torch.
if ! "$VENV/bin/python" -c "import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  "$VENV/bin/python" -m pip uninstall -y -q torchvision 2>/dev/null || true
fi
"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
from transformers import LlavaOnevisionForConditionalGeneration, SiglipVisionModel  # noqa: F401
import decord, zarr, lmms_eval.evaluator, torch  # noqa: F401
eps = [e.name for e in md.entry_points(group="lmms_eval.models")]
assert "vtc" in eps, f"vtc's lmms_eval.models entry point is missing: {eps}"
print(f"vtc set up: torch {torch.__version__}, zarr {zarr.__version__}, lmms-eval {md.version('lmms-eval')}")
PY
