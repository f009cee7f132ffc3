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

from __future__ import annotations

from pathlib import PurePosixPath

from lmms_eval.tasks.mvbench.utils import (
    DATA_LIST,
    mvbench_aggregate_results,
    mvbench_doc_to_text,
    mvbench_process_results,
)

__all__ = [
    "mvbench_video_id",
    "mvbench_doc_to_visual",
    "mvbench_doc_to_text",
    "mvbench_process_results",
    "mvbench_aggregate_results",
    "DATA_LIST",
]

_lmms_process_results = mvbench_process_results


def mvbench_video_id(sub_task: str, video: str) -> str:
    folder = DATA_LIST.get(sub_task, sub_task)
    return str(PurePosixPath(folder) / PurePosixPath(video).with_suffix(""))


def mvbench_doc_to_visual(doc):
    return [mvbench_video_id(doc["sub_task"], doc["video"])]


def mvbench_process_results(doc, results):  # noqa: F811 - lmms-eval's, plus the subtask
    out = _lmms_process_results(doc, results)
    out["mvbench_accuracy"]["category"] = doc["sub_task"]
    return out
