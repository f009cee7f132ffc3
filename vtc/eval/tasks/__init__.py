"""Tasks vtc runs through lmms-eval, from lmms-eval's registry or from a local copy of the data.

A **local task** is a directory holding the questions in the benchmark's own row format, as one
``*.jsonl`` (one JSON object per line) or ``*.parquet`` file — the columns lmms-eval's task for that
benchmark reads. For ``videomme`` each row has the columns of ``lmms-eval/Video-MME``::

    {"videoID": "fFjv93ACGo8", "question_id": "001-1", "duration": "short", "domain": "Knowledge",
     "sub_category": "Humanity & History", "task_type": "Counting Problem",
     "question": "How many ...?", "options": ["A. 1", "B. 2", "C. 3", "D. 4"], "answer": "C"}

The videos are not read: each row's video is looked up in the token store by id (``vtc prepare``
writes a ``videos.csv`` manifest that gives every video file the id its rows use). vtc writes an
lmms-eval task YAML for the copy (dataset from the local file, prompts and scoring from lmms-eval's
own utils for that benchmark wherever they import without decoding video) and runs it, so the metric
is computed as lmms-eval computes it. ``LOCAL_TASKS`` maps every format to its `TaskSpec` (one file
per benchmark in this folder: the lmms-eval task it mirrors, the metric it reports, the required
columns, the per-sample category field, the downloaded layout ``vtc prepare`` reads); a new benchmark
is one more file, imported below.

Every local task's per-sample metric value is a dict with ``score`` (1.0 right / 0.0 wrong) and
``category`` (the benchmark's breakdown: MVBench subtask, NExT-QA question type, ...; absent for
EgoSchema), so :func:`category_breakdown` gives accuracy per category for any of them.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from vtc.errors import VtcError
from vtc.eval.tasks.base import LETTER_POST, TASKS, TaskSpec
from vtc.eval.tasks.videomme import subtitle_dir

# Each file registers its benchmark's spec when imported; this order is the order tasks are listed in.
for _module in (
    "videomme",
    "mvbench",
    "nextqa",
    "longvideobench",
    "mlvu",
    "perceptiontest",
    "egoschema",
    "mcq",
):
    importlib.import_module(f"vtc.eval.tasks.{_module}")

LOCAL_TASKS = TASKS  # name -> TaskSpec, every local format

__all__ = [
    "LETTER_POST",
    "LOCAL_TASKS",
    "TaskSpec",
    "category_breakdown",
    "check_rows",
    "find_data_file",
    "subtitle_dir",
    "task_spec",
    "videomme_row",
    "write_jsonl",
    "write_local_task",
]

_YAML = """\
# Written by `vtc eval` for a local copy of {name} (mirrors lmms-eval's {lmms_eval});
# run with lmms-eval's --include_path.
task: {task_name}
dataset_path: {builder}
dataset_kwargs:
  data_files:
    test: {data_file}
test_split: test
output_type: generate_until
doc_to_visual: !function vtc_task_utils.{name}_doc_to_visual
doc_to_text: !function vtc_task_utils.{name}_doc_to_text
doc_to_target: {target}
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  temperature: 0
  top_p: 1.0
  num_beams: 1
  do_sample: false
process_results: !function vtc_task_utils.{name}_process_results
metric_list:
  - metric: {metric}
    aggregation: !function vtc_task_utils.{name}_aggregate_results
    higher_is_better: true
lmms_eval_specific_kwargs:
  default:
{kwargs}
metadata:
  - version: 0.0
"""


def videomme_row(
    video_id: str, question_id: str, duration: str, question: str, options: list[str], answer: str, **extra
) -> dict:
    """One question in lmms-eval/Video-MME's row format (category columns default to one valid value)."""
    return {
        "videoID": video_id,
        "question_id": question_id,
        "duration": duration,
        "domain": "Knowledge",
        "sub_category": "Humanity & History",
        "task_type": "Counting Problem",
        "url": "",
        "question": question,
        "options": options,
        "answer": answer,
        **extra,
    }


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def find_data_file(data_dir: str | Path) -> Path:
    d = Path(data_dir)
    if d.is_file():
        return d
    if not d.is_dir():
        raise VtcError(f"task data {d} does not exist")
    files = sorted(d.glob("*.jsonl")) + sorted(d.glob("*.parquet"))
    if len(files) != 1:
        raise VtcError(f"{d} must hold exactly one *.jsonl or *.parquet question file, found {len(files)}")
    return files[0]


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise VtcError(f"no local format for task '{name}'; local tasks: {', '.join(TASKS)}")
    return TASKS[name]


def _read_rows(data_file: Path):
    """(line/row number, row) pairs of a question file."""
    if data_file.suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from enumerate(pq.read_table(data_file).to_pylist(), 1)
        return
    with open(data_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as e:
                raise VtcError(f"{data_file}:{lineno}: not JSON ({e.msg})") from None


def check_rows(name: str, data_file: Path) -> int:
    """Fail early, in one ``file:line`` line, on a question file that lmms-eval would choke on later.

    Checks each row for the task's required columns and a usable answer; returns the number of rows.
    """
    spec = task_spec(name)
    data_file = Path(data_file)
    n = 0
    for lineno, row in _read_rows(data_file):
        if not isinstance(row, dict):
            raise VtcError(f"{data_file}:{lineno}: not a JSON object ({name} format)")
        missing = [k for k in spec.required if k not in row]
        if missing:
            raise VtcError(f"{data_file}:{lineno}: missing {', '.join(missing)} ({name} format)")
        problem = spec.check(row, data_file)
        if problem:
            raise VtcError(f"{data_file}:{lineno}: {problem} ({name} format)")
        n += 1
    if n == 0:
        raise VtcError(f"{data_file} has no questions")
    return n


def write_local_task(name: str, data_dir: str | Path, out_dir: str | Path) -> str:
    """Write an lmms-eval task for a local copy of ``name``; returns the task name to run."""
    spec = task_spec(name)
    data_file = find_data_file(data_dir).resolve()
    check_rows(name, data_file)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {**spec.kwargs, **spec.local_kwargs(data_file)}
    task_name = f"vtc_{name}_local"
    (out / f"{task_name}.yaml").write_text(
        _YAML.format(
            name=name,
            lmms_eval=spec.lmms_eval,
            task_name=task_name,
            data_file=json.dumps(str(data_file)),
            builder="json" if data_file.suffix == ".jsonl" else "parquet",
            target=json.dumps(spec.target)
            if spec.target
            else f"!function vtc_task_utils.{name}_doc_to_target",
            max_new_tokens=spec.max_new_tokens,
            metric=spec.metric,
            # JSON strings are YAML strings, escapes included ("\n" stays a newline)
            kwargs="\n".join(f"    {k}: {json.dumps(v)}" for k, v in kwargs.items()) or "    {}",
        )
    )
    (out / "vtc_task_utils.py").write_text(f"from vtc.eval.tasks.{spec.module} import *  # noqa: F401,F403\n")
    return task_name


def category_breakdown(name: str, samples: list[dict]) -> dict[str, float]:
    """Accuracy (%) per category from lmms-eval's per-sample log of a local task.

    ``samples`` is ``simple_evaluate(...)["samples"][task_name]``: each holds the task's metric as a
    dict with ``score`` and ``category`` (see the module docstring). Tasks without categories give {}.
    """
    metric = task_spec(name).metric
    by: dict[str, list[float]] = {}
    for s in samples:
        d = s.get(metric)
        if isinstance(d, dict) and d.get("category") is not None and d.get("score") is not None:
            by.setdefault(str(d["category"]), []).append(float(d["score"]))
    return {k: 100.0 * sum(v) / len(v) for k, v in sorted(by.items())}
