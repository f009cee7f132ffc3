"""A benchmark is one `TaskSpec`, registered by its own file under ``vtc/eval/tasks/``.

The spec holds everything vtc knows about a benchmark's local copy: the lmms-eval task it mirrors, the
headline metric and its scale, the columns a row must have and the check of a usable answer, the
per-sample category field, how ``vtc prepare`` reads the downloaded layout and finds each row's video,
and whether results break down by duration. The task file beside it holds the ``<name>_doc_to_*``
functions lmms-eval calls.

lmms-eval's task utils take seconds to import (and some need the network), so a task file imports them
only when lmms-eval runs the task: its re-exported lmms-eval functions resolve through `lazy_exports`.
"""

from __future__ import annotations

import csv
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vtc.errors import VtcError

LETTER_POST = "\nAnswer with the option's letter from the given choices directly."

TASKS: dict[str, TaskSpec] = {}


def _no_problem(row: dict, data_file: Path) -> str | None:
    return None


def _nowhere(src: Path, row: dict) -> list[Path]:
    return []


def _no_kwargs(data_file: Path) -> dict:
    return {}


@dataclass(frozen=True)
class TaskSpec:
    """One benchmark's local format (see the module docstring)."""

    name: str
    lmms_eval: str  # the lmms-eval task whose prompt, scoring and metric the local copy mirrors
    metric: str  # the headline metric, as lmms-eval names it
    scale: float  # metric x scale = a percentage (lmms-eval reports some tasks as fractions)
    required: tuple[str, ...]  # columns every row must have
    category: str | None  # the column the per-sample ``category`` comes from (None: the benchmark has none)
    read: Callable[[Path], list[dict]]  # `vtc prepare`: the rows of a downloaded copy at src
    expected: str  # the downloaded layout `read` looks for, for the "nothing found" error
    target: str | None = "answer"  # doc_to_target: a column, or None for <name>_doc_to_target
    kwargs: dict = field(default_factory=dict)  # lmms_eval_specific_kwargs["default"] of lmms-eval's YAML
    max_new_tokens: int = 16
    check: Callable[[dict, Path], str | None] = _no_problem  # what is wrong with a row's answer, or None
    locate: Callable[[Path, dict], list[Path]] = _nowhere  # where a row's video should be under src
    per_duration: bool = False  # the per-sample metric carries a duration (short/medium/long)
    data_name: str = ""  # `vtc prepare` writes <data_name>.jsonl (default: the task's name)

    # more prompt kwargs for the local copy at a question file (Video-MME's subtitle folder beside it)
    local_kwargs: Callable[[Path], dict] = _no_kwargs
    # `vtc prepare`'s extra step (src, out, rows, manifest video id -> path): Video-MME's subtitles
    stage: Callable[[Path, Path, list, dict], None] | None = None

    def __post_init__(self):
        if not self.data_name:
            object.__setattr__(self, "data_name", self.name)

    @property
    def module(self) -> str:
        """The file under vtc/eval/tasks/ that defines the spec: the one its reader lives in."""
        return self.read.__module__.rsplit(".", 1)[-1]

    @property
    def functions(self):
        """The task file, whose <name>_doc_to_visual/_doc_to_text/... lmms-eval calls."""
        return importlib.import_module(f"vtc.eval.tasks.{self.module}")


def register_task(spec: TaskSpec) -> TaskSpec:
    """Register a benchmark's spec under its name."""
    if spec.name in TASKS and TASKS[spec.name].module != spec.module:
        raise ValueError(f"task {spec.name!r} is already registered by {TASKS[spec.name].module}")
    TASKS[spec.name] = spec
    return spec


def lazy_exports(source: str, names: dict[str, str]):
    """A module ``__getattr__`` (PEP 562) resolving ``names`` (our name -> lmms-eval's name in module
    ``source``) on first use, so importing a task file does not import lmms-eval."""

    def __getattr__(name: str):
        if name not in names:
            raise AttributeError(name)
        return getattr(importlib.import_module(source), names[name])

    return __getattr__


def letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


# --- reading downloaded layouts (vtc prepare) -----------------------------------------------------


def load_rows(path: Path) -> list[dict]:
    """Rows of a .parquet / .jsonl / .json (list, or dict of rows) / .csv file."""
    try:
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        if path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = json.loads(text)
    except (OSError, ValueError) as e:
        raise VtcError(
            f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        ) from None
    if isinstance(data, dict):
        return [dict(v, _key=k) if isinstance(v, dict) else {"_key": k, "_value": v} for k, v in data.items()]
    if not isinstance(data, list):
        raise VtcError(f"{path}: expected a list of questions")
    return data


def find_files(src: Path, patterns: list[str]) -> list[Path]:
    """Files under src matching the first pattern that matches anything."""
    if src.is_file():
        return [src]
    for pat in patterns:
        found = sorted(p for p in src.glob(pat) if p.is_file() and ".cache" not in p.parts)
        if found:
            return found
    return []


def rows_with(src: Path, patterns: list[str], column: str) -> list[dict]:
    """The rows of the files matching ``patterns`` whose rows have ``column``."""
    rows: list[dict] = []
    for f in find_files(src, patterns):
        part = load_rows(f)
        if part and isinstance(part[0], dict) and column in part[0]:
            rows += part
    return rows
