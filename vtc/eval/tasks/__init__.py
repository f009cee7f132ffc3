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
is computed as lmms-eval computes it. ``LOCAL_TASKS`` lists every format: the lmms-eval task it
mirrors, the metric it reports, the required columns and the per-sample category field.

Every local task's per-sample metric value is a dict with ``score`` (1.0 right / 0.0 wrong) and
``category`` (the benchmark's breakdown: MVBench subtask, NExT-QA question type, ...; absent for
EgoSchema), so :func:`category_breakdown` gives accuracy per category for any of them.
"""

from __future__ import annotations

import json
from pathlib import Path

from vtc.errors import VtcError

LETTER_POST = "\nAnswer with the option's letter from the given choices directly."

# name -> how the local copy is run. Keys:
#   lmms_eval: the lmms-eval task whose definition (prompt, scoring, metric) the local copy mirrors
#   metric: the headline metric name, as lmms-eval reports it
#   scale: multiply the metric by this for a percentage (lmms-eval reports some tasks as fractions)
#   target: doc_to_target (a column, or None for the module's <name>_doc_to_target)
#   kwargs: lmms_eval_specific_kwargs["default"] from lmms-eval's YAML
#   category: the column the per-sample ``category`` comes from (None: the benchmark has none)
#   required: columns every row must have
#   module: vtc.eval.tasks.<module> holds <name>_doc_to_visual/_doc_to_text/_process_results/...
# lmms-eval/Video-MME's columns; the subtitle variant reads the same rows
_VIDEOMME_COLUMNS = [
    "videoID",
    "question_id",
    "duration",
    "domain",
    "sub_category",
    "task_type",
    "question",
    "options",
    "answer",
]

LOCAL_TASKS: dict[str, dict] = {
    "videomme": {
        "lmms_eval": "videomme",
        "metric": "videomme_perception_score",
        "scale": 1,
        "target": "answer",
        "kwargs": {"pre_prompt": "", "post_prompt": LETTER_POST},
        "category": "domain",
        "required": _VIDEOMME_COLUMNS,
        "module": "videomme",
    },
    "videomme_w_subtitle": {
        "lmms_eval": "videomme_w_subtitle",
        "metric": "videomme_perception_score",
        "scale": 1,
        "target": "answer",
        # lmms-eval's w_subtitle prompt ends with "The best answer is:" and ignores post_prompt.
        "kwargs": {"frame_num": 32, "pre_prompt": "", "post_prompt": ""},
        "category": "domain",
        "required": _VIDEOMME_COLUMNS,
        "module": "videomme",
    },
    "mvbench": {
        "lmms_eval": "mvbench (group of 20 mvbench_<sub_task>)",
        "metric": "mvbench_accuracy",
        "scale": 1,
        "target": "answer",
        "kwargs": {"post_prompt": "Only give the best option.\n"},
        "category": "sub_task",
        "required": ["video", "question", "candidates", "answer", "sub_task"],
        "module": "mvbench",
    },
    "nextqa": {
        "lmms_eval": "nextqa_mc_test",
        "metric": "exact_match",
        "scale": 100,
        "target": None,
        "kwargs": {},
        "category": "type",
        "required": ["video", "question", "a0", "a1", "a2", "a3", "a4", "answer", "type"],
        "module": "nextqa",
    },
    "longvideobench": {
        "lmms_eval": "longvideobench_val_v",
        "metric": "lvb_acc",
        "scale": 100,
        "target": "correct_choice",
        "max_new_tokens": 32,
        "kwargs": {
            "pre_prompt": "",
            "post_prompt": "Answer with the option's letter from the given choices directly.\n",
        },
        "category": "question_category",
        "required": [
            "id",
            "video_path",
            "question",
            "option0",
            "option1",
            "option2",
            "option3",
            "option4",
            "correct_choice",
            "duration_group",
            "question_category",
        ],
        "module": "longvideobench",
    },
    "mlvu": {
        "lmms_eval": "mlvu_dev",
        "metric": "mlvu_percetion_score",  # sic: lmms-eval's spelling
        "scale": 1,
        "target": "answer",
        "kwargs": {"pre_prompt": "", "post_prompt": "\nOnly give the best option.\nBest option: ("},
        "category": "task_type",
        "required": ["video_name", "question", "answer", "task_type"],
        "module": "mlvu",
    },
    "perceptiontest": {
        "lmms_eval": "perceptiontest_val_mc",
        "metric": "accuracy",
        "scale": 100,
        "target": None,
        "kwargs": {"pre_prompt": "", "post_prompt": ""},
        "category": "area",
        "required": ["video_name", "question", "options", "answer_id", "area"],
        "module": "perceptiontest",
    },
    "egoschema": {
        "lmms_eval": "egoschema_subset",
        "metric": "score",
        "scale": 100,
        "target": None,
        "kwargs": {"pre_prompt": "", "post_prompt": LETTER_POST},
        "category": None,
        "required": ["video_idx", "question", "option", "answer"],
        "module": "egoschema",
    },
    "mcq": {
        "lmms_eval": "(none: vtc's generic multiple-choice format)",
        "metric": "mcq_accuracy",
        "scale": 1,
        "target": "answer",
        "kwargs": {"pre_prompt": "", "post_prompt": LETTER_POST},
        "category": "category",
        "required": ["video", "question", "options", "answer"],
        "module": "mcq",
    },
}

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


def task_spec(name: str) -> dict:
    if name not in LOCAL_TASKS:
        raise VtcError(f"no local format for task '{name}'; local tasks: {', '.join(LOCAL_TASKS)}")
    return LOCAL_TASKS[name]


def subtitle_dir(data_file: Path) -> Path:
    """Where a local Video-MME copy keeps its ``<videoID>.srt`` files: ``subtitles/`` beside the questions."""
    return data_file.parent / "subtitles"


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def _row_problem(name: str, row: dict, data_file: Path) -> str | None:
    """What is wrong with a row lmms-eval's scoring would mis-handle (None: nothing)."""
    if name in ("videomme", "videomme_w_subtitle"):
        if row["answer"] not in _letters(len(row["options"])):
            return f"answer {row['answer']!r} is not one of the {len(row['options'])} option letters"
        if name == "videomme_w_subtitle" and (subtitle_dir(data_file) / f"{row['videoID']}.srt").exists():
            if not row.get("fps") or not row.get("total_frames"):
                return (
                    "has a subtitle file but no fps/total_frames (needed to pick the subtitles of 32 frames)"
                )
    elif name == "mvbench":
        if row["answer"] not in row["candidates"]:
            return f"answer {row['answer']!r} is not one of its candidates"
    elif name == "nextqa":
        if not isinstance(row["answer"], int) or not 0 <= row["answer"] <= 4:
            return f"answer must be an option index 0-4, got {row['answer']!r}"
    elif name == "longvideobench":
        options = [row[f"option{i}"] for i in range(5)]
        n = options.index("N/A") if "N/A" in options else 5
        if not isinstance(row["correct_choice"], int) or not 0 <= row["correct_choice"] < n:
            return f"correct_choice must be an index into its {n} options, got {row['correct_choice']!r}"
    elif name == "mlvu":
        if row["answer"] not in _letters(6):
            return f"answer must be an option letter (the options are part of the question), got {row['answer']!r}"
    elif name == "perceptiontest":
        if not isinstance(row["answer_id"], int) or not 0 <= row["answer_id"] < len(row["options"]):
            return (
                f"answer_id must be an index into its {len(row['options'])} options, got {row['answer_id']!r}"
            )
    elif name == "egoschema":
        if len(row["option"]) != 5:
            return f"option must list 5 choices ('A. ...' to 'E. ...'), got {len(row['option'])}"
        if str(row["answer"]) not in [str(i) for i in range(5)]:
            return f"answer must be the option index 0-4, got {row['answer']!r}"
    elif name == "mcq":
        if not isinstance(row["options"], list) or not 2 <= len(row["options"]) <= 26:
            return "options must be a list of 2 to 26 choices"
        if row["answer"] not in _letters(len(row["options"])):
            return f"answer {row['answer']!r} is not one of the {len(row['options'])} option letters"
    return None


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
    required = task_spec(name)["required"]
    data_file = Path(data_file)
    n = 0
    for lineno, row in _read_rows(data_file):
        if not isinstance(row, dict):
            raise VtcError(f"{data_file}:{lineno}: not a JSON object ({name} format)")
        missing = [k for k in required if k not in row]
        if missing:
            raise VtcError(f"{data_file}:{lineno}: missing {', '.join(missing)} ({name} format)")
        problem = _row_problem(name, row, data_file)
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
    kwargs = dict(spec["kwargs"])
    if name == "videomme_w_subtitle":
        kwargs["subtitle_dir"] = str(subtitle_dir(data_file))
    task_name = f"vtc_{name}_local"
    (out / f"{task_name}.yaml").write_text(
        _YAML.format(
            name=name,
            lmms_eval=spec["lmms_eval"],
            task_name=task_name,
            data_file=json.dumps(str(data_file)),
            builder="json" if data_file.suffix == ".jsonl" else "parquet",
            target=json.dumps(spec["target"])
            if spec["target"]
            else f"!function vtc_task_utils.{name}_doc_to_target",
            max_new_tokens=spec.get("max_new_tokens", 16),
            metric=spec["metric"],
            # JSON strings are YAML strings, escapes included ("\n" stays a newline)
            kwargs="\n".join(f"    {k}: {json.dumps(v)}" for k, v in kwargs.items()) or "    {}",
        )
    )
    (out / "vtc_task_utils.py").write_text(
        f"from vtc.eval.tasks.{spec['module']} import *  # noqa: F401,F403\n"
    )
    return task_name


def category_breakdown(name: str, samples: list[dict]) -> dict[str, float]:
    """Accuracy (%) per category from lmms-eval's per-sample log of a local task.

    ``samples`` is ``simple_evaluate(...)["samples"][task_name]``: each holds the task's metric as a
    dict with ``score`` and ``category`` (see the module docstring). Tasks without categories give {}.
    """
    metric = task_spec(name)["metric"]
    by: dict[str, list[float]] = {}
    for s in samples:
        d = s.get(metric)
        if isinstance(d, dict) and d.get("category") is not None and d.get("score") is not None:
            by.setdefault(str(d["category"]), []).append(float(d["score"]))
    return {k: 100.0 * sum(v) / len(v) for k, v in sorted(by.items())}
