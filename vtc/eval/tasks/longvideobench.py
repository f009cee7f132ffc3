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

from __future__ import annotations

from pathlib import PurePosixPath

from lmms_eval.tasks.longvideobench.utils import (
    longvideobench_aggregate_results,
    longvideobench_doc_to_text,
)
from lmms_eval.tasks.longvideobench.utils import longvideobench_process_results as _lmms_process_results

__all__ = [
    "longvideobench_doc_to_visual",
    "longvideobench_doc_to_text",
    "longvideobench_process_results",
    "longvideobench_aggregate_results",
]


def longvideobench_doc_to_visual(doc):
    return [PurePosixPath(doc["video_path"]).stem]


def longvideobench_process_results(doc, results):
    acc = _lmms_process_results(doc, results)["lvb_acc"]
    acc["score"] = float(acc["parsed_pred"] == acc["answer"])
    acc["category"] = doc["question_category"]
    return {"lvb_acc": acc}
