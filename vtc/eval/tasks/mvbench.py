"""MVBench on a local copy: lmms-eval's ``mvbench`` prompt and scoring, one file for any subtasks.

lmms-eval runs MVBench as a group of 20 tasks (``mvbench_<sub_task>``), one per json of
``OpenGVLab/MVBench``, all with the same row format (``video``, ``question``, ``candidates``,
``answer`` = the right candidate's text) and the same utils. A local copy holds any subset in one
file with the subtask in a ``sub_task`` column, so accuracy per subtask is the per-sample
``category``. Prompt (``mvbench_doc_to_text``) and scoring (``mvbench_process_results``: the right
candidate's letter against ``mcq_acc``'s parse of the answer) are lmms-eval's own.

One difference: lmms-eval's ``mvbench`` group reports each subtask's accuracy and their mean over
subtasks; the local copy's ``mvbench_accuracy`` is lmms-eval's ``mvbench_aggregate_results`` over all
its questions (answered ones), which equals the group mean only when subtasks have equal sizes
(they do in MVBench: 200 questions each).

Store ids: ``<folder>/<video without extension>``, where ``folder`` is lmms-eval's ``DATA_LIST``
entry for the subtask (``clevrer/video_validation``, ``perception/videos``, ...): CLEVRER and
Perception Test both name files ``video_<n>.mp4``, so bare stems would collide. ``vtc prepare
mvbench`` writes a manifest with these ids; a store extracted by stems still resolves (the lookup
falls back to the stem).
"""

# ruff: noqa: F822  (lmms-eval functions in __all__ resolve through the module __getattr__ below)
from __future__ import annotations

import importlib
from pathlib import Path, PurePosixPath

from vtc.eval.tasks.base import TaskSpec, find_files, lazy_exports, load_rows, register_task

_LMMS = "lmms_eval.tasks.mvbench.utils"

__all__ = [
    "mvbench_video_id",
    "mvbench_doc_to_visual",
    "mvbench_doc_to_text",
    "mvbench_process_results",
    "mvbench_aggregate_results",
    "DATA_LIST",
]

__getattr__ = lazy_exports(
    _LMMS,
    {n: n for n in ("DATA_LIST", "mvbench_aggregate_results", "mvbench_doc_to_text")},
)


def _folder(sub_task: str) -> str:
    return importlib.import_module(_LMMS).DATA_LIST.get(sub_task, sub_task)


def mvbench_video_id(sub_task: str, video: str) -> str:
    folder = _folder(sub_task)
    return str(PurePosixPath(folder) / PurePosixPath(video).with_suffix(""))


def mvbench_doc_to_visual(doc):
    return [mvbench_video_id(doc["sub_task"], doc["video"])]


def mvbench_process_results(doc, results):  # lmms-eval's, plus the subtask
    out = importlib.import_module(_LMMS).mvbench_process_results(doc, results)
    out["mvbench_accuracy"]["category"] = doc["sub_task"]
    return out


def _read(src: Path) -> list[dict]:
    return [
        {**r, "sub_task": r.get("sub_task", f.stem)}
        for f in find_files(src, ["json/*.json", "**/json/*.json"])
        for r in load_rows(f)
    ]


def _locate(src: Path, row: dict) -> list[Path]:
    folder = _folder(row["sub_task"])
    return [src / "video" / folder / row["video"], src / "video" / "data0613" / folder / row["video"]]


def _check(row: dict, data_file: Path) -> str | None:
    if row["answer"] not in row["candidates"]:
        return f"answer {row['answer']!r} is not one of its candidates"
    return None


SPEC = register_task(
    TaskSpec(
        name="mvbench",
        lmms_eval="mvbench (group of 20 mvbench_<sub_task>)",
        metric="mvbench_accuracy",
        scale=1,
        kwargs={"post_prompt": "Only give the best option.\n"},
        category="sub_task",
        required=("video", "question", "candidates", "answer", "sub_task"),
        read=_read,
        expected="json/<sub_task>.json files; videos in video/<folder>/",
        check=_check,
        locate=_locate,
    )
)
