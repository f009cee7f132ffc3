"""Tasks vtc runs through lmms-eval, from lmms-eval's registry or from a local copy of the data.

A **local task** is a directory holding the questions in the benchmark's own row format, as one
``*.jsonl`` (one JSON object per line) or ``*.parquet`` file. For ``videomme`` each row has the
columns of ``lmms-eval/Video-MME``::

    {"videoID": "fFjv93ACGo8", "question_id": "001-1", "duration": "short", "domain": "Knowledge",
     "sub_category": "Humanity & History", "task_type": "Counting Problem",
     "question": "How many ...?", "options": ["A. 1", "B. 2", "C. 3", "D. 4"], "answer": "C"}

The videos are not read: ``videoID`` is looked up in the token store (extract the videos with
their ids, e.g. files named ``<videoID>.mp4``). vtc writes an lmms-eval task YAML for the copy
(dataset from the local file, prompts and scoring from lmms-eval's own ``videomme`` utils) and runs
it, so accuracy is computed exactly as lmms-eval computes it.
"""

from __future__ import annotations

import json
from pathlib import Path

from vtc.errors import VtcError

LOCAL_TASKS = {
    "videomme": {
        "post_prompt": "\\nAnswer with the option's letter from the given choices directly.",
        "metric": "videomme_perception_score",
        "required": [
            "videoID",
            "question_id",
            "duration",
            "domain",
            "sub_category",
            "task_type",
            "question",
            "options",
            "answer",
        ],
    },
}

_YAML = """\
# Written by `vtc eval` for a local copy of {name}; run with lmms-eval's --include_path.
task: {task_name}
dataset_path: {builder}
dataset_kwargs:
  data_files:
    test: {data_file}
test_split: test
output_type: generate_until
doc_to_visual: !function vtc_task_utils.{name}_doc_to_visual
doc_to_text: !function vtc_task_utils.{name}_doc_to_text
doc_to_target: "answer"
generation_kwargs:
  max_new_tokens: 16
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
    pre_prompt: ""
    post_prompt: "{post_prompt}"
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


def check_rows(name: str, data_file: Path) -> int:
    """Fail early (and in one line) on a question file that lmms-eval would choke on later."""
    if data_file.suffix != ".jsonl":
        return -1
    required = LOCAL_TASKS[name]["required"]
    n = 0
    with open(data_file, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise VtcError(f"{data_file}:{lineno}: not JSON ({e.msg})") from None
            missing = [k for k in required if k not in row]
            if missing:
                raise VtcError(f"{data_file}:{lineno}: missing {', '.join(missing)} ({name} format)")
            n += 1
    if n == 0:
        raise VtcError(f"{data_file} has no questions")
    return n


def write_local_task(name: str, data_dir: str | Path, out_dir: str | Path) -> str:
    """Write an lmms-eval task for a local copy of ``name``; returns the task name to run."""
    if name not in LOCAL_TASKS:
        raise VtcError(f"no local format for task '{name}'; local tasks: {', '.join(LOCAL_TASKS)}")
    data_file = find_data_file(data_dir).resolve()
    check_rows(name, data_file)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = LOCAL_TASKS[name]
    task_name = f"vtc_{name}_local"
    (out / f"{task_name}.yaml").write_text(
        _YAML.format(
            name=name,
            task_name=task_name,
            data_file=data_file,
            builder="json" if data_file.suffix == ".jsonl" else "parquet",
            metric=spec["metric"],
            post_prompt=spec["post_prompt"],
        )
    )
    (out / "vtc_task_utils.py").write_text(f"from vtc.eval.tasks.{name} import *  # noqa: F401,F403\n")
    return task_name
