"""Perception Test (multiple choice, validation) on a local copy, as lmms-eval's ``perceptiontest_val_mc``.

The validation split (``lmms-eval/PerceptionTest_Val``, config ``mc_question_val``) is the one with
answers; lmms-eval's test split only writes a submission file. Prompt
(``perceptiontest_val_doc_to_text``: question, ``A./B./C.`` options, "Answer with the option's
letter from the given choices directly.") and scoring (``perceptiontest_val_process_results_mc``:
the first standalone A-D in the answer against ``answer_id``; ``perceptiontest_val_aggregate_accuracy``:
a fraction in [0, 1]) are lmms-eval's. Per sample, ``score`` and ``category`` (= ``area``: memory,
abstraction, physics, semantics) are added. Store ids: ``video_name`` (``video_<n>``).
"""

# ruff: noqa: F822  (lmms-eval functions in __all__ resolve through the module __getattr__ below)
from __future__ import annotations

import importlib
from pathlib import Path

from vtc.eval.tasks.base import TaskSpec, find_files, lazy_exports, load_rows, register_task, rows_with

_LMMS = "lmms_eval.tasks.perceptiontest.val.utils"

__all__ = [
    "perceptiontest_doc_to_visual",
    "perceptiontest_doc_to_text",
    "perceptiontest_doc_to_target",
    "perceptiontest_process_results",
    "perceptiontest_aggregate_results",
]

__getattr__ = lazy_exports(
    _LMMS,
    {
        "perceptiontest_doc_to_text": "perceptiontest_val_doc_to_text",
        "perceptiontest_doc_to_target": "perceptiontest_val_doc_to_answer",
        "perceptiontest_aggregate_results": "perceptiontest_val_aggregate_accuracy",
    },
)


def perceptiontest_doc_to_visual(doc):
    return [str(doc["video_name"])]


def perceptiontest_process_results(doc, results):
    d = importlib.import_module(_LMMS).perceptiontest_val_process_results_mc(doc, results)["accuracy"]
    d["score"] = float(d["correct"])
    d["category"] = doc["area"]
    return {"accuracy": d}


def _read(src: Path) -> list[dict]:
    rows = rows_with(
        src, ["mc_question_val/*.parquet", "**/mc_question_val/*.parquet", "**/*.parquet"], "answer_id"
    )
    if rows:
        for r in rows:
            r["answer_id"] = int(r["answer_id"])
        return rows
    # Perception Test's all_valid.json: {video_id: {"mc_question": [{id, question, options, answer_id, area, ...}]}}
    return [
        {
            "video_name": vid.get("metadata", {}).get("video_id", vid["_key"]),
            "question_id": q.get("id"),
            "question": q["question"],
            "options": list(q["options"]),
            "answer_id": int(q["answer_id"]),
            "area": q.get("area", ""),
            "reasoning": q.get("reasoning", ""),
            "tag": q.get("tag", []),
        }
        for f in find_files(src, ["all_valid.json", "**/all_valid.json"])
        for vid in load_rows(f)
        for q in vid.get("mc_question", [])
    ]


def _check(row: dict, data_file: Path) -> str | None:
    if not isinstance(row["answer_id"], int) or not 0 <= row["answer_id"] < len(row["options"]):
        return f"answer_id must be an index into its {len(row['options'])} options, got {row['answer_id']!r}"
    return None


SPEC = register_task(
    TaskSpec(
        name="perceptiontest",
        lmms_eval="perceptiontest_val_mc",
        metric="accuracy",
        scale=100,
        target=None,
        kwargs={"pre_prompt": "", "post_prompt": ""},
        category="area",
        required=("video_name", "question", "options", "answer_id", "area"),
        read=_read,
        expected="mc_question_val/*.parquet or all_valid.json; videos in videos/",
        check=_check,
    )
)
