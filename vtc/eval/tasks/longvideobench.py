"""LongVideoBench on a local copy, as lmms-eval's ``longvideobench_val_v`` (validation MCQ, frames only).

Prompt (``longvideobench_doc_to_text``: question, then ``A. option0`` ... up to the first "N/A"
option, then "Answer with the option's letter from the given choices directly.") and scoring
(``longvideobench_process_results`` / ``longvideobench_aggregate_results``: the first capital A-E in
the answer after stripping "The answer is"-style prefixes; a random letter when none) are
lmms-eval's. ``lvb_acc`` is a fraction in [0, 1] (lmms-eval's overall accuracy). The per-sample dict
gains ``score`` and ``category`` (= ``question_category``; ``duration_group`` is there too), and
lmms-eval's extra ``submission`` entry is dropped (it is not a metric of the val task).
Store ids: the stem of ``video_path`` (``<video_id>.mp4``).
"""

# ruff: noqa: F822  (lmms-eval functions in __all__ resolve through the module __getattr__ below)
from __future__ import annotations

import importlib
from pathlib import Path, PurePosixPath

from vtc.eval.tasks.base import TaskSpec, lazy_exports, register_task, rows_with

_LMMS = "lmms_eval.tasks.longvideobench.utils"

__all__ = [
    "longvideobench_doc_to_visual",
    "longvideobench_doc_to_text",
    "longvideobench_process_results",
    "longvideobench_aggregate_results",
]

__getattr__ = lazy_exports(
    _LMMS, {n: n for n in ("longvideobench_aggregate_results", "longvideobench_doc_to_text")}
)


def longvideobench_doc_to_visual(doc):
    return [PurePosixPath(doc["video_path"]).stem]


def longvideobench_process_results(doc, results):
    acc = importlib.import_module(_LMMS).longvideobench_process_results(doc, results)["lvb_acc"]
    acc["score"] = float(acc["parsed_pred"] == acc["answer"])
    acc["category"] = doc["question_category"]
    return {"lvb_acc": acc}


def _read(src: Path) -> list[dict]:
    rows = rows_with(src, ["lvb_val.json", "**/lvb_val.json", "**/validation-*.parquet"], "correct_choice")
    for r in rows:
        r["correct_choice"] = int(r["correct_choice"])
    return rows


def _check(row: dict, data_file: Path) -> str | None:
    options = [row[f"option{i}"] for i in range(5)]
    n = options.index("N/A") if "N/A" in options else 5
    if not isinstance(row["correct_choice"], int) or not 0 <= row["correct_choice"] < n:
        return f"correct_choice must be an index into its {n} options, got {row['correct_choice']!r}"
    return None


SPEC = register_task(
    TaskSpec(
        name="longvideobench",
        lmms_eval="longvideobench_val_v",
        metric="lvb_acc",
        scale=100,
        target="correct_choice",
        max_new_tokens=32,
        kwargs={
            "pre_prompt": "",
            "post_prompt": "Answer with the option's letter from the given choices directly.\n",
        },
        category="question_category",
        required=(
            "id",
            "video_path",
            "question",
            *(f"option{i}" for i in range(5)),
            "correct_choice",
            "duration_group",
            "question_category",
        ),
        read=_read,
        expected="lvb_val.json or validation-*.parquet; videos in videos/",
        check=_check,
        locate=lambda src, row: [src / "videos" / row["video_path"]],
    )
)
