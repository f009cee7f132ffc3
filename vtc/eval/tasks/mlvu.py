"""MLVU (dev, multiple choice) on a local copy, as lmms-eval's ``mlvu_dev`` (``sy1998/MLVU_dev``).

Prompt (``mlvu_doc_to_text``: the ``question`` text, which carries the lettered options, then
"\\nOnly give the best option.\\nBest option: (") and per-sample scoring (``mlvu_process_results``:
lmms-eval's ``extract_mcq_answer`` over A-D against the ``answer`` letter) are lmms-eval's.

Aggregation differs on purpose: lmms-eval's ``mlvu_aggregate_results_dev`` averages accuracy over a
fixed list of 7 task types, counting a type with no questions as 0 % (and fails on a type outside
the list), so a local copy holding some of the types would be under-reported. Here the score is
the mean over the task types present of each type's accuracy (%) — the same number on the full dev
set, where all 7 are present. Per sample: ``score`` and ``category`` (= ``task_type``).
Store ids: the stem of ``video_name``.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from lmms_eval.tasks.mlvu.utils import mlvu_doc_to_text
from lmms_eval.tasks.mlvu.utils import mlvu_process_results as _lmms_process_results

__all__ = ["mlvu_doc_to_visual", "mlvu_doc_to_text", "mlvu_process_results", "mlvu_aggregate_results"]


def mlvu_doc_to_visual(doc):
    return [PurePosixPath(doc["video_name"]).stem]


def mlvu_process_results(doc, results):
    d = _lmms_process_results(doc, results)["mlvu_percetion_score"]
    d["score"] = float(d["pred_answer"] == d["answer"])
    d["category"] = doc["task_type"]
    return {"mlvu_percetion_score": d}


def mlvu_aggregate_results(results):
    by: dict[str, list[float]] = {}
    for r in results:
        by.setdefault(r["task_type"], []).append(r["score"])
    if not by:
        return 0.0
    return sum(100.0 * sum(v) / len(v) for v in by.values()) / len(by)
